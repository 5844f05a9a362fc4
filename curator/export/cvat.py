"""CVAT "for images 1.1" XML: one ``<image>`` per flagged example with one ``<tag>``.

The tag's label is curator's suggestion (the given label where curator does not doubt it); its
attributes carry the given label, the most urgent issue and its score, so the CVAT team can filter on
them. Upload it with Actions > Upload annotations > "CVAT 1.1" into a task made from the same image
files: CVAT matches ``<image name>`` (the path relative to the dataset root, or the id for datasets
without files) to the task's images.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..atomic import atomic_path
from ..errors import ConfigError
from ..store import Run
from .images import ExampleImages
from .queue import ISSUES
from .xmltext import sub, to_bytes

# Tableau-like palette: distinct, readable colours for the label list, assigned in class order.
_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#bab0ac")


def _label_meta(labels: ET.Element, name: str, colour: str) -> None:
    label = sub(labels, "label")
    sub(label, "name", name)
    sub(label, "color", colour)
    sub(label, "type", "tag")
    attributes = sub(label, "attributes")
    for attr, input_type, default, values in (
            ("issue", "select", ISSUES[0], "\n".join(ISSUES)),
            ("given_label", "text", "", ""),
            ("curator_score", "number", "0", "0\n1\n0.0001")):
        a = sub(attributes, "attribute")
        sub(a, "name", attr)
        sub(a, "mutable", "False")
        sub(a, "input_type", input_type)
        sub(a, "default_value", default)
        sub(a, "values", values)


def annotations(run: Run, rows: pd.DataFrame) -> ET.Element:
    """The ``<annotations>`` tree for ``rows``, the flagged examples of ``run`` (most urgent first)."""
    images = ExampleImages(run)
    if not images.has_images:
        raise ConfigError(f"--to cvat: run {run.path} is over a {images.kind} dataset without images; use --to csv")
    images.require(rows["id"])
    fallback = run.manifest.get("dataset", {}).get("input_shape", [1, 0, 0])  # (C, H, W) of the cache

    root = ET.Element("annotations")
    sub(root, "version", "1.1")
    meta = sub(root, "meta")
    task = sub(meta, "task")
    sub(task, "id", 0)
    sub(task, "name", f"curator review {run.path.name}")
    sub(task, "size", len(rows))
    sub(task, "mode", "annotation")
    sub(task, "overlap", 0)
    sub(task, "flipped", "False")
    sub(task, "created", run.manifest.get("created", ""))
    labels = sub(task, "labels")
    for k, name in enumerate(run.classes):
        _label_meta(labels, name, _COLOURS[k % len(_COLOURS)])
    # The run's creation time, not now: the same run always exports the same bytes.
    sub(meta, "dumped", run.manifest.get("created", ""))

    for n, row in enumerate(rows.itertuples(index=False)):
        width, height = images.size(row.id) or (fallback[2], fallback[1])
        image = sub(root, "image", id=n, name=images.path(row.id) or row.id, width=width, height=height)
        tag = sub(image, "tag", label=row.suggested_label, source="auto")
        sub(tag, "attribute", row.issue, name="issue")
        sub(tag, "attribute", row.label, name="given_label")
        sub(tag, "attribute", f"{float(row.score):.4f}", name="curator_score")
    return root


def export_cvat(run: Run, rows: pd.DataFrame, out: Path, options: Mapping[str, object]) -> list[Path]:
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(to_bytes(annotations(run, rows)))
    return [out]
