"""The one in-memory description of a labelled dataset that every adapter produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DatasetError


@dataclass
class Examples:
    """A labelled dataset, ready for the engine.

    ids:        (N,) stable example ids (path relative to the dataset root, or the ``id`` column)
    paths:      (N,) path relative to the dataset root, or ``None`` for tables and arrays
    labels:     (N,) int64 class index into ``classes``
    classes:    class names in column order
    inputs:     (N, C, H, W) uint8 images or (N, D) float32 vectors, usually memory-mapped
    kind:       ``"image"`` or ``"vector"``
    metadata:   N rows of extra columns (``group``, ``split``, any manifest metadata)
    fingerprint: hash of the dataset contents and decoding settings (keys the input cache)
    skipped:    ``{"path", "reason"}`` for every input file that was not used
    root:       the folder ``paths`` are relative to
    source:     the path the dataset was read from (a folder, or a manifest, table or .npz file); set
                by ``load_dataset``
    format:     the name of the adapter that read it; set by ``load_dataset``
    decode:     for decoded image files, what the decoder kept and did: ``side``, ``channels``, ``fit``,
                ``native_side``, ``decoded_files`` (decoded in this load; the rest came from the cache)
    stable_ids: False when the ids are row numbers (an .npz without ``ids``), which change when rows
                are added: such a dataset cannot be linked to a previous run
    """

    ids: list[str]
    paths: list[str | None]
    labels: np.ndarray
    classes: list[str]
    inputs: np.ndarray
    kind: str
    name: str
    root: Path
    fingerprint: str
    metadata: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: list[dict] = field(default_factory=list)
    source: Path | None = None
    format: str | None = None
    decode: dict = field(default_factory=dict)
    stable_ids: bool = True

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.labels)
        if not (len(self.ids) == len(self.paths) == len(self.inputs) == n):
            raise DatasetError(f"{self.root}: ids, paths, inputs and labels differ in length")
        if n == 0:
            raise DatasetError(f"{self.root}: no examples found")
        present = np.unique(self.labels)
        if len(present) < 2:
            only = self.classes[int(present[0])] if len(present) else "?"
            raise DatasetError(f"{self.root}: only one class ({only!r}) found; need at least 2 classes")
        if len(set(self.ids)) != n:
            dup = pd.Series(self.ids)[pd.Series(self.ids).duplicated()].iloc[0]
            raise DatasetError(f"{self.root}: duplicate example id {dup!r}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def first_row(mask: np.ndarray) -> int:
    """1-based number of the first True row (the way a person counts the rows of a table)."""
    return int(np.flatnonzero(mask)[0]) + 1


def encode_labels(raw: pd.Series, where: str, classes: list[str] | None = None,
                  source: str = "") -> tuple[np.ndarray, list[str]]:
    """Map raw label values to indices. ``classes`` fixes the order; otherwise sorted unique values.

    ``where`` names the file and column (``"data.csv: column 'label'"``); ``source`` says where a
    given ``classes`` list came from. An empty label, or one outside ``classes``, names no class.
    """
    values = raw.astype(str)
    empty = (raw.isna() | (values.str.strip() == "")).to_numpy()
    if empty.any():
        raise DatasetError(f"{where} is empty in row {first_row(empty)}; every example needs a label")
    if classes is None:
        uniq = pd.unique(values)
        try:  # numeric labels sort numerically: "2" before "10"
            classes = sorted(uniq, key=float)
        except ValueError:
            classes = sorted(uniq)
    index = {c: i for i, c in enumerate(classes)}
    unknown = ~values.isin(list(index)).to_numpy()
    if unknown.any():
        row = first_row(unknown)
        listed = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        raise DatasetError(f"{where}: label {values.iloc[row - 1]!r} in row {row} names no class"
                           f"{' in ' + source if source else ''} (classes: {listed})")
    return values.map(index).to_numpy(np.int64), list(classes)
