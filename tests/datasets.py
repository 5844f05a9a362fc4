"""Small real datasets with injected label noise, written in the layouts curator reads."""
# flip_labels and photo_patches are the public ones plugin authors use too.

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from curator.testing import flip_labels, photo_patches  # noqa: F401


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

