"""A manifest file: ``manifest.csv``/``.parquet`` with ``path`` (relative to the dataset) and ``label``.

Optional columns: ``id`` (else the path is the id), ``group``, ``split``, and any metadata columns,
which are kept for the spurious-attribute check.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..errors import DatasetError
from .cache import fingerprint
from .examples import Examples, encode_labels
from .images import decode_images


def read_frame(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:
        raise DatasetError(f"{path}: cannot be read as a {path.suffix.lstrip('.')} table ({exc})") from exc


def safe_relative(path: str, where: Path) -> str:
    """Refuse paths that escape the dataset root (absolute, ``..``)."""
    posix = PurePosixPath(str(path).replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (len(str(path)) > 1 and str(path)[1] == ":"):
        raise DatasetError(f"{where}: path {path!r} escapes the dataset folder; use paths relative to it")
    return posix.as_posix()


def load_manifest(manifest: Path, *, label_column: str = "label", max_side: int = 64,
                  on_error: str = "skip") -> Examples:
    root = manifest.parent
    frame = read_frame(manifest)
    for column in ("path", label_column):
        if column not in frame.columns:
            raise DatasetError(f"{manifest}: missing column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise DatasetError(f"{manifest}: no rows")
    rel_paths = [safe_relative(p, manifest) for p in frame["path"].astype(str)]
    missing = [p for p in rel_paths if not (root / p).is_file()]
    if missing:
        raise DatasetError(f"{manifest}: {len(missing)} path(s) do not exist, e.g. {missing[0]!r}")
    labels, classes = encode_labels(frame[label_column], f"{manifest}")
    ids = frame["id"].astype(str).tolist() if "id" in frame.columns else rel_paths
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise DatasetError(f"{manifest}: duplicate id {dup!r} in column {'id' if 'id' in frame.columns else 'path'!r}")
    inputs, kept, skipped = decode_images(root, rel_paths, max_side=max_side, on_error=on_error)
    metadata = frame.drop(columns=[c for c in ("path", label_column, "id") if c in frame.columns])
    metadata = metadata.iloc[kept].reset_index(drop=True)
    return Examples(ids=[ids[i] for i in kept], paths=[rel_paths[i] for i in kept], labels=labels[kept],
                    classes=classes, inputs=inputs, kind="image", name=root.name, root=root,
                    metadata=metadata, skipped=skipped,
                    fingerprint=fingerprint([getattr(inputs, "filename", ""), labels[kept], ids]))
