"""Everything the GPU path needs measured, in one call (GPU time is short and comes rarely).

Three jobs, each `curator score` with every built-in scorer on ``--device`` (auto: the GPU when there is
one), each in its own process so that its peak memory is its own:

- ``fashion``: Fashion-MNIST's 60,000 training images (Debian's dataset-fashion-mnist), 20% of labels
  flipped: the issue's "60k job", target under 30 s on a GPU;
- ``million``: 1,000,000 synthetic vectors, 64 features, 1,000 classes, 10% flipped
  (``benchmarks/scaling.py``'s generator);
- ``photos``: 3,000 colour JPEGs from ``benchmarks/photos.py`` (objects on photographs, 96/128 px) with
  the frozen EfficientNet-Lite0 backbone: the feature pass and the whole job.

Per job: wall time, every stage and every scorer, the device's name, peak GPU memory (torch's
allocator), peak RSS, and mislabel precision / recall / F1 against the injected flips. Writes
``benchmarks/results/gpu.md`` (``--results``). On a CPU-only machine ``--quick`` runs the same path on
small sizes, to check the script before spending GPU time.

    .venv/bin/python benchmarks/gpu.py [--jobs fashion,million,photos] [--device auto] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from publish import publish  # noqa: E402

JOBS = ("fashion", "million", "photos")


def build(job: str, work: Path, quick: bool) -> tuple[Path, np.ndarray, dict]:
    """The dataset of ``job`` under ``work``, the injected flips in curator's row order (by id), and
    extra score options."""
    from realdata import FASHION_CLASSES, load_fashion_mnist, symmetric_noise
    from scaling import make_vectors

    work.mkdir(parents=True, exist_ok=True)
    if job == "fashion":
        x, y = load_fashion_mnist("train")
        n = 6000 if quick else len(y)
        x, y = x[:n], y[:n]
        noisy = symmetric_noise(y, 0.2, 10, np.random.default_rng(0))
        data = work / f"fashion-{n}.npz"
        np.savez(data, X=x, y=noisy, classes=np.array(FASHION_CLASSES), ids=np.array([f"{i:06d}" for i in range(n)]))
        return data, noisy != y, {}
    if job == "million":
        n = 20000 if quick else 1_000_000
        data = work / f"vectors-{n}x1000.npz"
        make_vectors(n, data, classes=1000, dims=64, spread=1.5)
        with np.load(data) as saved:
            return data, saved["flipped"], {}
    if job == "photos":
        import photos

        n = 300 if quick else 3000
        rng = np.random.default_rng(0)
        images, labels, classes = photos.make_task("objects", n, rng)
        given = symmetric_noise(labels, 0.15, len(classes), np.random.default_rng(1))
        root = work / f"objects-{n}"
        if not root.exists():
            photos.write_jpeg_folder(root, images, given, classes)
        return root, given != labels, {"backbone": "efficientnet_lite0"}
    raise SystemExit(f"--jobs: unknown job {job!r} (one of {', '.join(JOBS)})")


def child(job: str, work: str, device: str, quick: str) -> None:
    """Build and score one job in this process; print its figures as JSON."""
    import torch

    import curator

    data, flipped, options = build(job, Path(work), quick == "1")
    out = Path(work) / f"run-{job}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    t0 = time.perf_counter()
    run = curator.score(data, out=out, device=device, progress=False, **options)
    seconds = time.perf_counter() - t0
    m = run.manifest
    truth = flipped
    if job == "photos":   # an image folder: rows sorted by class then path; the flips are by file order
        order = np.array([int(Path(p).stem) for p in run.scores["path"]])
        truth = flipped[order]
    elif "id" in run.scores:
        truth = flipped[run.scores["id"].str.lstrip("r").astype(int).to_numpy()]
    flagged = run.scores["is_mislabeled"].to_numpy(bool)
    hits = int((truth & flagged).sum())
    p, r = hits / max(int(flagged.sum()), 1), hits / max(int(truth.sum()), 1)
    cuda = torch.cuda.is_available()
    print(json.dumps({
        "job": job, "n": len(run.scores), "seconds": seconds, "device": m["device"],
        "stages": {k: v["seconds"] for k, v in m["stages"].items()},
        "scorers": {k: v.get("seconds") for k, v in m["scorers"].items()},
        "features": m.get("features", {}),
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "oof_accuracy": m["proxy"]["oof_accuracy"], "p": p, "r": r, "f1": 2 * p * r / max(p + r, 1e-12)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="small sizes: check the script on a CPU")
    parser.add_argument("--work", type=Path, default=Path("runs/gpu"))
    parser.add_argument("--results", type=Path, default=HERE / "results" / "gpu.md")
    args = parser.parse_args()
    rows = ["| job | N | device | wall s | load s | train s | score s | flag s | scorers (s) | feature pass | "
            "GPU peak MB | peak RSS MB | OOF acc | mislabel P / R / F1 |",
            "|---|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|"]
    for job in args.jobs.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", job, str(args.work), args.device,
                               "1" if args.quick else "0"], capture_output=True, text=True)
        if proc.returncode:
            rows.append(f"| {job} | failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode} |")
            print(rows[-1], flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        st, dev, feat = r["stages"], r["device"], r["features"]
        scorers = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["scorers"].items()) if v is not None)
        feature = (f"{feat.get('seconds', 0):.1f} s ({feat.get('cache', '-')})" if feat.get("backbone") not in (None, "cnn", "mlp")
                   else "-")
        gpu = f"{r['gpu_peak_mb']:.0f}" if r["gpu_peak_mb"] is not None else "-"
        rows.append(f"| {job} | {r['n']:,} | {dev.get('type')} ({dev.get('name')}) | {r['seconds']:.1f} | "
                    f"{st.get('load', 0):.1f} | {st.get('train', 0):.1f} | {st.get('score', 0):.1f} | "
                    f"{st.get('flag', 0):.1f} | {scorers} | {feature} | {gpu} | {r['peak_rss_mb']:.0f} | "
                    f"{r['oof_accuracy']:.3f} | {r['p']:.3f} / {r['r']:.3f} / {r['f1']:.3f} |")
        print(rows[-1], flush=True)
    report = (f"## GPU path\n\nCommand: `.venv/bin/python benchmarks/gpu.py --jobs {args.jobs} --device {args.device}"
              f"{' --quick' if args.quick else ''}`\n\n" + "\n".join(rows) + "\n")
    publish(args.results, report)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
