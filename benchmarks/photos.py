"""Colour images from the real photographs that ship inside installed packages (no network): the two
sample photos of scikit-learn (china, flower) and seven colour photos of scikit-image's data module
(astronaut, chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry, retina); its greyscale
photos (camera, coins, moon, page, text, grass, gravel, brick) serve as images from another source.

Two tasks, both written as JPEG image folders of mixed sizes (96 and 128 px):
- ``scenes``: which of the nine photographs a random crop comes from. Real photographic content,
  but only nine photographs: crops of one class overlap, and a proxy can learn a photograph's
  colours and textures as well as its content.
- ``objects``: a coloured shape (ten classes: circle, ring, square, diamond, triangle, pentagon,
  hexagon, star, cross, half-disc) pasted on a crop of one of the nine photographs: the class is
  the silhouette, the photograph behind it is noise.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["circle", "ring", "square", "diamond", "triangle", "pentagon", "hexagon", "star", "cross", "half_disc"]
SIDES = (96, 128)


def colour_photos() -> dict[str, np.ndarray]:
    """Nine real colour photographs, (H, W, 3) uint8 each, by name."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    photos = {name.rsplit("/", 1)[-1].split(".")[0]: img for name, img in zip(sample.filenames, sample.images)}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina"):
        photos[name] = getattr(data, name)()[..., :3]
    return photos


def grey_photos() -> list[np.ndarray]:
    """Real greyscale photographs (another source), (H, W) uint8."""
    from skimage import data

    return [getattr(data, n)() for n in ("camera", "coins", "moon", "page", "text", "grass", "gravel", "brick")]


def random_crop(photo: np.ndarray, side: int, rng: np.random.Generator, scale=(0.15, 0.5)) -> Image.Image:
    """A random square crop of ``photo`` (a random fraction ``scale`` of its shorter side), flipped at
    random, resized to ``side``."""
    h, w = photo.shape[:2]
    s = int(rng.uniform(*scale) * min(h, w))
    y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    img = Image.fromarray(photo[y:y + s, x:x + s])
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img.convert("RGB").resize((side, side), Image.BILINEAR)


def _polygon(n: int, cx: float, cy: float, r: float, turn: float, inner: float | None = None) -> list[tuple]:
    points = []
    steps = 2 * n if inner else n
    for i in range(steps):
        radius = (inner if inner and i % 2 else 1.0) * r
        a = turn + 2 * math.pi * i / steps - math.pi / 2
        points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return points


def draw_shape(img: Image.Image, shape: str, rng: np.random.Generator) -> None:
    """Draw ``shape`` in a random saturated colour at a random place and size (rotated by at most 15°)."""
    side = img.size[0]
    r = rng.uniform(0.16, 0.3) * side
    cx, cy = rng.uniform(r, side - r, 2)
    turn = math.radians(rng.uniform(-15, 15))
    hue = rng.uniform(0, 1)
    colour = tuple(int(255 * c) for c in _hsv(hue, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)))
    draw = ImageDraw.Draw(img)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(3, int(r * 0.3)))
    elif shape == "half_disc":
        draw.pieslice(box, 0 + math.degrees(turn), 180 + math.degrees(turn), fill=colour)
    elif shape == "cross":
        t = r * 0.35
        for dx, dy in ((r, t), (t, r)):
            draw.polygon(_rotated([(-dx, -dy), (dx, -dy), (dx, dy), (-dx, dy)], cx, cy, turn), fill=colour)
    else:
        n, inner, extra = {"square": (4, None, math.pi / 4), "diamond": (4, None, 0.0), "triangle": (3, None, 0.0),
                           "pentagon": (5, None, 0.0), "hexagon": (6, None, 0.0), "star": (5, 0.45, 0.0)}[shape]
        draw.polygon(_polygon(n, cx, cy, r, turn + extra, inner), fill=colour)


def _rotated(points, cx, cy, turn):
    c, s = math.cos(turn), math.sin(turn)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, s, v)


def make_task(task: str, n: int, rng: np.random.Generator) -> tuple[list[Image.Image], np.ndarray, list[str]]:
    """(images, labels (n,), class names) for ``scenes`` or ``objects``, sizes drawn from SIDES."""
    photos = list(colour_photos().items())
    images, labels = [], []
    classes = [name for name, _ in photos] if task == "scenes" else SHAPES
    for i in range(n):
        side = int(rng.choice(SIDES))
        y = i % len(classes)
        if task == "scenes":
            img = random_crop(photos[y][1], side, rng)
        else:
            img = random_crop(photos[rng.integers(len(photos))][1], side, rng, scale=(0.2, 0.6))
            draw_shape(img, SHAPES[y], rng)
        images.append(img)
        labels.append(y)
    return images, np.array(labels, np.int64), classes


def foreign_images(n: int, rng: np.random.Generator) -> list[Image.Image]:
    """``n`` crops of greyscale photographs, as RGB: images from another source."""
    greys = grey_photos()
    return [random_crop(np.stack([g] * 3, -1), int(rng.choice(SIDES)), rng, scale=(0.2, 0.6))
            for g in (greys[rng.integers(len(greys))] for _ in range(n))]


def write_jpeg_folder(root: Path, images: list[Image.Image], labels: np.ndarray, classes: list[str]) -> list[str]:
    """``root/<class>/<i>.jpg`` for every image; returns the relative paths in input order."""
    paths = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i, (img, y) in enumerate(zip(images, labels)):
        rel = f"{classes[y]}/{i:05d}.jpg"
        img.save(root / rel, quality=90)
        paths.append(rel)
    return paths
