"""Dataset adapters: each format is an :class:`curator.Adapter` registered through the
``register_adapters`` hook (the built-ins in :mod:`curator.data.builtin`: image folder, manifest,
table, arrays), and :func:`load_dataset` picks one."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..adapter import Adapter, DatasetSettings
from ..errors import ConfigError, DatasetError, nearest
from .examples import Examples
from .manifest import examples_from_table


def _by_priority(adapters: Mapping[str, Adapter]) -> list[Adapter]:
    return sorted(adapters.values(), key=lambda a: (-a.priority, a.name))


def _installed_adapters() -> dict[str, Adapter]:
    from ..plugins import load_plugins

    return {name: entry.record for name, entry in load_plugins().adapters.items()}


def _single_data_file(folder: Path, adapters: Mapping[str, Adapter]) -> tuple[Adapter, Path] | None:
    """A folder that holds exactly one file some adapter reads (``data/digits.npz``): that file."""
    if not folder.is_dir():
        return None
    found = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            for adapter in _by_priority(adapters):
                hit = adapter.detect(p)
                if hit is not None:
                    found.append((adapter, hit))
                    break
    return found[0] if len(found) == 1 else None


def detect_format(path: str | Path, adapters: Mapping[str, Adapter] | None = None) -> tuple[str, Path]:
    """(adapter name, the file or folder it reads) for a dataset path: the first adapter, by priority,
    whose ``detect`` accepts it; else the one data file inside a folder."""
    path = Path(path)
    adapters = adapters if adapters is not None else _installed_adapters()
    for adapter in _by_priority(adapters):
        hit = adapter.detect(path)
        if hit is not None:
            return adapter.name, Path(hit)
    inside = _single_data_file(path, adapters)
    if inside is not None:
        return inside[0].name, Path(inside[1])
    names = ", ".join(a.name for a in _by_priority(adapters)) or "none installed"
    if path.is_file():
        raise DatasetError(f"{path}: not a dataset file any adapter reads (formats: {names}); set --format")
    raise DatasetError(f"{path}: empty or unrecognised dataset folder (expected <class>/<image> folders, "
                       f"a manifest.csv, one table or one .npz; formats: {names})")


def check_format(name: str, adapters: Mapping[str, Adapter]) -> Adapter | None:
    """The adapter called ``name`` (None for ``auto``); an unknown name is an error naming the nearest."""
    if name == "auto":
        return None
    if name not in adapters:
        raise ConfigError(f"--format {name!r}: no such dataset format (formats: auto, "
                          f"{', '.join(sorted(adapters))}){nearest(name, adapters)}")
    return adapters[name]


def load_dataset(path: str | Path, settings: DatasetSettings | None = None, *,
                 adapters: Mapping[str, Adapter] | None = None, **options) -> Examples:
    """Read a dataset with the adapter ``settings.format`` names, or the one that detects it (``auto``).

    ``options`` are :class:`DatasetSettings` fields (``format``, ``label_column``, ``image_size``,
    ``on_error``) when no ``settings`` is given. ``adapters``: name -> :class:`curator.Adapter`
    (default: every installed one). ``on_error``: an image file that cannot be read is left out and
    listed in ``Examples.skipped`` (``"skip"``) or stops with a DatasetError naming it (``"fail"``).
    Structural problems (a missing column, an empty label, a path that escapes the dataset,
    duplicate ids, one class) always stop.
    """
    if settings is None:
        try:
            settings = DatasetSettings(**options)
        except TypeError as exc:
            raise ConfigError(f"load_dataset: {exc}") from exc
    elif options:
        raise ConfigError(f"load_dataset: give settings or {', '.join(options)}, not both")
    adapters = adapters if adapters is not None else _installed_adapters()
    adapter = check_format(settings.format, adapters)
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: dataset path does not exist")
    if adapter is None:
        name, target = detect_format(path, adapters)
        adapter = adapters[name]
    else:
        hit = adapter.detect(path)
        inside = _single_data_file(path, {adapter.name: adapter}) if hit is None else None
        target = Path(hit) if hit is not None else (Path(inside[1]) if inside else path)
    examples = adapter.load(target, settings)
    if not isinstance(examples, Examples):
        raise DatasetError(f"{path}: adapter {adapter.name!r} returned {type(examples).__name__}, not curator.Examples")
    examples.source = path
    examples.format = adapter.name
    return examples


__all__ = ["DatasetSettings", "Examples", "check_format", "detect_format", "examples_from_table", "load_dataset"]
