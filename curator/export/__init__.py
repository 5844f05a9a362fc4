"""Exporters: a run's flagged examples in the formats labelling teams import. Each format is a
:class:`curator.Exporter` registered through the ``register_exporters`` hook (the built-ins in
:mod:`curator.export.builtin`: Label Studio, CVAT, CSV), and :func:`export` runs one.

    from curator.export import export
    export(run, "labelstudio")          # RUN/labelstudio.json + RUN/labelstudio.config.xml
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..errors import ConfigError, nearest
from ..exporter import Exporter
from ..store import Run
from .queue import ISSUE_CHOICES, check_issue, flagged_examples


def installed_exporters() -> dict[str, Exporter]:
    from ..plugins import load_plugins

    return load_plugins().records("exporters")


def exporter_options(exporter: Exporter, given: Mapping[str, object]) -> dict[str, object]:
    """The exporter's declared options overlaid by ``given``; an undeclared key is an error naming it."""
    for key in given:
        if key not in exporter.options:
            known = ", ".join(exporter.options) or "none"
            raise ConfigError(f"--option {key}: --to {exporter.name} has no option {key!r}"
                              f"{nearest(key, exporter.options)} (options: {known})")
    return {**exporter.options, **given}


def export(run: Run | str | Path, to: str, out: str | Path | None = None, issue: str = "all", *,
           options: Mapping[str, object] | None = None, dataset_root: str | Path | None = None,
           exporters: Mapping[str, Exporter] | None = None) -> list[Path]:
    """Write the flagged examples of ``run`` with the exporter called ``to``; returns the files written.

    to: an installed exporter (``labelstudio``, ``cvat``, ``csv``, or a plugin's). issue:
    ``mislabeled``, ``outlier``, ``spurious`` or ``all``. options: the exporter's options
    (``{"image_root": ...}`` for Label Studio, see ``curator.export.labelstudio``). dataset_root: the
    dataset's folder when it moved after the run (see :class:`Run`). exporters: name -> Exporter
    (default: every installed one).
    """
    exporters = exporters if exporters is not None else installed_exporters()
    if to not in exporters:
        raise ConfigError(f"--to {to!r}: no such exporter{nearest(to, exporters)} "
                          f"(exporters: {', '.join(sorted(exporters))})")
    exporter = exporters[to]
    merged = exporter_options(exporter, dict(options or {}))
    check_issue(issue)
    run = run if isinstance(run, Run) else Run(run, dataset_root)
    out = Path(out) if out is not None else exporter.default_out(run.path, issue)
    written = exporter.write(run, flagged_examples(run, issue), out, merged)
    return [Path(p) for p in written]


__all__ = ["ISSUE_CHOICES", "export", "exporter_options", "flagged_examples", "installed_exporters"]
