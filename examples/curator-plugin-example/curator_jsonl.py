"""A dataset format for curator: JSON Lines, one example per line.

    {"path": "images/cat_001.jpg", "label": "cat"}
    {"path": "images/dog_007.jpg", "label": "dog", "id": "dog-7", "camera": "B"}

``path`` is relative to the folder of the ``.jsonl`` file; ``label`` is the class; ``id`` and any other
keys are optional (other keys become metadata columns, which curator checks for shortcuts). Use it with
``curator score data/dataset.jsonl`` (detected by its suffix) or ``--format jsonl``.
"""

from pathlib import Path

import pandas as pd

import curator
from curator.data import examples_from_table


def detect_jsonl(path: Path) -> Path | None:
    """The .jsonl file itself, or the one dataset.jsonl inside a folder."""
    if path.is_file():
        return path if path.suffix.lower() == ".jsonl" else None
    candidate = path / "dataset.jsonl"
    return candidate if candidate.is_file() else None


def load_jsonl(path: Path, settings: curator.DatasetSettings) -> curator.Examples:
    try:
        frame = pd.read_json(path, lines=True, dtype=False)
    except ValueError as exc:
        raise curator.DatasetError(f"{path}: not JSON Lines ({exc})") from exc
    for column in ("path", "label"):
        if column in frame.columns:
            frame[column] = frame[column].astype(str)
    return examples_from_table(frame, path, label_column=settings.label_column, max_side=settings.image_size,
                               on_error=settings.on_error)


@curator.hookimpl
def register_adapters(register):
    register(curator.Adapter(
        name="jsonl",
        detect=detect_jsonl,
        load=load_jsonl,
        description="JSON Lines: one {\"path\", \"label\"[, \"id\", metadata...]} object per line",
    ))
