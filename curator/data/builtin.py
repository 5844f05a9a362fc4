"""The built-in dataset adapters, registered through the ``register_adapters`` hook like any plugin's:
``manifest``, ``table``, ``arrays`` and ``imagefolder``."""

from __future__ import annotations

from pathlib import Path

from ..adapter import Adapter, DatasetSettings
from ..errors import DatasetError
from ..hookspecs import hookimpl
from .arrays import load_arrays
from .imagefolder import load_image_folder
from .manifest import load_manifest
from .table import load_table

TABLE_SUFFIXES = (".csv", ".parquet")
MANIFEST_NAMES = ("manifest.parquet", "manifest.csv")


def detect_manifest(path: Path) -> Path | None:
    if path.is_file():
        return path if path.name.lower() in MANIFEST_NAMES else None
    return next((path / name for name in MANIFEST_NAMES if (path / name).is_file()), None)


def detect_table(path: Path) -> Path | None:
    return path if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES and path.stem != "manifest" else None


def detect_arrays(path: Path) -> Path | None:
    return path if path.is_file() and path.suffix.lower() == ".npz" else None


def detect_image_folder(path: Path) -> Path | None:
    if path.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        return path
    return None


def _image_folder(path: Path, settings: DatasetSettings):
    if not path.is_dir():
        raise DatasetError(f"{path}: --format imagefolder needs a folder")
    return load_image_folder(path, max_side=settings.image_size, on_error=settings.on_error, fit=settings.fit)


BUILTIN_ADAPTERS = (
    Adapter("manifest", detect_manifest,
            lambda path, s: load_manifest(path, label_column=s.label_column, max_side=s.image_size,
                                          on_error=s.on_error, fit=s.fit),
            "manifest.csv|parquet with path (relative to its folder) and label; optional id, group, metadata",
            priority=10),
    Adapter("table", detect_table, lambda path, s: load_table(path, label_column=s.label_column),
            "a CSV/Parquet table with a label column and numeric feature columns", priority=10),
    Adapter("arrays", detect_arrays, lambda path, s: load_arrays(path),
            "an .npz with X (N, ...) and y (N,); optional classes, ids", priority=10),
    Adapter("imagefolder", detect_image_folder, _image_folder,
            "DATASET/<class>/<image>: the class is the folder name", priority=0),
)


@hookimpl
def register_adapters(register) -> None:
    for adapter in BUILTIN_ADAPTERS:
        register(adapter)
