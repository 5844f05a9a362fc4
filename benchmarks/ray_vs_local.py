"""Wall-clock time of `curator score` with the local backend against the Ray backend, on this machine.

Real Fashion-MNIST images (Debian's dataset-fashion-mnist; scikit-learn's digits when absent) with
10% flipped labels, written once as an .npz. Four runs with the same seed:

- local: the default backend (the K folds side by side in worker processes, cores/K threads each,
  exactly the shape of the Ray fold tasks);
- local, 1 thread: ``threads=1``, everything one after another on one core;
- ray, cold: `--backend ray` starting its own Ray instance on this machine (start-up included);
- ray, warm: a Ray instance already running (`ray.init()` before the call), as on a cluster.

Prints a Markdown table: total, train-stage and score-stage seconds, the fold tasks and scorer shards,
and how far each run's scores are from the local default run's (the Ray runs must equal it bit for bit).

    .venv/bin/python benchmarks/ray_vs_local.py --n 20000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from realdata import fashion_mnist_available, load_digits_images, load_fashion_mnist, symmetric_noise  # noqa: E402


def build(path: Path, n: int, seed: int) -> str:
    if fashion_mnist_available():
        images, labels = load_fashion_mnist("train")
        source = "Fashion-MNIST"
    else:
        images, labels = load_digits_images()
        source = "scikit-learn digits"
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(labels), min(n, len(labels)), replace=False))
    noisy = symmetric_noise(labels[keep], 0.1, 10, rng)
    np.savez(path, X=images[keep], y=noisy)
    return f"{len(keep)} {source} images, 10% labels flipped"


def timed(label: str, **kwargs) -> tuple[str, float, "object"]:
    import curator

    started = time.perf_counter()
    run = curator.score(progress=False, **kwargs)
    return label, time.perf_counter() - started, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="images")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--scorers", default="learning_speed,early_learning,self_influence,adversarial_distance",
                        help="the last two are shardable: on Ray they run as shard tasks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--address", help="an existing Ray cluster for the warm run [a local instance]")
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="curator-ray-bench-"))
    os.environ.setdefault("CURATOR_CACHE_DIR", str(work / "cache"))
    try:
        data = work / "data.npz"
        what = build(data, args.n, args.seed)
        common = dict(dataset=data, scorers=args.scorers, epochs=args.epochs, seed=args.seed)
        rows = [timed("local (default)", out=work / "local", **common),
                timed("local, threads=1", out=work / "local-1", threads=1, **common),
                timed("ray, cold (starts Ray)", out=work / "ray-cold", backend="ray", **common)]
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
        try:
            rows.append(timed("ray, warm (Ray running)", out=work / "ray-warm", backend="ray", **common))
        finally:
            ray.shutdown()

        reference = rows[0][2].scores
        columns = [c for c in reference.columns if c.startswith("score_")]
        print(f"{what}; {args.epochs} epochs, 2 folds, scorers {args.scorers}; {os.cpu_count()} CPUs\n")
        print(f"| backend | total s | train stage s | score stage s | fold tasks | scorer shards | max abs. diff "
              f"of the {len(columns)} score columns vs local | same flags |")
        print("|---|---:|---:|---:|---|---|---:|---|")
        for label, seconds, run in rows:
            backend, stages = run.manifest["config"]["backend"], run.manifest["stages"]
            shards = ", ".join(f"{name} {s['shards']}" for name, s in backend.get("scorer_shards", {}).items())
            diff, where = max((float(np.abs(run.scores[c].to_numpy() - reference[c].to_numpy()).max()), c)
                              for c in columns)
            same = all(bool((run.scores[f] == reference[f]).all()) for f in ("is_mislabeled", "is_outlier"))
            diff_text = f"{diff:.2g} ({where})" if diff else "0"
            print(f"| {label} | {seconds:.1f} | {stages['train']['seconds']:.1f} | {stages['score']['seconds']:.1f} | "
                  f"{backend.get('fold_resources', 'this process')} | {shards or '-'} | {diff_text} | {same} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
