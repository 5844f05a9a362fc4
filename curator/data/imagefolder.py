"""``DATASET/<class>/<image>``: the class is the folder name, the id the path relative to DATASET.

Images may sit in sub-folders of a class folder. Symlinks are followed, each folder is read once
(a symlink loop or a second link to a folder already read is skipped). Hidden files and folders
(``.name``) are ignored; every other file that is not used is listed in ``Examples.skipped`` with
its reason: images outside a class folder, non-image files, names that are not UTF-8, unreadable
images. A class folder without images is left out of the classes (with a warning).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from .cache import fingerprint
from .examples import Examples
from .images import decode_images, display_path, is_image_file, warn_skipped

NOT_UTF8 = "name is not valid UTF-8; rename it"


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Listing:
    """What ``list_image_folder`` found: image paths with their class, and what it left out."""

    paths: list[str] = field(default_factory=list)      # relative to the root, posix
    labels: list[str] = field(default_factory=list)     # the class folder of each path
    skipped: list[dict] = field(default_factory=list)   # {"path", "reason"}


def _skip(listing: Listing, root: Path, rel: str, reason: str, on_error: str, fatal: bool) -> None:
    if fatal and on_error == "fail":
        raise DatasetError(f"{root / display_path(rel)}: {reason} (--on-error skip leaves it out)")
    listing.skipped.append({"path": display_path(rel), "reason": reason})


def _is_dir(entry: os.DirEntry) -> bool:
    """Follows symlinks; a link that loops on itself or dangles is not a folder (it is probed as a file)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _walk(folder: Path, rel: str, cls: str, root: Path, seen: set, listing: Listing, on_error: str) -> bool:
    """Add every image below ``folder`` (``rel`` from the root) to ``listing`` as class ``cls``.

    Returns False when ``folder`` itself was skipped (unreadable, or already read: a symlink loop).
    """
    try:
        st = folder.stat()
    except OSError as exc:
        _skip(listing, root, rel + "/", f"folder cannot be read ({type(exc).__name__})", on_error, True)
        return False
    if (st.st_dev, st.st_ino) in seen:
        _skip(listing, root, rel + "/", "symlink loop: folder already read", on_error, True)
        return False
    seen.add((st.st_dev, st.st_ino))
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        child = f"{rel}/{entry.name}"
        if not _is_utf8(entry.name):
            _skip(listing, root, child, f"file {NOT_UTF8}", on_error, True)
        elif _is_dir(entry):                     # follows symlinks; loops are caught by ``seen``
            _walk(Path(entry.path), child, cls, root, seen, listing, on_error)
        elif not is_image_file(Path(entry.name)):
            suffix = Path(entry.name).suffix or "none"
            _skip(listing, root, child, f"not an image file (suffix {suffix!r})", on_error, False)
        else:
            listing.paths.append(child)
            listing.labels.append(cls)
    return True


def list_image_folder(root: Path, on_error: str = "skip") -> Listing:
    """Every image below ``root/<class>/``, sorted by class then path, and the files left out."""
    listing = Listing()
    seen = {(root.stat().st_dev, root.stat().st_ino)}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not _is_utf8(entry.name):
            _skip(listing, root, entry.name, f"folder {NOT_UTF8}", on_error, True)
        elif _is_dir(entry):
            before = len(listing.paths)
            if _walk(Path(entry.path), entry.name, entry.name, root, seen, listing, on_error) \
                    and len(listing.paths) == before:
                _skip(listing, root, entry.name + "/", "class folder holds no images", on_error, False)
        elif is_image_file(Path(entry.name)):
            _skip(listing, root, entry.name, "not inside a class folder", on_error, False)
    return listing


def load_image_folder(root: Path, *, max_side: int = 64, on_error: str = "skip", fit: str = "stretch") -> Examples:
    listing = list_image_folder(root, on_error)
    if not listing.paths:
        raise DatasetError(f"{root}: no images found (expected {root}/<class>/<image>.png|jpg|bmp|webp)")
    if len(set(listing.labels)) < 2:
        raise DatasetError(f"{root}: only one class ({listing.labels[0]!r}) found; need at least 2 class folders")
    inputs, kept, unreadable, report = decode_images(root, listing.paths, max_side=max_side, on_error=on_error,
                                                    fit=fit)
    skipped = sorted(listing.skipped + unreadable, key=lambda s: s["path"])
    warn_skipped(root, skipped)
    kept_paths = [listing.paths[i] for i in kept]
    names = [listing.labels[i] for i in kept]
    classes = sorted(set(names))             # a class whose every image was unreadable is no class
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[n] for n in names]
    return Examples(ids=kept_paths, paths=kept_paths, labels=labels, classes=classes, inputs=inputs,
                    kind="image", name=root.name, root=root, skipped=skipped, decode=report,
                    fingerprint=fingerprint([getattr(inputs, "filename", ""), labels, classes, kept_paths]))
