"""A table (CSV or Parquet) with a label column and numeric feature columns.

Every feature cell must be a finite number: text, an empty cell/NaN or inf stops with the column and
row. Optional ``id`` (unique, no empty cell), ``group`` and ``split`` columns are not features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DatasetError
from .cache import fingerprint
from .examples import Examples, encode_labels, first_row
from .manifest import read_frame

RESERVED = ("id", "group", "split")
MISSING_TEXT = {"nan", "-nan", "na", "n/a", "#n/a", "null", "none"}   # how tables write a missing number


def _check_numeric(values: pd.Series, column: str, path: Path) -> None:
    if values.dtype.kind not in "biufO":
        raise DatasetError(f"{path}: column {column!r} is not numeric (dtype {values.dtype})")
    if values.dtype.kind == "O":  # CSV text: numbers written as text are fine, words are not
        try:
            numeric = pd.to_numeric(values, errors="coerce")
        except (TypeError, ValueError):
            numeric = pd.Series(np.nan, index=values.index)
        marked_missing = values.astype(str).str.strip().str.lower().isin(MISSING_TEXT)
        bad = (numeric.isna() & values.notna() & ~marked_missing).to_numpy()
        if bad.any():
            row = first_row(bad)
            raise DatasetError(f"{path}: column {column!r} is not numeric ({values.iloc[row - 1]!r} in row {row})")
        values = numeric
    missing = values.isna().to_numpy()
    if missing.any():
        raise DatasetError(f"{path}: column {column!r} has a missing/NaN value in row {first_row(missing)}")
    infinite = ~np.isfinite(values.to_numpy(np.float64))
    if infinite.any():
        raise DatasetError(f"{path}: column {column!r} has an infinite value in row {first_row(infinite)}")


def load_table(path: Path, *, label_column: str = "label") -> Examples:
    frame = read_frame(path, (label_column, "id"))
    if label_column not in frame.columns:
        raise DatasetError(f"{path}: no label column {label_column!r} (set --label-column; columns: "
                           f"{', '.join(map(str, frame.columns[:12]))})")
    features = [c for c in frame.columns if c != label_column and c not in RESERVED]
    if not features:
        raise DatasetError(f"{path}: no feature columns besides {label_column!r}")
    if frame.empty:
        raise DatasetError(f"{path}: no rows")
    for column in features:
        _check_numeric(frame[column], column, path)
    labels, classes = encode_labels(frame[label_column], f"{path}: column {label_column!r}")
    inputs = frame[features].apply(pd.to_numeric).to_numpy(np.float32)
    if "id" in frame.columns:
        empty = frame["id"].isna().to_numpy()
        if empty.any():
            raise DatasetError(f"{path}: column 'id' is empty in row {first_row(empty)}")
        ids = frame["id"].astype(str).tolist()
        dup = pd.Series(ids).duplicated().to_numpy()
        if dup.any():
            row = first_row(dup)
            raise DatasetError(f"{path}: duplicate id {ids[row - 1]!r} in column 'id' (row {row})")
    else:
        ids = [str(i) for i in range(len(frame))]
    metadata = frame[[c for c in ("group", "split") if c in frame.columns]].reset_index(drop=True)
    return Examples(ids=ids, paths=[None] * len(ids), labels=labels, classes=classes, inputs=inputs,
                    kind="vector", name=path.stem, root=path.parent, metadata=metadata,
                    fingerprint=fingerprint([inputs, labels, ids, classes]))
