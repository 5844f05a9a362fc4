"""Dataset adapters: image folder, manifest (csv/parquet), table (csv/parquet), arrays (npz)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DatasetError
from .arrays import load_arrays
from .examples import Examples
from .imagefolder import load_image_folder
from .images import ON_ERROR
from .manifest import load_manifest
from .table import load_table

FORMATS = ("auto", "imagefolder", "manifest", "table", "arrays")
TABLE_SUFFIXES = (".csv", ".parquet")


def detect_format(path: Path) -> tuple[str, Path]:
    """(format, file or folder to read) for a dataset path."""
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "arrays", path
        if path.suffix.lower() in TABLE_SUFFIXES:
            return ("manifest" if path.stem == "manifest" else "table"), path
        raise DatasetError(f"{path}: not a dataset file (expected .npz, .csv, .parquet or a folder)")
    for name in ("manifest.parquet", "manifest.csv"):
        if (path / name).is_file():
            return "manifest", path / name
    if any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        return "imagefolder", path
    tables = [p for p in sorted(path.iterdir()) if p.suffix.lower() in TABLE_SUFFIXES + (".npz",)]
    if len(tables) == 1:
        return detect_format(tables[0])
    raise DatasetError(f"{path}: empty or unrecognised dataset folder (expected <class>/<image> folders, "
                       "a manifest.csv, one table or one .npz)")


def load_dataset(path: str | Path, *, format: str = "auto", label_column: str = "label",
                 max_side: int = 64, on_error: str = "skip") -> Examples:
    """Read a dataset in any supported layout; see ``detect_format`` for the rules.

    ``on_error``: an image file that cannot be read is left out and listed in ``Examples.skipped``
    (``"skip"``) or stops with a DatasetError naming it (``"fail"``). Structural problems (a missing
    column, an empty label, a path that escapes the dataset, duplicate ids, one class) always stop.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"--on-error {on_error!r}: expected one of {', '.join(ON_ERROR)}")
    if not isinstance(max_side, int) or max_side < 8:
        raise ConfigError(f"--image-size {max_side!r}: expected an integer of at least 8 (pixels)")
    path = source = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: dataset path does not exist")
    if format not in FORMATS:
        raise DatasetError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    if format == "auto":
        format, path = detect_format(path)
    elif path.is_dir() and format in ("manifest", "table", "arrays"):
        _, path = detect_format(path)
    if format == "imagefolder":
        if not path.is_dir():
            raise DatasetError(f"{path}: --format imagefolder needs a folder")
        examples = load_image_folder(path, max_side=max_side, on_error=on_error)
    elif format == "manifest":
        examples = load_manifest(path, label_column=label_column, max_side=max_side, on_error=on_error)
    elif format == "table":
        examples = load_table(path, label_column=label_column)
    else:
        examples = load_arrays(path)
    examples.source = source
    return examples


__all__ = ["Examples", "FORMATS", "detect_format", "load_dataset"]
