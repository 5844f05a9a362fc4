"""Small real datasets with injected label noise, written in the layouts curator reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def flip_labels(labels: np.ndarray, fraction: float, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``fraction`` of labels to a different random class. Returns (noisy labels, flipped mask)."""
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(labels), bool)
    flipped[rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)] = True
    noisy = labels.copy()
    shift = rng.integers(1, n_classes, size=flipped.sum())
    noisy[flipped] = (labels[flipped] + shift) % n_classes
    return noisy, flipped


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8x8 digits as (N, 8, 8) uint8 and (N,) labels."""
    d = load_digits()
    return (d.images * (255.0 / 16.0)).round().astype(np.uint8), d.target.astype(np.int64)


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[str]:
    """Write ``root/<class>/<i>.png``; returns the relative paths in input order."""
    paths = []
    for i, (img, y) in enumerate(zip(images, labels)):
        rel = f"{classes[y]}/{i:05d}.png"
        (root / classes[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / rel)
        paths.append(rel)
    return paths


def photo_patches(n: int, side: int, seed: int) -> np.ndarray:
    """``n`` grey ``side``x``side`` patches cut from scikit-learn's bundled photographs: real images
    that are out of distribution for digits or clothing."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.fromarray(img).convert("L")) for img in load_sample_images().images]
    out = np.empty((n, side, side), np.uint8)
    for i in range(n):
        photo = photos[i % len(photos)]
        crop = int(rng.integers(side * 4, side * 12))
        top = int(rng.integers(0, photo.shape[0] - crop))
        left = int(rng.integers(0, photo.shape[1] - crop))
        patch = Image.fromarray(photo[top:top + crop, left:left + crop]).resize((side, side), Image.BILINEAR)
        out[i] = np.asarray(patch)
    return out
