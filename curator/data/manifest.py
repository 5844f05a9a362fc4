"""A manifest file: ``manifest.csv``/``.parquet`` with ``path`` (relative to the dataset) and ``label``.

Optional columns: ``id`` (else the path is the id), ``group``, ``split``, and any metadata columns,
which are kept for the spurious-attribute check. An optional ``classes.json`` (a JSON list of
names) or ``classes.txt`` (one name a line) beside the manifest fixes the classes and their order;
a label outside it, or an empty label, names no class and is an error.

The manifest is structure: a missing column, an empty cell in ``path``/``label``/``id``, a path that
escapes the dataset folder or does not exist, a duplicate id all stop with the file, column and row.
Only image files that exist but cannot be decoded follow ``on_error``.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..errors import DatasetError
from .cache import fingerprint
from .examples import Examples, encode_labels, first_row
from .images import decode_images, short_reason, warn_skipped

CLASS_FILES = ("classes.json", "classes.txt")


def read_frame(path: Path, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """The table at ``path``: .parquet, or .csv read as UTF-8 (a leading byte-order mark allowed).

    In a CSV only an empty cell is missing: ``NA``, ``null`` or ``nan`` are text (a class may be
    called "NA"), and ``text_columns`` stay text (labels "007" and "7" are two classes).
    """
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, encoding="utf-8-sig", dtype={c: str for c in text_columns},
                           keep_default_na=False, na_values=[""])
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                           "save it as UTF-8") from exc
    except Exception as exc:
        kind = path.suffix.lstrip(".")
        raise DatasetError(f"{path}: cannot be read as a {kind} table ({short_reason(exc)})") from exc


def safe_relative(path: str, where: Path) -> str:
    """Refuse paths that escape the dataset root (absolute, drive letters, UNC, any ``..``)."""
    text = str(path)
    posix = PurePosixPath(text.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (len(text) > 1 and text[1] == ":"):
        raise DatasetError(f"{where}: path {text!r} escapes the dataset folder; use paths relative to it")
    return posix.as_posix()


def read_classes(root: Path) -> tuple[list[str] | None, str]:
    """(class names, the file they came from) from ``classes.json``/``classes.txt`` in ``root``, if any."""
    found = [root / name for name in CLASS_FILES if (root / name).is_file()]
    if not found:
        return None, ""
    if len(found) > 1:
        raise DatasetError(f"{root}: both classes.json and classes.txt; keep one")
    path = found[0]
    try:
        text = path.read_text(encoding="utf-8-sig")
        names = json.loads(text) if path.suffix == ".json" else [line.strip() for line in text.splitlines()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read ({short_reason(exc)})") from exc
    if path.suffix == ".json" and not (isinstance(names, list) and all(isinstance(n, (str, int)) for n in names)):
        raise DatasetError(f"{path}: expected a JSON list of class names")
    names = [str(n) for n in names if str(n).strip()]
    dup = pd.Series(names)[pd.Series(names).duplicated()]
    if len(dup):
        raise DatasetError(f"{path}: class {dup.iloc[0]!r} is listed twice")
    if len(names) < 2:
        raise DatasetError(f"{path}: lists {len(names)} class(es); need at least 2")
    return names, path.name


def _text_column(frame: pd.DataFrame, column: str, manifest: Path) -> list[str]:
    """Column ``column`` as strings; an empty cell is an error naming its row."""
    values = frame[column]
    empty = (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
    if empty.any():
        raise DatasetError(f"{manifest}: column {column!r} is empty in row {first_row(empty)}")
    return values.astype(str).tolist()


def load_manifest(manifest: Path, *, label_column: str = "label", max_side: int = 64,
                  on_error: str = "skip", fit: str = "stretch") -> Examples:
    frame = read_frame(manifest, ("path", label_column, "id"))
    return examples_from_table(frame, manifest, label_column=label_column, max_side=max_side, on_error=on_error,
                               fit=fit)


def examples_from_table(frame: pd.DataFrame, manifest: Path, *, label_column: str = "label", max_side: int = 64,
                        on_error: str = "skip", fit: str = "stretch") -> Examples:
    """Image examples from a table with ``path`` (relative to the folder of ``manifest``, the file the
    table was read from, named in every error) and ``label_column``; optional ``id``, ``group`` and
    metadata columns. The one way every image-list format becomes :class:`Examples`: decoded once,
    fingerprinted, unreadable files skipped or fatal by ``on_error``."""
    root = manifest.parent
    for column in ("path", label_column):
        if column not in frame.columns:
            raise DatasetError(f"{manifest}: missing column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise DatasetError(f"{manifest}: no rows")
    rel_paths = [safe_relative(p, manifest) for p in _text_column(frame, "path", manifest)]
    missing = [i for i, p in enumerate(rel_paths) if not (root / p).is_file()]
    if missing:
        raise DatasetError(f"{manifest}: {len(missing)} path(s) in column 'path' do not exist, "
                           f"e.g. {rel_paths[missing[0]]!r} in row {missing[0] + 1}")
    classes, source = read_classes(root)
    labels, classes = encode_labels(frame[label_column], f"{manifest}: column {label_column!r}", classes, source)
    id_column = "id" if "id" in frame.columns else "path"
    ids = _text_column(frame, "id", manifest) if id_column == "id" else rel_paths
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        row = first_row(dup)
        raise DatasetError(f"{manifest}: duplicate id {ids[row - 1]!r} in column {id_column!r} (row {row})")
    inputs, kept, skipped, report = decode_images(root, rel_paths, max_side=max_side, on_error=on_error, fit=fit)
    warn_skipped(root, skipped)
    kept_labels = labels[kept]
    if not source:  # without a classes file, a class with no readable image is no class
        present = np.unique(kept_labels)
        classes, kept_labels = [classes[j] for j in present], np.searchsorted(present, kept_labels)
    metadata = frame.drop(columns=[c for c in ("path", label_column, "id") if c in frame.columns])
    metadata = metadata.iloc[kept].reset_index(drop=True)
    return Examples(ids=[ids[i] for i in kept], paths=[rel_paths[i] for i in kept], labels=kept_labels,
                    classes=classes, inputs=inputs, kind="image", name=root.name, root=root,
                    metadata=metadata, skipped=skipped, decode=report,
                    fingerprint=fingerprint([getattr(inputs, "filename", ""), kept_labels, ids, classes]))
