"""Where decoded inputs live: an on-disk cache keyed by dataset fingerprint, memory-mapped on read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..atomic import atomic_path


def cache_root() -> Path:
    """``$CURATOR_CACHE_DIR``, else ``~/.cache/curator``."""
    env = os.environ.get("CURATOR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "curator"


def fingerprint(parts: Iterable[object]) -> str:
    """A short stable hash of the given parts (paths, sizes, mtimes, settings, array bytes...)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def cached_array(key: str, shape: tuple[int, ...], dtype, fill: Callable[[np.ndarray], None]) -> np.ndarray:
    """Return the memory-mapped array cached under ``key``; build it with ``fill(out)`` on a miss."""
    path = cache_root() / f"{key}.npy"
    if path.exists():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape == tuple(shape) and arr.dtype == np.dtype(dtype):
                return arr
        except (ValueError, OSError):
            pass  # a damaged cache entry is rebuilt below
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        fill(out)
        out.flush()
        del out
    return np.load(path, mmap_mode="r")
