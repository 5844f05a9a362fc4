"""Exporters: a run's flagged examples in the formats labelling teams import. One module per format.

    from curator.export import export
    export(run, "labelstudio")          # RUN/labelstudio.json + RUN/labelstudio.config.xml
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..store import Run
from .csvfile import export_csv
from .cvat import export_cvat
from .labelstudio import export_labelstudio
from .queue import ISSUE_CHOICES, check_issue, flagged_examples

FORMATS = ("labelstudio", "cvat", "csv")
DEFAULT_NAMES = {"labelstudio": "labelstudio.json", "cvat": "cvat.xml", "csv": "review.csv"}


def default_out(run: Run, to: str, issue: str = "all") -> Path:
    """RUN/labelstudio.json, RUN/cvat.xml or RUN/review.csv; ``-<issue>`` before the suffix when
    only one issue is exported (RUN/cvat-outlier.xml)."""
    name = Path(DEFAULT_NAMES[to])
    return run.path / (name.name if issue == "all" else f"{name.stem}-{issue}{name.suffix}")


def export(run: Run | str | Path, to: str, out: str | Path | None = None, issue: str = "all",
           image_root: str | None = None, dataset_root: str | Path | None = None) -> list[Path]:
    """Write the flagged examples of ``run`` for a labelling tool; returns the files written.

    to: ``labelstudio`` (tasks JSON + labelling config XML beside it), ``cvat`` (CVAT for images 1.1
    XML) or ``csv``. issue: ``mislabeled``, ``outlier``, ``spurious`` or ``all``. image_root: how
    Label Studio reaches the images (see ``curator.export.labelstudio``); other formats ignore it.
    dataset_root: the dataset's folder when it moved after the run (see :class:`Run`).
    """
    run = run if isinstance(run, Run) else Run(run, dataset_root)
    if to not in FORMATS:
        raise ConfigError(f"--to {to!r}: expected one of {', '.join(FORMATS)}")
    check_issue(issue)
    out = Path(out) if out is not None else default_out(run, to, issue)
    if to == "labelstudio":
        return export_labelstudio(run, out, issue, image_root)
    if to == "cvat":
        return export_cvat(run, out, issue)
    return export_csv(run, out, issue)


__all__ = ["FORMATS", "ISSUE_CHOICES", "default_out", "export", "export_csv", "export_cvat", "export_labelstudio",
           "flagged_examples"]
