"""The exporter record a plugin registers: a labelling tool or file format for ``curator export --to``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from .errors import PluginError
from .scorer import NAME_PATTERN

if TYPE_CHECKING:
    import pandas as pd

    from .store import Run


@dataclass(frozen=True)
class Exporter:
    """An exporter plugin.

    name:         what ``curator export --to NAME`` selects (lower_snake_case)
    default_file: the file written in the run directory when no ``--out`` is given
                  (``labelstudio.json``); with ``--issue X`` the stem gets ``-X`` (``labelstudio-outlier.json``)
    write:        ``write(run, rows, out, options) -> list[Path]``: write the flagged examples ``rows`` of
                  ``run`` (:class:`curator.Run`) to ``out`` (and any files beside it) and return every path
                  written, ``out`` first. ``rows`` is a DataFrame, one row per flagged example, most urgent
                  first, with columns id, path, label (given), suggested_label, issue (the most urgent),
                  issues (all, comma-separated), score (0..1, higher = worse), reasons.
                  Write atomically (``curator.atomic.write_text`` and friends): a failed export leaves no
                  half-written file.
    description:  one line for ``curator plugins``
    options:      default option values; ``curator export --option KEY=VALUE`` overrides them (an unknown
                  key is an error naming it), and ``write`` receives them merged
    """

    name: str
    default_file: str
    write: Callable[["Run", "pd.DataFrame", Path, Mapping[str, object]], list[Path]]
    description: str = ""
    options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise PluginError(f"exporter name {self.name!r}: use lower_snake_case, 1-48 characters")
        if not isinstance(self.default_file, str) or not self.default_file or Path(self.default_file).name != self.default_file:
            raise PluginError(f"exporter {self.name!r}: default_file {self.default_file!r} must be a plain file name")
        if not callable(self.write):
            raise PluginError(f"exporter {self.name!r}: write must be callable")

    def default_out(self, run_path: Path, issue: str = "all") -> Path:
        """RUN/<default_file>, with ``-<issue>`` before the suffix when one issue is exported."""
        name = Path(self.default_file)
        return run_path / (name.name if issue == "all" else f"{name.stem}-{issue}{name.suffix}")
