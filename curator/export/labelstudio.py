"""Label Studio: a JSON list of import tasks plus the labelling config (XML) to paste into the project.

Each task is one flagged example. ``data`` holds the image reference and what the reviewer needs
(given label, suggested label, issue, score, reasons, a one-line summary); the suggested label is a
``predictions`` entry, so Label Studio pre-selects it. Prediction ``score`` is ``1 - issue score``:
Label Studio shows the lowest prediction score first when sorting by it, so the worst example comes
first. Tasks are also written worst first, so the default order by task id agrees.

Image references (``image_root``):

- ``None``: ``/data/local-files/?d=<dataset folder name>/<path>``: Label Studio's local-files
  serving with ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` set to the folder that *holds* the dataset
  folder (and a Local Files storage for the dataset folder in the project);
- a URL (``scheme://...``): ``<image_root>/<path>``, e.g. where the dataset is served over HTTP
  or stored in a bucket;
- any other string: ``/data/local-files/?d=<image_root>/<path>``, the dataset's location
  relative to the document root.

Paths are percent-encoded (``quote``), so quotes, ``#``, ``?``, spaces and non-ASCII survive.
Examples without a file (arrays) carry the picture itself as a PNG data URI.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping
from urllib.parse import quote

import pandas as pd

from .. import __version__
from ..atomic import write_text
from ..errors import ConfigError
from ..store import Run
from .images import ExampleImages, png_data_uri
from .xmltext import sub, to_bytes

# Names in the labelling config; the tasks' predictions and ``curator apply`` use the same ones.
IMAGE = "image"          # <Image name> and the data key holding the image reference
LABEL = "label"          # <Choices name> of the class
DECISION = "decision"    # <Choices name> of the remove choice
REMOVE = "remove"
SUMMARY = "summary"      # <Text name> and data key of the one-line explanation

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def image_reference(path: str, dataset_name: str, image_root: str | None) -> str:
    """The URL Label Studio loads ``path`` (relative to the dataset root) from; see the module doc."""
    if image_root is not None and _URL.match(image_root):
        return image_root.rstrip("/") + "/" + quote(path, safe="/")
    prefix = dataset_name if image_root is None else image_root.strip("/")
    return "/data/local-files/?d=" + quote(f"{prefix}/{path}" if prefix else path, safe="/")


def labelling_config(classes: list[str]) -> str:
    """The ``<View>`` for Settings > Labeling Interface > Code: the image, curator's summary, one
    choice per class (pre-selected from the prediction) and a separate 'remove' choice."""
    view = ET.Element("View")
    sub(view, "Image", name=IMAGE, value=f"${IMAGE}", zoom="true")
    sub(view, "Header", value="curator: given label, suggestion and why")
    sub(view, "Text", name=SUMMARY, value=f"${SUMMARY}")
    sub(view, "Header", value="Correct label")
    choices = sub(view, "Choices", name=LABEL, toName=IMAGE, choice="single-radio", showInline="true")
    for name in classes:
        sub(choices, "Choice", value=name)
    sub(view, "Header", value="Or take the example out of the dataset")
    decision = sub(view, "Choices", name=DECISION, toName=IMAGE, choice="single")
    sub(decision, "Choice", value=REMOVE)
    # No XML declaration: Label Studio (1.23.2) answers HTTP 500 to a config that has one.
    return to_bytes(view, declaration=False).decode("utf-8")


def tasks(run: Run, rows: pd.DataFrame, image_root: str | None = None) -> list[dict]:
    """One Label Studio import task per row of ``rows`` (flagged examples of ``run``, as
    :func:`curator.export.queue.flagged_examples` gives them), in their order."""
    images = ExampleImages(run)
    if not images.has_images:
        raise ConfigError(f"--to labelstudio: run {run.path} is over a {images.kind} dataset without images; "
                          "use --to csv")
    dataset_name = images.root.name
    model_version = f"curator {run.manifest.get('curator_version', __version__)} {run.path.name}"
    images.require(rows["id"])
    out = []
    for n, row in enumerate(rows.itertuples(index=False)):
        path = images.path(row.id)
        if path is not None:
            reference = image_reference(path, dataset_name, image_root)
        else:
            img = images.image(row.id)
            reference = png_data_uri(img) if img is not None else ""
        score = round(float(row.score), 4)
        summary = f"given {row.label} \u2192 suggested {row.suggested_label} | {row.issues} {score:.3f} | {row.reasons}"
        out.append({
            "data": {IMAGE: reference, "curator_id": row.id, "path": path or "", "given_label": row.label,
                     "suggested_label": row.suggested_label, "issue": row.issue, "issues": row.issues,
                     "score": score, "reasons": row.reasons, SUMMARY: summary},
            "predictions": [{
                "model_version": model_version,
                "score": round(1.0 - score, 4),
                "result": [{"id": f"curator-{n}", "from_name": LABEL, "to_name": IMAGE, "type": "choices",
                            "value": {"choices": [row.suggested_label]}}],
            }],
        })
    return out


def export_labelstudio(run: Run, rows: pd.DataFrame, out: Path, options: Mapping[str, object]) -> list[Path]:
    """Write ``out`` (tasks JSON) and ``out`` with suffix ``.config.xml`` beside it; returns both paths.
    ``options["image_root"]``: how Label Studio reaches the images (see the module doc)."""
    out = Path(out)
    config = out.with_name(out.stem + ".config.xml")
    write_text(out, json.dumps(tasks(run, rows, options.get("image_root")), ensure_ascii=False, indent=1) + "\n")
    write_text(config, labelling_config(run.classes))
    return [out, config]
