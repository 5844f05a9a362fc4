"""Decoding image files into one uint8 array (N, C, H, W) of a common size, cached on disk.

Decoding is bounded: an image above PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is
skipped, JPEGs are decoded at reduced scale (``draft``), other large images are box-reduced right
after decoding, and only one large image is decoded at a time.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import unicodedata
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_path, write_json
from ..errors import DatasetError
from .cache import cache_root, cached_array, ensure_free_space, fingerprint

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
DECODER_VERSION = 3          # part of the cache key: bump when decoded pixels change
LARGE_PIXELS = 4096 * 4096   # above this, decode one image at a time (a full RGBA decode is 64 MB+)
_ONE_LARGE_DECODE = threading.Lock()


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def display_path(rel: str) -> str:
    """``rel`` as one line of valid text: bytes of a non-UTF-8 name as ``\\xNN``, line breaks and
    other control characters escaped; anything else as it is."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def short_reason(exc: BaseException) -> str:
    """``Type: message`` on one line, at most ~120 characters."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _scale_to_uint8(arr: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Map ``arr`` to 0..255: by ``full_scale`` when the values fit in [0, full_scale], else min-max."""
    lo, hi = float(arr.min()), float(arr.max())
    if full_scale is not None and lo >= 0 and hi <= full_scale:
        return (arr * (255.0 / full_scale)).round().astype(np.uint8)
    return np.zeros(arr.shape, np.uint8) if hi <= lo else ((arr - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)


def to_uint8(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode (16-bit, float, palette, RGBA, CMYK, ...) to L (``channels=1``) or RGB.

    16-bit images are scaled by their full range (65535 -> 255), so a dark scan stays dark; float
    images in [0, 1] by 255; anything else out of range is min-max scaled per image.
    """
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        full = 1.0 if img.mode == "F" else 65535.0
        img = Image.fromarray(_scale_to_uint8(arr, full), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L" if channels == 1 else "RGB")


def _probe(path: Path) -> tuple[int, int, bool] | str:
    """(width, height, is_colour) from the header, or the reason the file cannot be read."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as img:
            width, height, mode = img.size[0], img.size[1], img.mode
    except FileNotFoundError:
        return "broken symlink" if path.is_symlink() else "file disappeared while reading"
    except PermissionError:
        return "permission denied"
    except Image.UnidentifiedImageError:
        return "not a readable image (unknown format or damaged header)"
    except Image.DecompressionBombError as exc:
        return f"too large ({short_reason(exc)})"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        return f"not a readable image ({short_reason(exc)})"
    except Exception as exc:  # PIL raises many types for bad files (and DecompressionBombError)
        return f"not a readable image ({short_reason(exc)})"
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return f"too large ({width}x{height} = {width * height} pixels, over the decompression-bomb limit {limit})"
    if width < 1 or height < 1:
        return f"not a readable image (size {width}x{height})"
    return width, height, mode not in GREY_MODES


CHUNK_FILES = 2048           # files per chunk of the decode store: the unit an interrupted decode resumes from


def decode_one(path: Path, side: int, channels: int, fit: str = "stretch") -> np.ndarray:
    """(C, side, side) uint8 pixels of one image, decoded with bounded memory.

    ``fit="stretch"`` resizes the whole image to a square; ``"crop"`` keeps the aspect ratio (the
    shorter side becomes ``side``) and takes the centre square, as pretrained backbones expect.
    """
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft(None, (side, side))      # DCT scaling: decode at 1/2..1/8 size, still >= side
        large = img.size[0] * img.size[1] > LARGE_PIXELS
        with _ONE_LARGE_DECODE if large else nullcontext():
            img.load()
            factor = min(img.size) // side
            if factor >= 2 and img.mode in ("L", "RGB", "RGBA", "LA", "I", "F", "CMYK"):
                img = img.reduce(factor)       # box-average first, so the copies below are small
            img = to_uint8(img, channels)
            if fit == "crop":
                w, h = img.size
                scale = side / min(w, h)
                w, h = max(side, round(w * scale)), max(side, round(h * scale))
                left, top = (w - side) // 2, (h - side) // 2
                img = img.resize((w, h), Image.BILINEAR).crop((left, top, left + side, top + side))
            else:
                img = img.resize((side, side), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


class DecodeStore:
    """Decoded pixels of single files, kept across runs in chunks: ``chunk-<id>.npy`` (n, C, S, S)
    uint8 and ``chunk-<id>.json`` (the files' keys, and the reason for each file that failed).

    A file's key is (path relative to the root, size, mtime): a file that changes is a new file. A
    chunk's index is written after its pixels, so a chunk without an index is unfinished and
    ignored, and an interrupted decode resumes from its finished chunks. One store per dataset
    root, decoded size, channels and fit; header probes (sizes, colour) are kept beside them, per
    root (:func:`load_probes`).
    """

    def __init__(self, root: Path, side: int, channels: int, fit: str):
        self.folder = _store_base(root) / f"{side}px-{channels}ch-{fit}"
        self.side, self.channels = side, channels
        self.index: dict[tuple, tuple[str, int] | str] = {}
        if self.folder.is_dir():
            for meta in sorted(self.folder.glob("chunk-*.json")):
                try:
                    record = json.loads(meta.read_text())
                except (OSError, ValueError):
                    continue
                failures = record.get("failures", {})
                for row, file_key in enumerate(record["files"]):
                    self.index[tuple(file_key)] = failures.get(str(row)) or (meta.stem, row)

    def add_chunk(self, keys: list[tuple], decode) -> None:
        """Decode the files of ``keys`` with ``decode(j, out_row)`` (which returns a failure reason
        or None) into a new chunk."""
        import uuid

        name = f"chunk-{uuid.uuid4().hex[:12]}"
        ensure_free_space(self.folder, len(keys) * self.channels * self.side ** 2, "decoded images")
        with atomic_path(self.folder / f"{name}.npy") as tmp:
            out = np.lib.format.open_memmap(tmp, "w+", np.uint8, (len(keys), self.channels, self.side, self.side))
            failures = {str(j): r for j, r in enumerate(decode(out)) if r is not None}
            out.flush()
            del out
        write_json(self.folder / f"{name}.json", {"files": [list(k) for k in keys], "failures": failures})
        for row, file_key in enumerate(keys):
            self.index[file_key] = failures.get(str(row)) or (name, row)

    def gather(self, keys: list[tuple], out: np.ndarray) -> None:
        """Copy the pixels of ``keys`` (all decoded) into ``out`` rows in order, one chunk at a time."""
        by_chunk: dict[str, list[tuple[int, int]]] = {}
        for j, file_key in enumerate(keys):
            chunk, row = self.index[file_key]
            by_chunk.setdefault(chunk, []).append((j, row))
        for chunk, pairs in by_chunk.items():
            source = np.load(self.folder / f"{chunk}.npy", mmap_mode="r")
            dest, rows = np.array(pairs).T
            out[dest] = source[rows]


def _store_base(root: Path) -> Path:
    return cache_root() / "decoded" / fingerprint([DECODER_VERSION, str(root.resolve())])


def load_probes(root: Path) -> dict[tuple, tuple[int, int, bool]]:
    """(width, height, is_colour) by file key, from the headers read by earlier runs over ``root``."""
    found = {}
    path = _store_base(root) / "probes.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rel, size, mtime, width, height, colour = json.loads(line)
            except (ValueError, TypeError):
                continue                  # a line cut short by an interruption
            found[(rel, size, mtime)] = (width, height, colour)
    return found


def save_probes(root: Path, records: list[tuple[tuple, tuple]]) -> None:
    if records:
        base = _store_base(root)
        base.mkdir(parents=True, exist_ok=True)
        with open(base / "probes.jsonl", "a", encoding="utf-8") as f:
            f.write("".join(json.dumps([*k, *p]) + "\n" for k, p in records))


def _file_key(root: Path, rel: str) -> tuple | str:
    """(path, size, mtime) of a file: what names its decoded pixels; or why it cannot be read."""
    try:
        st = (root / rel).stat()
    except OSError:
        probe = _probe(root / rel)       # the same reason a header read gives (symlink loop, ...)
        return probe if isinstance(probe, str) else "file disappeared while reading"
    return (os.fsencode(rel).decode("utf-8", "surrogateescape"), st.st_size, st.st_mtime_ns)


def decode_images(root: Path, rel_paths: list[str], *, max_side: int = 64, on_error: str = "skip",
                  workers: int = 4, fit: str = "stretch") -> tuple[np.ndarray, list[int], list[dict], dict]:
    """Decode ``root/rel_paths`` into a cached (N_ok, C, H, W) uint8 array.

    All images share one square size: the median longest side, clipped to [8, max_side]; ``fit``
    says how each image becomes that square (:func:`decode_one`). Colour if any image is colour.
    Returns (inputs, kept row indices, skipped records, report); an unreadable file is skipped with
    its reason, or raises DatasetError when ``on_error="fail"``. ``report``: ``side``, ``channels``,
    ``fit``, ``native_side`` (the median longest side of the files), ``decoded_files`` and
    ``probed_files`` (files read in this call: the rest came from the decode store).

    Incremental: every file is decoded once into a :class:`DecodeStore` and found there again by its
    key on the next run (a night that adds 1% new files decodes 1%), and the assembled array is
    cached by the keys of all files.
    """
    keys = [_file_key(root, p) for p in rel_paths]
    known = load_probes(root)
    unknown = [i for i, k in enumerate(keys) if not isinstance(k, str) and k not in known]
    with ThreadPoolExecutor(workers) as pool:
        fresh = list(pool.map(_probe, [root / rel_paths[i] for i in unknown]))
    known.update({keys[i]: p for i, p in zip(unknown, fresh)})
    # Only readable headers are remembered: a failure may be passing (permissions, a file being written).
    save_probes(root, [(keys[i], p) for i, p in zip(unknown, fresh) if not isinstance(p, str)])
    probes = [k if isinstance(k, str) else known[k] for k in keys]
    skipped, ok = [], []
    for i, probe in enumerate(probes):
        if isinstance(probe, str):
            if on_error == "fail":
                raise DatasetError(f"{root / display_path(rel_paths[i])}: {probe} (--on-error skip leaves it out)")
            skipped.append({"path": display_path(rel_paths[i]), "reason": probe})
        else:
            ok.append(i)
    if not ok:  # rel_paths is never empty, so neither is skipped
        raise DatasetError(f"{root}: no readable images found ({len(skipped)} unreadable, "
                           f"e.g. {skipped[0]['path']}: {skipped[0]['reason']})")
    sides = [max(probes[i][0], probes[i][1]) for i in ok]
    native = int(np.median(sides))
    side = int(np.clip(native, 8, max_side))
    channels = 3 if any(probes[i][2] for i in ok) else 1
    report = {"side": side, "channels": channels, "fit": fit, "native_side": native,
              "decoded_files": 0, "probed_files": len(unknown)}

    store = DecodeStore(root, side, channels, fit)
    todo = [i for i in ok if keys[i] not in store.index]
    for start in range(0, len(todo), CHUNK_FILES):
        part = todo[start:start + CHUNK_FILES]

        def decode(out: np.ndarray, part=part) -> list[str | None]:
            def one(j: int) -> str | None:
                try:
                    out[j] = decode_one(root / rel_paths[part[j]], side, channels, fit)
                except Exception as exc:
                    return f"cannot decode image ({short_reason(exc)})"
                return None

            with ThreadPoolExecutor(workers) as pool:
                return list(pool.map(one, range(len(part))))

        store.add_chunk([keys[i] for i in part], decode)
        report["decoded_files"] += len(part)

    failures = {i: store.index[keys[i]] for i in ok if isinstance(store.index[keys[i]], str)}
    if failures:
        if on_error == "fail":
            i = min(failures)
            raise DatasetError(f"{root / display_path(rel_paths[i])}: {failures[i]} (--on-error skip leaves it out)")
        if len(failures) == len(ok):
            i = ok[0]
            raise DatasetError(f"{root}: no readable images found ({len(failures)} cannot be decoded, "
                               f"e.g. {display_path(rel_paths[i])}: {failures[i]})")
        skipped += [{"path": display_path(rel_paths[i]), "reason": r} for i, r in sorted(failures.items())]
        ok = [i for i in ok if i not in failures]
    kept_keys = [keys[i] for i in ok]
    # The resolved root is part of the key: two datasets with equal names, sizes and mtimes (files
    # written within one clock tick) must not share decoded pixels.
    key = "images-" + fingerprint([DECODER_VERSION, str(root.resolve()), side, channels, fit, *kept_keys])
    shape = (len(ok), channels, side, side)
    if not (cache_root() / f"{key}.npy").exists():
        ensure_free_space(cache_root(), int(np.prod(shape)), "the decoded-image array")
    inputs = cached_array(key, shape, np.uint8, lambda out: store.gather(kept_keys, out))
    return inputs, ok, skipped, report


def warn_skipped(root: Path, skipped: list[dict]) -> None:
    """One warning for all files left out (each is listed with its reason in manifest.json)."""
    if skipped:
        warnings.warn(f"{root}: skipped {len(skipped)} file(s), e.g. {skipped[0]['path']}: "
                      f"{skipped[0]['reason']} (all listed in manifest.json: dataset.skipped_files)", stacklevel=4)
