"""``curator apply``: the labelling team's answers -> a corrected manifest and a change log.

Reviews come as Label Studio's JSON export of a project fed by ``curator export --to labelstudio``
(tasks with ``data.curator_id`` and ``annotations[].result[].value.choices``), or as a CSV with
columns ``id, decision, label`` (decision: relabel | remove | keep; an empty decision means "not
reviewed yet"; optional ``who``/``when`` columns; other columns, such as those of
``curator export --to csv``, are ignored).

Nothing is changed in place: the dataset and the run stay as they are. The outputs depend only on
the run and the reviews, so applying the same reviews again writes the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .atomic import write_csv
from .errors import CuratorError
from .export.csvfile import ENCODING, restore
from .export.labelstudio import DECISION, LABEL, REMOVE
from .store import Run

DECISIONS = ("relabel", "remove", "keep")
CHANGE_COLUMNS = ("id", "old_label", "new_label", "decision", "who", "when")


class ReviewError(CuratorError):
    """A reviews file cannot be applied to the run (unknown id or class, bad decision, bad format)."""


@dataclass(frozen=True)
class Review:
    id: str
    decision: str           # relabel | remove | keep
    label: str | None       # the new class for relabel, else None
    who: str = ""
    when: str = ""


def _who(completed_by: object) -> str:
    """Label Studio writes ``completed_by`` as a user id, or as a user object in some exports."""
    if isinstance(completed_by, dict):
        for key in ("email", "username", "id"):
            if completed_by.get(key) not in (None, ""):
                return str(completed_by[key])
        return ""
    return "" if completed_by is None else str(completed_by)


def _latest(annotations: list) -> dict | None:
    """The last submitted (not skipped) annotation, by updated_at then created_at."""
    done = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))


def read_labelstudio(path: Path, given: dict[str, str]) -> list[Review]:
    """Reviews from Label Studio's JSON export; ``given``: id -> the run's label of that id."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReviewError(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(tasks, list):
        raise ReviewError(f"{path}: expected Label Studio's JSON export (a list of tasks), got {type(tasks).__name__}")
    reviews = []
    for n, task in enumerate(tasks):
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or "curator_id" not in data:
            raise ReviewError(f"{path}: task {n + 1} has no data.curator_id; export the tasks with "
                              "`curator export --to labelstudio` and Label Studio's JSON (not JSON-MIN) format")
        example_id = str(data["curator_id"])
        annotation = _latest(task.get("annotations") or [])
        if annotation is None:
            continue  # not reviewed yet
        chosen, remove = None, False
        for item in annotation.get("result") or []:
            choices = (item.get("value") or {}).get("choices") or []
            if item.get("from_name") == DECISION and REMOVE in choices:
                remove = True
            elif item.get("from_name") == LABEL and choices:
                chosen = str(choices[0])
        old = given.get(example_id)
        if remove:
            decision, label = "remove", None
        elif chosen is None or chosen == old:
            decision, label = "keep", None
        else:
            decision, label = "relabel", chosen
        reviews.append(Review(example_id, decision, label, _who(annotation.get("completed_by")),
                              str(annotation.get("updated_at") or annotation.get("created_at") or "")))
    return reviews


def read_csv_reviews(path: Path) -> list[Review]:
    """Reviews from a CSV with id, decision, label (+ optional who, when)."""
    try:
        # Everything as text: ids like "007" and classes like "NA" must survive.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=ENCODING)
    except Exception as exc:
        raise ReviewError(f"{path}: cannot be read as CSV ({exc})") from exc
    missing = [c for c in ("id", "decision", "label") if c not in frame.columns]
    if missing:
        raise ReviewError(f"{path}: missing column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})")
    reviews = []
    for n, row in enumerate(frame.itertuples(index=False), start=2):  # line 1 is the header
        decision = row.decision.strip().lower()
        if not decision:
            continue  # not reviewed yet
        if decision not in DECISIONS:
            raise ReviewError(f"{path}: line {n}: decision {row.decision!r} is not one of {', '.join(DECISIONS)}")
        label = restore(row.label) if decision == "relabel" else None  # keep/remove: label column ignored
        reviews.append(Review(restore(row.id), decision, label or None, getattr(row, "who", ""),
                              getattr(row, "when", "")))
    return reviews


def read_reviews(path: str | Path, run: Run) -> list[Review]:
    """Reviews from ``path`` (.json: Label Studio export; anything else: CSV), checked against ``run``."""
    path = Path(path)
    if not path.is_file():
        raise ReviewError(f"{path}: reviews file does not exist")
    given = dict(zip(run.scores["id"], run.scores["label"]))
    reviews = read_labelstudio(path, given) if path.suffix.lower() == ".json" else read_csv_reviews(path)
    classes = set(run.classes)
    seen = set()
    for r in reviews:
        if r.id not in given:
            raise ReviewError(f"{path}: id {r.id!r} is not an example of run {run.path}")
        if r.id in seen:
            raise ReviewError(f"{path}: id {r.id!r} is reviewed more than once")
        seen.add(r.id)
        if r.decision == "relabel" and r.label is None:
            raise ReviewError(f"{path}: id {r.id!r}: relabel without a label")
        if r.label is not None and r.label not in classes:
            shown = ", ".join(repr(c) for c in run.classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise ReviewError(f"{path}: label {r.label!r} for id {r.id!r} names no class (classes: {shown})")
    return reviews


def apply_reviews(run: Run | str | Path, reviews: str | Path, out: str | Path | None = None,
                  changes: str | Path | None = None) -> tuple[Path, Path]:
    """Write the corrected manifest (default RUN/corrected_manifest.csv: id, path, label of every
    example the team did not remove, relabels applied, in the run's order) and the change log (default
    RUN/changes.csv: id, old_label, new_label, decision, who, when, one row per reviewed example).
    Returns (manifest path, changes path)."""
    run = run if isinstance(run, Run) else Run(run)
    by_id = {r.id: r for r in read_reviews(reviews, run)}
    scores = run.scores
    manifest_rows, change_rows = [], []
    for example_id, path, label in zip(scores["id"], scores["path"], scores["label"]):
        review = by_id.get(example_id)
        new = label if review is None or review.decision == "keep" else review.label
        if review is not None:
            change_rows.append((example_id, label, new or "", review.decision, review.who, review.when))
        if new is not None:
            manifest_rows.append((example_id, path if isinstance(path, str) else "", new))
    out = Path(out) if out is not None else run.path / "corrected_manifest.csv"
    changes = Path(changes) if changes is not None else out.with_name("changes.csv")
    write_csv(out, pd.DataFrame(manifest_rows, columns=["id", "path", "label"]))
    write_csv(changes, pd.DataFrame(change_rows, columns=list(CHANGE_COLUMNS)))
    return out, changes
