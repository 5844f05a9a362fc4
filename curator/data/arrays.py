"""An ``.npz`` file with ``X`` (N, ...) and ``y`` (N,); optional ``classes`` and ``ids``.

``X`` with 3 or 4 dimensions is read as images ((N, H, W), (N, H, W, C) or (N, C, H, W)),
otherwise as feature vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DatasetError
from .cache import cached_array, fingerprint
from .examples import Examples, encode_labels
from .images import short_reason


def _as_nchw_uint8(x: np.ndarray, where: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.dtype != np.uint8:
        if not np.isfinite(x).all():
            raise DatasetError(f"{where}: array 'X' has NaN or inf values")
        lo, hi = float(x.min()), float(x.max())
        x = np.zeros(x.shape, np.uint8) if hi <= lo else ((x - lo) / (hi - lo) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(x)


def _read(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz; object arrays (pickles) are refused, never unpickled."""
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise DatasetError(f"{path}: cannot be read as .npz ({short_reason(exc)})") from exc
        raise DatasetError(f"{path}: holds pickled Python objects, not an .npz archive; curator never "
                           "unpickles files") from exc
    except Exception as exc:
        raise DatasetError(f"{path}: cannot be read as .npz ({short_reason(exc)})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: a single array, not an .npz archive with 'X' and 'y'")
    with data:
        arrays = {}
        for key in data.files:
            try:
                arrays[key] = data[key]
            except ValueError as exc:  # "Object arrays cannot be loaded when allow_pickle=False"
                raise DatasetError(f"{path}: array {key!r} holds Python objects; curator never unpickles "
                                   "files, save it as a numeric or string array") from exc
            except Exception as exc:
                raise DatasetError(f"{path}: array {key!r} cannot be read ({short_reason(exc)})") from exc
    return arrays


def load_arrays(path: Path) -> Examples:
    data = _read(path)
    for key in ("X", "y"):
        if key not in data:
            raise DatasetError(f"{path}: missing array {key!r} (arrays: {', '.join(data) or 'none'})")
    x, y = data["X"], data["y"]
    if y.ndim != 1:
        raise DatasetError(f"{path}: array 'y' has shape {y.shape}; expected (N,) labels")
    if not 1 <= x.ndim <= 4 or x.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: array 'X' has shape {x.shape} and dtype {x.dtype}; expected numbers "
                           "shaped (N, D), (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if len(x) != len(y):
        raise DatasetError(f"{path}: 'X' has {len(x)} rows but 'y' has {len(y)}")
    classes = [str(c) for c in data["classes"]] if "classes" in data else None
    if classes is not None and np.issubdtype(y.dtype, np.integer):
        bad = (y < 0) | (y >= len(classes))
        if bad.any():
            raise DatasetError(f"{path}: 'y' holds class index {int(y[bad][0])} but 'classes' has {len(classes)} names")
        raw = pd.Series([classes[i] for i in y])
    else:
        raw = pd.Series(y)
    labels, classes = encode_labels(raw, f"{path}: array 'y'", classes)
    ids = [str(i) for i in data["ids"]] if "ids" in data else [str(i) for i in range(len(y))]
    key = fingerprint([path.resolve(), path.stat().st_size, path.stat().st_mtime_ns])
    if x.ndim >= 3:
        images = _as_nchw_uint8(x, path)
        inputs = cached_array(f"arrays-{key}", images.shape, np.uint8, lambda out: out.__setitem__(slice(None), images))
        kind = "image"
    else:
        vectors = x.reshape(len(x), -1).astype(np.float32)
        if not np.isfinite(vectors).all():
            raise DatasetError(f"{path}: array 'X' has NaN or inf values")
        inputs, kind = vectors, "vector"
    return Examples(ids=ids, paths=[None] * len(ids), labels=labels, classes=classes, inputs=inputs,
                    kind=kind, name=path.stem, root=path.parent, fingerprint=fingerprint([key, labels, classes, ids]),
                    stable_ids="ids" in data)
