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

from ..atomic import write_json
from ..errors import DatasetError
from .cache import cache_root, cached_array, fingerprint

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
DECODER_VERSION = 2          # part of the cache key: bump when decoded pixels change
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


def decode_one(path: Path, side: int, channels: int) -> np.ndarray:
    """(C, side, side) uint8 pixels of one image, decoded with bounded memory."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft(None, (side, side))      # DCT scaling: decode at 1/2..1/8 size, still >= side
        large = img.size[0] * img.size[1] > LARGE_PIXELS
        with _ONE_LARGE_DECODE if large else nullcontext():
            img.load()
            factor = min(img.size) // side
            if factor >= 2 and img.mode in ("L", "RGB", "RGBA", "LA", "I", "F", "CMYK"):
                img = img.reduce(factor)       # box-average first, so the copies below are small
            img = to_uint8(img, channels).resize((side, side), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def decode_images(root: Path, rel_paths: list[str], *, max_side: int = 64, on_error: str = "skip",
                  workers: int = 4) -> tuple[np.ndarray, list[int], list[dict]]:
    """Decode ``root/rel_paths`` into a cached (N_ok, C, H, W) uint8 array.

    All images share one square size: the median longest side, clipped to [8, max_side].
    Colour if any image is colour. Returns (inputs, kept row indices, skipped records); an
    unreadable file is skipped with its reason, or raises DatasetError when ``on_error="fail"``.
    """
    abs_paths = [root / p for p in rel_paths]
    with ThreadPoolExecutor(workers) as pool:
        probes = list(pool.map(_probe, abs_paths))
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
    side = int(np.clip(np.median(sides), 8, max_side))
    channels = 3 if any(probes[i][2] for i in ok) else 1

    stats = []
    for i in ok:
        st = abs_paths[i].stat()
        stats.append((rel_paths[i], st.st_size, st.st_mtime_ns, st.st_ino))
    # The resolved root is part of the key: two datasets with equal names, sizes and mtimes (files
    # written within one clock tick) must not share decoded pixels.
    key = "images-" + fingerprint([DECODER_VERSION, str(root.resolve()), side, channels, *stats])
    failures: dict[int, str] = {}

    def fill(out: np.ndarray) -> None:
        def load(j: int) -> None:
            try:
                out[j] = decode_one(abs_paths[ok[j]], side, channels)
            except Exception as exc:
                failures[j] = f"cannot decode image ({short_reason(exc)})"

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(load, range(len(ok))))
        # Written before the cache entry itself, so a cache hit always knows its failed rows.
        write_json(failures_path, {str(j): r for j, r in failures.items()})

    failures_path = cache_root() / f"{key}.failures.json"
    inputs = cached_array(key, (len(ok), channels, side, side), np.uint8, fill)
    if not failures and failures_path.exists():
        failures = {int(j): r for j, r in json.loads(failures_path.read_text()).items()}
    if failures:
        if on_error == "fail":
            j = min(failures)
            raise DatasetError(f"{root / display_path(rel_paths[ok[j]])}: {failures[j]} "
                               "(--on-error skip leaves it out)")
        if len(failures) == len(ok):
            raise DatasetError(f"{root}: no readable images found ({len(failures)} cannot be decoded, "
                               f"e.g. {display_path(rel_paths[ok[0]])}: {failures[0]})")
        keep = [j for j in range(len(ok)) if j not in failures]
        skipped += [{"path": display_path(rel_paths[ok[j]]), "reason": r} for j, r in sorted(failures.items())]
        inputs = cached_array(key + "-" + fingerprint(sorted(failures)), (len(keep), channels, side, side),
                              np.uint8, lambda out: out.__setitem__(slice(None), inputs[keep]))
        ok = [ok[j] for j in keep]
    return inputs, ok, skipped


def warn_skipped(root: Path, skipped: list[dict]) -> None:
    """One warning for all files left out (each is listed with its reason in manifest.json)."""
    if skipped:
        warnings.warn(f"{root}: skipped {len(skipped)} file(s), e.g. {skipped[0]['path']}: "
                      f"{skipped[0]['reason']} (all listed in manifest.json: dataset.skipped_files)", stacklevel=4)
