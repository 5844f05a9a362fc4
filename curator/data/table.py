"""A table (CSV or Parquet) with a label column and numeric feature columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .cache import fingerprint
from .examples import Examples, encode_labels
from .manifest import read_frame

RESERVED = ("id", "group", "split")


def load_table(path: Path, *, label_column: str = "label") -> Examples:
    frame = read_frame(path)
    if label_column not in frame.columns:
        raise DatasetError(f"{path}: no label column {label_column!r} (set --label-column; columns: "
                           f"{', '.join(map(str, frame.columns[:12]))})")
    features = [c for c in frame.columns if c != label_column and c not in RESERVED]
    if not features:
        raise DatasetError(f"{path}: no feature columns besides {label_column!r}")
    for column in features:
        values = frame[column]
        if values.dtype.kind not in "biuf":
            bad = values[values.apply(lambda v: isinstance(v, str))]
            example = bad.iloc[0] if len(bad) else values.iloc[0]
            raise DatasetError(f"{path}: column {column!r} is not numeric (e.g. {example!r})")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DatasetError(f"{path}: column {column!r} has a missing/NaN value in row {row + 1}")
    labels, classes = encode_labels(frame[label_column], f"{path}: column {label_column!r}")
    inputs = frame[features].to_numpy(np.float32)
    ids = frame["id"].astype(str).tolist() if "id" in frame.columns else [str(i) for i in range(len(frame))]
    metadata = frame[[c for c in ("group", "split") if c in frame.columns]].reset_index(drop=True)
    return Examples(ids=ids, paths=[None] * len(ids), labels=labels, classes=classes, inputs=inputs,
                    kind="vector", name=path.stem, root=path.parent, metadata=metadata,
                    fingerprint=fingerprint([inputs, labels, ids]))
