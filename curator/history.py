"""Runs that follow each other: a nightly run linked to the run before it (``--previous``), the team's
reviews carried from run to run, and what changed between two runs (``curator diff``).

A run's ``reviews.csv`` is the review history it knows: the previous run's ``reviews.csv`` updated by
the previous run's ``changes.csv`` (what ``curator apply``/``pull`` wrote after the team reviewed its
queue), the latest decision per id winning. So a review stays known over many nights, and a run
scored with ``--previous`` marks those examples ``reviewed`` and keeps them out of its queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import RunError
from .store import Run

ISSUES = ("mislabeled", "outlier", "spurious")
REVIEW_COLUMNS = ("id", "decision", "old_label", "new_label", "who", "when", "run")
HISTORY_COLUMNS = ("is_new", "previously_flagged", "reviewed", "review_decision")


def flagged(scores: pd.DataFrame) -> pd.Series:
    """(N,) bool by row: flagged for any issue."""
    return scores[[f"is_{issue}" for issue in ISSUES]].any(axis=1)


def open_previous(path: str | Path) -> Run:
    """The finished run ``--previous`` names; anything else is an error naming it."""
    try:
        return Run(path)
    except RunError as exc:
        raise RunError(f"--previous {path}: {exc}") from None


def carried_reviews(previous: Run) -> pd.DataFrame:
    """The review history after ``previous``: its ``reviews.csv`` updated by its ``changes.csv``; one
    row per id (columns REVIEW_COLUMNS), the latest decision winning."""
    parts = []
    known = previous.path / "reviews.csv"
    if known.is_file():
        parts.append(pd.read_csv(known, dtype=str, keep_default_na=False))
    changes = previous.path / "changes.csv"
    if changes.is_file():
        new = pd.read_csv(changes, dtype=str, keep_default_na=False)
        parts.append(new.assign(run=str(previous.manifest.get("run_id", previous.path.name))))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in REVIEW_COLUMNS})
    history = pd.concat(parts, ignore_index=True).reindex(columns=list(REVIEW_COLUMNS), fill_value="")
    return history.drop_duplicates("id", keep="last").reset_index(drop=True)


@dataclass
class Linked:
    """What linking a run to the one before gives: the history columns of scores.parquet, the carried
    reviews (written as the new run's reviews.csv) and the counts recorded in ``manifest.json``."""

    columns: pd.DataFrame                          # N rows: HISTORY_COLUMNS
    reviews: pd.DataFrame                          # REVIEW_COLUMNS
    counts: dict = field(default_factory=dict)


def link_previous(scores: pd.DataFrame, previous: Run) -> Linked:
    """Compare this run's ``scores`` (id + is_<issue> columns) with ``previous`` and carry its reviews."""
    before = previous.scores.set_index("id")
    ids = scores["id"]
    is_new = ~ids.isin(before.index)
    was_flagged = ids.map(flagged(before.reset_index()).set_axis(before.index)).fillna(False).astype(bool)
    reviews = carried_reviews(previous)
    decision = ids.map(reviews.set_index("id")["decision"]).fillna("")
    columns = pd.DataFrame({"is_new": is_new.to_numpy(), "previously_flagged": was_flagged.to_numpy(),
                            "reviewed": (decision != "").to_numpy(), "review_decision": decision.to_numpy()})
    now_flagged = flagged(scores).to_numpy()
    counts = {
        "new": int(is_new.sum()),
        "removed": int((~before.index.isin(ids)).sum()),
        "reviewed": int(columns["reviewed"].sum()),
        "newly_flagged": int((now_flagged & ~was_flagged.to_numpy()).sum()),
        "no_longer_flagged": int((~now_flagged & was_flagged.to_numpy()).sum()),
    }
    return Linked(columns, reviews, counts)


def unreviewed_queue(queue: pd.DataFrame, scores: pd.DataFrame, review_again_above: float | None) -> pd.DataFrame:
    """``queue`` without the examples the team already reviewed, except those whose queue ``score``
    reaches ``review_again_above`` (None: never asked again), which stay with a reason saying so."""
    decision = queue["id"].map(scores.set_index("id")["review_decision"]).fillna("")
    again = (decision != "") & (review_again_above is not None) & (
        queue["score"] >= (review_again_above if review_again_above is not None else np.inf))
    kept = queue[(decision == "") | again].copy()
    note = "; reviewed before (" + decision[again] + "), asked again: score >= " + f"{review_again_above}"
    kept.loc[again[again].index, "reasons"] = kept.loc[again[again].index, "reasons"] + note
    return kept.reset_index(drop=True)


@dataclass
class RunDiff:
    """What changed from run ``old`` to run ``new``: ids per kind of change."""

    old: str
    new: str
    newly_flagged: list[str]
    no_longer_flagged: list[str]
    suggested_label_changed: list[str]
    new_examples: list[str]
    removed_examples: list[str]

    KINDS = ("newly_flagged", "no_longer_flagged", "suggested_label_changed", "new_examples", "removed_examples")

    def counts(self) -> dict[str, int]:
        return {kind: len(getattr(self, kind)) for kind in self.KINDS}

    def to_dict(self) -> dict:
        return {"old": self.old, "new": self.new, "counts": self.counts(),
                **{kind: getattr(self, kind) for kind in self.KINDS}}


def diff_runs(old: Run, new: Run) -> RunDiff:
    """Flags and suggestions of ``new`` against ``old``, matched by example id. "Suggested label
    changed" counts examples flagged in both runs whose suggestion differs."""
    a, b = old.scores.set_index("id"), new.scores.set_index("id")
    common = b.index.intersection(a.index, sort=False)
    fa, fb = flagged(a.reset_index()).set_axis(a.index), flagged(b.reset_index()).set_axis(b.index)
    both = common[fa[common].to_numpy() & fb[common].to_numpy()]
    return RunDiff(
        old=str(old.path), new=str(new.path),
        newly_flagged=[i for i in common if fb[i] and not fa[i]] + [i for i in b.index.difference(a.index, sort=False) if fb[i]],
        no_longer_flagged=[i for i in common if fa[i] and not fb[i]],
        suggested_label_changed=[i for i in both if a.at[i, "suggested_label"] != b.at[i, "suggested_label"]],
        new_examples=list(b.index.difference(a.index, sort=False)),
        removed_examples=list(a.index.difference(b.index, sort=False)),
    )
