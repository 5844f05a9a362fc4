"""`make demo`: real images with a known fraction of flipped labels -> `curator score` -> how many flips
were found.

Uses Fashion-MNIST from Debian's dataset-fashion-mnist when installed, else scikit-learn's digits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from realdata import (FASHION_CLASSES, fashion_mnist_available, load_digits_images,  # noqa: E402
                      load_fashion_mnist, symmetric_noise, write_image_folder)


def build(root: Path, n: int, noise: float, seed: int) -> str:
    if fashion_mnist_available():
        images, labels = load_fashion_mnist("train")
        classes, source = FASHION_CLASSES, "Fashion-MNIST (Debian dataset-fashion-mnist)"
    else:
        images, labels = load_digits_images()
        classes, source = [str(i) for i in range(10)], "scikit-learn digits"
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(labels), min(n, len(labels)), replace=False))
    images, labels = images[keep], labels[keep]
    noisy = symmetric_noise(labels, noise, len(classes), rng)
    if root.exists():
        shutil.rmtree(root)
    paths = write_image_folder(root, images, noisy, classes)
    truth = pd.DataFrame({"id": paths, "true_label": [classes[y] for y in labels],
                          "given_label": [classes[y] for y in noisy], "flipped": noisy != labels})
    truth.to_csv(root.parent / f"{root.name}-truth.csv", index=False)
    return f"{len(paths)} images of {source}, {truth.flipped.sum()} labels flipped ({noise:.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10000, help="images in the demo dataset")
    parser.add_argument("--noise", type=float, default=0.1, help="fraction of labels flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("demo-data/noisy"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="passed to curator score (torch threads)")
    args = parser.parse_args()

    print("building:", build(args.data, args.n, args.noise, args.seed), "->", args.data, flush=True)
    out = args.out or Path("runs") / f"demo-{args.data.name}"
    if out.exists():
        shutil.rmtree(out)
    curator = Path(sys.executable).with_name("curator")
    cmd = [str(curator), "score", str(args.data), "--out", str(out), "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)

    truth = pd.read_csv(args.data.parent / f"{args.data.name}-truth.csv").set_index("id")
    scores = pd.read_parquet(out / "scores.parquet").set_index("id")
    flipped = truth.loc[scores.index, "flipped"].to_numpy(bool)
    flagged = scores["is_mislabeled"].to_numpy(bool)
    hits = int((flipped & flagged).sum())
    precision = hits / max(flagged.sum(), 1)
    recall = hits / max(flipped.sum(), 1)
    fixed = (scores.loc[flagged & flipped, "suggested_label"] == truth.loc[scores.index[flagged & flipped], "true_label"]).mean()
    print()
    print(f"flipped labels: {flipped.sum()}   flagged as mislabeled: {flagged.sum()}   found: {hits}")
    print(f"precision {precision:.3f}   recall {recall:.3f}   F1 {2 * precision * recall / max(precision + recall, 1e-9):.3f}"
          f"   suggested label = true label for {fixed:.1%} of the found flips")
    queue = pd.read_parquet(out / "review_queue.parquet").head(500)
    right = [issue == "mislabeled" and bool(truth.loc[i, "flipped"]) for i, issue in zip(queue["id"], queue["issue"])]
    groups = json.loads((out / "manifest.json").read_text()).get("spurious_groups", [])
    print(f"first {len(queue)} rows of the review queue: {np.mean(right):.3f} are flipped labels flagged mislabeled; "
          f"{int(scores['is_outlier'].sum())} outlier and {int(scores['is_spurious'].sum())} spurious flags, "
          f"{len(groups)} suspected shortcut groups (the demo has no shortcut)")
    print(f"run directory: {out}  (review queue: {out / 'review_queue.csv'})")


if __name__ == "__main__":
    main()
