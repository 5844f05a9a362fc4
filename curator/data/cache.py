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


# Left free on the cache's disk after any write, so a full cache never fills the disk to the last byte.
DISK_RESERVE = 256 * 2**20


def ensure_free_space(folder: Path, nbytes: int, what: str) -> None:
    """Stop with one line when writing ``nbytes`` more into ``folder`` would leave less than
    :data:`DISK_RESERVE` free on its disk."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if nbytes + DISK_RESERVE > free:
        from ..errors import DatasetError

        raise DatasetError(f"not enough disk space for {what} in {folder}: needs {nbytes / 2**20:,.0f} MB "
                           f"(+{DISK_RESERVE // 2**20} MB reserve), {free / 2**20:,.0f} MB free; free some space "
                           "or point CURATOR_CACHE_DIR at a larger disk")


def content_id(array: np.ndarray) -> str:
    """A stable id of an array's contents: the file name of a decoded-image cache entry (whose key
    names its files' paths, sizes and mtimes), else a hash of its bytes, read in chunks (so two
    .npz files holding the same images share one id)."""
    name = getattr(array, "filename", None)
    if name and Path(name).parent == cache_root() and Path(name).name.startswith("images-"):
        return Path(name).name
    h = hashlib.sha256(repr((array.shape, str(array.dtype))).encode())
    step = max(1, (64 * 2**20) // max(1, array[0].nbytes if len(array) else 1))
    for start in range(0, len(array), step):
        h.update(np.ascontiguousarray(array[start:start + step]).tobytes())
    return "sha256-" + h.hexdigest()[:16]
