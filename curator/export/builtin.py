"""The built-in exporters, registered through the ``register_exporters`` hook like any plugin's:
``labelstudio``, ``cvat`` and ``csv``."""

from __future__ import annotations

from ..exporter import Exporter
from ..hookspecs import hookimpl
from .csvfile import export_csv
from .cvat import export_cvat
from .labelstudio import export_labelstudio

BUILTIN_EXPORTERS = (
    Exporter("labelstudio", "labelstudio.json", export_labelstudio,
             "Label Studio import tasks (suggestion as a prediction) + the labelling config beside them",
             options={"image_root": None}),
    Exporter("cvat", "cvat.xml", export_cvat, "CVAT for images 1.1: one tag per image (the suggested label)"),
    Exporter("csv", "review.csv", export_csv,
             "a spreadsheet with empty decision/label columns to fill in and feed back through `curator apply`"),
)


@hookimpl
def register_exporters(register) -> None:
    for exporter in BUILTIN_EXPORTERS:
        register(exporter)
