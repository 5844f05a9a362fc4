"""``DATASET/<class>/<image>``: the class is the folder name, the id the path relative to DATASET."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DatasetError
from .cache import fingerprint
from .examples import Examples
from .images import decode_images, is_image_file


def list_image_folder(root: Path) -> tuple[list[str], list[str]]:
    """(relative image paths, class names) of every image below ``root/<class>/``, sorted."""
    rel_paths, labels = [], []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for class_dir in class_dirs:
        for dirpath, dirnames, filenames in os.walk(class_dir):  # does not follow symlinked dirs: no loops
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if is_image_file(path):
                    rel_paths.append(path.relative_to(root).as_posix())
                    labels.append(class_dir.name)
    return rel_paths, labels


def load_image_folder(root: Path, *, max_side: int = 64, on_error: str = "skip") -> Examples:
    rel_paths, names = list_image_folder(root)
    if not rel_paths:
        raise DatasetError(f"{root}: no images found (expected {root}/<class>/<image>.png|jpg|bmp|webp)")
    classes = sorted(set(names))
    if len(classes) < 2:
        raise DatasetError(f"{root}: only one class ({classes[0]!r}) found; need at least 2 class folders")
    inputs, kept, skipped = decode_images(root, rel_paths, max_side=max_side, on_error=on_error)
    index = {c: i for i, c in enumerate(classes)}
    kept_paths = [rel_paths[i] for i in kept]
    labels = [index[names[i]] for i in kept]
    return Examples(ids=kept_paths, paths=kept_paths, labels=labels, classes=classes, inputs=inputs,
                    kind="image", name=root.name, root=root, skipped=skipped,
                    fingerprint=fingerprint([inputs.filename if hasattr(inputs, "filename") else "", labels]))
