"""Memory and time scaling of `curator score` on one machine.

Each size runs in its own process (so peak RSS is that run's alone): Fashion-MNIST subsets of 10k, 30k
and 60k images with every built-in scorer, and a synthetic 1M-row vector table (Gaussian class blobs,
10 classes, 32 features, 10% of labels flipped), also with every built-in scorer. Writes a Markdown table to --results.

    .venv/bin/python benchmarks/scaling.py [--sizes 10000,30000,60000] [--vectors 1000000]
                                           [--results benchmarks/results/scaling.md]
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


def make_images(n: int, path: Path) -> None:
    from realdata import FASHION_CLASSES, load_fashion_mnist

    x, y = load_fashion_mnist("train")
    keep = np.random.default_rng(0).permutation(len(y))[:n]
    np.savez(path, X=x[keep], y=y[keep], classes=np.array(FASHION_CLASSES))


def make_vectors(n: int, path: Path) -> None:
    """Gaussian class blobs that overlap (a linear model reaches 87% accuracy), 10% of labels flipped."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.0, (10, 32)).astype(np.float32)
    y = rng.integers(0, 10, n)
    x = centers[y] + rng.normal(0, 2.0, (n, 32)).astype(np.float32)
    flip = rng.random(n) < 0.1
    y[flip] = (y[flip] + rng.integers(1, 10, int(flip.sum()))) % 10
    np.savez(path, X=x, y=y)


def child(data: str, out: str, scorers: str, epochs: str) -> None:
    """Run one score in this process and print its peak RSS and timings as JSON."""
    import curator

    t0 = time.perf_counter()
    kwargs = {"epochs": int(epochs)} if epochs != "default" else {}
    run = curator.score(data, out=out, scorers=scorers, progress=False, **kwargs)
    print(json.dumps({"seconds": time.perf_counter() - t0,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "stages": {k: v["seconds"] for k, v in run.manifest["stages"].items()},
                      "scorers": {k: v.get("seconds") for k, v in run.manifest["scorers"].items()},
                      "oof_accuracy": run.manifest["proxy"]["oof_accuracy"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,30000,60000")
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("runs/scaling"))
    parser.add_argument("--results", type=Path, default=HERE / "results" / "scaling.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    jobs = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        data = args.work / f"fashion-{n}.npz"
        make_images(n, data)
        jobs.append((f"Fashion-MNIST {n:,}", data, "all", "default"))
    if args.vectors:
        data = args.work / f"vectors-{args.vectors}.npz"
        make_vectors(args.vectors, data)
        jobs.append((f"synthetic vectors {args.vectors:,} x 32", data, "all", "default"))
    rows = ["| dataset | scorers | wall s | train s | score s | peak RSS MB | RSS per example (KB) | OOF acc |",
            "|---|---|---|---|---|---|---|---|"]
    for title, data, scorers, epochs in jobs:
        out = args.work / f"run-{data.stem}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        proc = subprocess.run([sys.executable, __file__, "--child", str(data), str(out), scorers, epochs],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        n = int(np.load(data, mmap_mode="r")["y"].shape[0])
        rows.append(f"| {title} | {scorers} | {r['seconds']:.0f} | {r['stages']['train']:.0f} | "
                    f"{r['stages']['score']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] * 1024 / n:.1f} | "
                    f"{r['oof_accuracy']:.3f} |")
        print(rows[-1], flush=True)
    report = ("## Scaling on one machine\n\nCommand: `.venv/bin/python benchmarks/scaling.py --sizes "
              f"{args.sizes} --vectors {args.vectors}`\n\n" + "\n".join(rows) + "\n")
    publish(args.results, report)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
