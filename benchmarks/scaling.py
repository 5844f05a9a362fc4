"""Memory and time scaling of `curator score` on one machine.

Each size runs in its own process: Fashion-MNIST subsets of 10k, 30k and 60k images, a synthetic
1M-row vector table (Gaussian class blobs, 10 classes, 32 features, 10% of labels flipped), and with
--many-classes 1,000-class sets of 64-feature blobs (spread 1.5: a nearest-centre rule gets 95% right),
every built-in scorer each. Memory is the peak of the summed PSS of the run's processes (the local
backend's workers included; shared memory-mapped pages count once), and apart from it the peak of their
summed anonymous PSS: the memory nothing can reclaim (pages of the memory-mapped artifacts that were read
are page cache, which the kernel drops under pressure, so they count in PSS but cannot exhaust memory).
Writes a Markdown table to --results.

    .venv/bin/python benchmarks/scaling.py [--sizes 10000,30000,60000] [--vectors 1000000]
                                           [--many-classes 200000,1000000] [--results benchmarks/results/scaling.md]
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


def make_vectors(n: int, path: Path, classes: int = 10, dims: int = 32, spread: float = 2.0) -> None:
    """Gaussian class blobs that overlap (with 10 classes x 32 features a linear model reaches 87%
    accuracy), 10% of labels flipped to another class; the flips are saved as ``flipped``."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.0, (classes, dims)).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = np.empty((n, dims), np.float32)
    for start in range(0, n, 100_000):       # in chunks: a million rows of noise at once is 2 GB of float64
        stop = min(n, start + 100_000)
        x[start:stop] = centers[y[start:stop]] + rng.normal(0, spread, (stop - start, dims)).astype(np.float32)
    flip = rng.random(n) < 0.1
    y[flip] = (y[flip] + rng.integers(1, classes, int(flip.sum()))) % classes
    np.savez(path, X=x, y=y, ids=np.array([f"r{i}" for i in range(n)]), flipped=flip)


class TreeMemory:
    """Samples the proportional set size (PSS) of this process and all its descendants (the local
    backend's workers) every ``every`` seconds and keeps the peak of their sum: memory-mapped pages
    shared by several processes count once, as they take memory once."""

    def __init__(self, every: float = 0.25):
        import threading

        self.peak_mb, self.peak_anon_mb, self.every = 0.0, 0.0, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        pids, todo = [], [pid]
        while todo:
            p = todo.pop()
            pids.append(p)
            try:
                children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            except OSError:
                continue
            todo += [int(c) for c in children]
        return pids

    @staticmethod
    def _pss_kb(pid: int) -> tuple[int, int]:
        """(PSS, anonymous PSS) of ``pid`` in kB."""
        pss = anon = 0
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Pss_Anon:"):
                    anon = int(line.split()[1])
        except OSError:
            pass
        return pss, anon

    def _run(self) -> None:
        import os

        while not self._stop.is_set():
            sizes = [self._pss_kb(p) for p in self._tree(os.getpid())]
            self.peak_mb = max(self.peak_mb, sum(size[0] for size in sizes) / 1024)
            self.peak_anon_mb = max(self.peak_anon_mb, sum(size[1] for size in sizes) / 1024)
            self._stop.wait(self.every)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def child(data: str, out: str, scorers: str, epochs: str) -> None:
    """Run one score in this process and print its peak memory and timings as JSON."""
    import curator

    memory = TreeMemory()
    t0 = time.perf_counter()
    kwargs = {"epochs": int(epochs)} if epochs != "default" else {}
    run = curator.score(data, out=out, scorers=scorers, progress=False, **kwargs)
    seconds = time.perf_counter() - t0
    arrays = np.load(data, mmap_mode="r")
    f1 = None
    if "flipped" in arrays.files:
        truth = np.asarray(arrays["flipped"])
        flagged = run.scores["is_mislabeled"].to_numpy()
        hits = int((truth & flagged).sum())
        precision, recall = hits / max(int(flagged.sum()), 1), hits / max(int(truth.sum()), 1)
        f1 = {"precision": precision, "recall": recall,
              "f1": 2 * precision * recall / max(precision + recall, 1e-12)}
    peak_pss = memory.stop()
    print(json.dumps({"seconds": seconds, "peak_pss_mb": peak_pss, "peak_anon_mb": memory.peak_anon_mb,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "stages": {k: v["seconds"] for k, v in run.manifest["stages"].items()},
                      "scorers": {k: v.get("seconds") for k, v in run.manifest["scorers"].items()},
                      "oof_accuracy": run.manifest["proxy"]["oof_accuracy"], "mislabel": f1}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,30000,60000")
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--many-classes", default="",
                        help="comma-separated sizes of 1,000-class x 64-feature vector sets (e.g. 200000,1000000)")
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
    for n in [int(s) for s in args.many_classes.split(",") if s]:
        data = args.work / f"vectors-{n}x1000.npz"
        make_vectors(n, data, classes=1000, dims=64, spread=1.5)
        jobs.append((f"synthetic vectors {n:,} x 64, 1,000 classes", data, "all", "default"))
    rows = ["| dataset | scorers | wall s | train s | score s | flag s | peak anonymous memory MB (all processes) | "
            "peak PSS MB (all processes, page cache of the memory maps included) | OOF acc | mislabel P / R / F1 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for title, data, scorers, epochs in jobs:
        out = args.work / f"run-{data.stem}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        proc = subprocess.run([sys.executable, __file__, "--child", str(data), str(out), scorers, epochs],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        m = r["mislabel"]
        quality = f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}" if m else "-"
        rows.append(f"| {title} | {scorers} | {r['seconds']:.0f} | {r['stages']['train']:.0f} | "
                    f"{r['stages']['score']:.0f} | {r['stages']['flag']:.1f} | {r['peak_anon_mb']:.0f} | "
                    f"{r['peak_pss_mb']:.0f} | {r['oof_accuracy']:.3f} | {quality} |")
        print(rows[-1], flush=True)
    report = ("## Scaling on one machine\n\nCommand: `.venv/bin/python benchmarks/scaling.py --sizes "
              f"{args.sizes} --vectors {args.vectors} --many-classes {args.many_classes}`\n\n"
              + "\n".join(rows) + "\n")
    publish(args.results, report)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
