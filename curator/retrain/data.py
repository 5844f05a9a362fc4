"""The sets a retrain reads: DATASET, --val and --eval aligned to DATASET's classes, their group
columns, and the corrected manifest of ``curator apply``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..adapter import DatasetSettings
from ..data import Examples, load_dataset
from ..errors import ConfigError, DatasetError

def load_set(data, option: str, loader: DatasetSettings) -> Examples:
    """``data`` (a path in any layout curator reads, or :class:`Examples`) loaded; errors name ``option``."""
    if isinstance(data, Examples):
        return data
    try:
        return load_dataset(data, loader)
    except DatasetError as exc:
        raise DatasetError(f"{option}: {exc}") from exc


def aligned_labels(examples: Examples, train: Examples, option: str) -> np.ndarray:
    """Labels of ``examples`` in ``train``'s class order; inputs must match ``train``'s."""
    if examples.kind != train.kind or tuple(examples.inputs.shape[1:]) != tuple(train.inputs.shape[1:]):
        raise DatasetError(f"{option} {examples.root}: inputs {examples.kind} {tuple(examples.inputs.shape[1:])} "
                           f"do not match DATASET's {train.kind} {tuple(train.inputs.shape[1:])}")
    index = {c: i for i, c in enumerate(train.classes)}
    unknown = sorted(set(examples.classes) - set(index))
    if unknown:
        raise DatasetError(f"{option} {examples.root}: class {unknown[0]!r} is not a class of DATASET")
    return np.array([index[examples.classes[j]] for j in examples.labels], dtype=np.int64)


def group_column(examples: Examples) -> np.ndarray | None:
    """(N,) the set's true group names from its ``group`` column, or None."""
    meta = examples.metadata
    if "group" in meta.columns and len(meta) == len(examples):
        return meta["group"].astype(str).to_numpy()
    return None


def read_applied_reviews(path: str | Path, examples: Examples) -> tuple[np.ndarray, np.ndarray]:
    """The corrected manifest of ``curator apply`` (CSV id,path,label) as (rows of DATASET, labels).

    Examples absent from the file were removed in review; labels are class names of DATASET.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--applied-reviews {path}: file does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise ConfigError(f"--applied-reviews {path}: cannot be read as CSV ({exc})") from exc
    for column in ("id", "label"):
        if column not in frame.columns:
            raise ConfigError(f"--applied-reviews {path}: missing column {column!r}")
    where = {i: k for k, i in enumerate(examples.ids)}
    unknown = [i for i in frame["id"] if i not in where]
    if unknown:
        raise ConfigError(f"--applied-reviews {path}: id {unknown[0]!r} is not in DATASET")
    index = {c: k for k, c in enumerate(examples.classes)}
    bad = [lab for lab in frame["label"] if lab not in index]
    if bad:
        raise ConfigError(f"--applied-reviews {path}: label {bad[0]!r} is not a class of DATASET")
    if frame["id"].duplicated().any():
        raise ConfigError(f"--applied-reviews {path}: id {frame['id'][frame['id'].duplicated()].iloc[0]!r} repeats")
    return (frame["id"].map(where).to_numpy(np.int64), frame["label"].map(index).to_numpy(np.int64))


@dataclass
class EvalSet:
    """Rows of a bank to evaluate on, with labels in training class order and optional group names.

    groups: (n,) the true groups (a ``group`` column) or None; inferred: (n,) class × held-out-correct
    groups, filled in when held-out predictions for these rows exist, or None.
    """

    name: str
    bank: object
    rows: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    inferred: np.ndarray | None = None

    @property
    def selection_groups(self) -> np.ndarray | None:
        """The groups worst-group selection uses: the true ones when given, else the inferred ones."""
        return self.groups if self.groups is not None else self.inferred

    @property
    def group_source(self) -> str | None:
        """``true``, ``inferred`` or None: where :attr:`selection_groups` come from."""
        return "true" if self.groups is not None else "inferred" if self.inferred is not None else None
