"""The dataset-adapter record a plugin registers (a format for ``--format``), and the settings every
adapter's ``load`` receives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import ConfigError, PluginError
from .scorer import NAME_PATTERN

if TYPE_CHECKING:
    from .data.examples import Examples

ON_ERROR = ("skip", "fail")
FITS = ("stretch", "crop")


@dataclass(frozen=True)
class DatasetSettings:
    """How a dataset is read: ``--format``, ``--label-column``, ``--image-size``, ``--on-error``.

    format:       an adapter name, or ``auto`` (ask each adapter's ``detect``)
    label_column: the label column of a table or manifest
    image_size:   the largest side images are resized to, in pixels
    on_error:     ``skip`` an unreadable image file (listed in the manifest) or ``fail`` on it
    fit:          how an image becomes a square: ``stretch`` it, or ``crop`` (keep the aspect ratio,
                  take the centre; what pretrained backbones expect, and what a backbone run uses)
    """

    format: str = "auto"
    label_column: str = "label"
    image_size: int = 64
    on_error: str = "skip"
    fit: str = "stretch"

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"--on-error {self.on_error!r}: expected one of {', '.join(ON_ERROR)}")
        if self.fit not in FITS:
            raise ConfigError(f"fit {self.fit!r}: expected one of {', '.join(FITS)}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 8:
            raise ConfigError(f"--image-size {self.image_size!r}: expected an integer of at least 8 (pixels)")
        if not isinstance(self.label_column, str) or not self.label_column:
            raise ConfigError(f"--label-column {self.label_column!r}: expected a column name")


@dataclass(frozen=True)
class Adapter:
    """A dataset-adapter plugin.

    name:     what ``--format NAME`` selects (lower_snake_case)
    detect:   ``detect(path) -> Path | None``: the file or folder this adapter would read for the dataset
              path a user gave (``path`` itself, or a file inside it), or None when it does not read it.
              Cheap: look at names and headers, never decode the data
    load:     ``load(path, settings) -> curator.Examples``: read the dataset at the path ``detect``
              returned (or the user's path, with ``--format NAME``); ``settings`` is a
              :class:`DatasetSettings`. Errors a user can fix are :class:`curator.DatasetError` naming
              the file, column or row
    description: one line for ``curator plugins``
    priority: adapters with a higher priority are asked first by ``--format auto``; the built-ins use
              10 (manifest, table, arrays) and 0 (image folder, which takes any folder of folders), so a
              plugin's default of 50 is asked before them
    """

    name: str
    detect: Callable[[Path], Path | None]
    load: Callable[[Path, DatasetSettings], "Examples"]
    description: str = ""
    priority: int = 50

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name) or self.name == "auto":
            raise PluginError(f"adapter name {self.name!r}: use lower_snake_case, 1-48 characters, not 'auto'")
        for role in ("detect", "load"):
            if not callable(getattr(self, role)):
                raise PluginError(f"adapter {self.name!r}: {role} must be callable")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise PluginError(f"adapter {self.name!r}: priority must be an integer")
