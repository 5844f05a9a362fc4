"""Decoding image files into one uint8 array (N, C, H, W) of a common size, cached on disk."""

from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_json
from ..errors import DatasetError
from .cache import cache_root, cached_array, fingerprint

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _to_uint8(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode (16-bit, palette, RGBA, CMYK, ...) to L or RGB."""
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
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
            return img.size[0], img.size[1], img.mode not in GREY_MODES
    except Exception as exc:  # PIL raises many types for bad files
        return f"not a readable image ({type(exc).__name__})"


def decode_images(root: Path, rel_paths: list[str], *, max_side: int = 64, on_error: str = "skip",
                  workers: int = 4) -> tuple[np.ndarray, list[int], list[dict]]:
    """Decode ``root/rel_paths`` into a cached (N_ok, C, H, W) uint8 array.

    All images share one square size: the median longest side, clipped to [8, max_side].
    Colour if any image is colour. Returns (inputs, kept row indices, skipped records).
    """
    abs_paths = [root / p for p in rel_paths]
    with ThreadPoolExecutor(workers) as pool:
        probes = list(pool.map(_probe, abs_paths))
    skipped, ok = [], []
    for i, probe in enumerate(probes):
        if isinstance(probe, str):
            if on_error == "fail":
                raise DatasetError(f"{abs_paths[i]}: {probe}")
            skipped.append({"path": rel_paths[i], "reason": probe})
        else:
            ok.append(i)
    if not ok:
        raise DatasetError(f"{root}: no readable images found")
    sides = [max(probes[i][0], probes[i][1]) for i in ok]
    side = int(np.clip(np.median(sides), 8, max_side))
    channels = 3 if any(probes[i][2] for i in ok) else 1

    stats = []
    for i in ok:
        st = abs_paths[i].stat()
        stats.append((rel_paths[i], st.st_size, st.st_mtime_ns))
    key = "images-" + fingerprint([side, channels, *stats])
    failures: dict[int, str] = {}

    def fill(out: np.ndarray) -> None:
        def load(j: int) -> None:
            path = abs_paths[ok[j]]
            try:
                with Image.open(path) as img:
                    img = _to_uint8(img, channels).resize((side, side), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.uint8)
            except Exception as exc:
                failures[j] = f"cannot decode image ({type(exc).__name__}: {exc})"
                return
            out[j] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)

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
            raise DatasetError(f"{abs_paths[ok[j]]}: {failures[j]}")
        keep = [j for j in range(len(ok)) if j not in failures]
        skipped += [{"path": rel_paths[ok[j]], "reason": r} for j, r in sorted(failures.items())]
        inputs = cached_array(key + "-" + fingerprint(sorted(failures)), (len(keep), channels, side, side),
                              np.uint8, lambda out: out.__setitem__(slice(None), inputs[keep]))
        ok = [ok[j] for j in keep]
    if skipped:
        warnings.warn(f"{root}: skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]['path']}: "
                      f"{skipped[0]['reason']} (listed in manifest.json)", stacklevel=2)
    return inputs, ok, skipped
