"""The run directory: a stable contract that batch jobs read.

RUN/manifest.json, scores.parquet, oof_probs.npy, classes.json, review_queue.csv, artifacts/.
A run is built in ``RUN.partial/`` and renamed to ``RUN`` only once complete, so ``RUN`` either
does not exist or holds a finished run.
"""

from __future__ import annotations

import json
import shutil
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import RunError

RUN_FILES = ("manifest.json", "scores.parquet", "oof_probs.npy", "classes.json", "review_queue.csv")
ISSUE_COLUMNS = ("is_mislabeled", "is_outlier", "is_spurious", "mislabeled_score", "outlier_score",
                 "spurious_score", "suggested_label", "reasons")
BASE_COLUMNS = ("id", "path", "label", "fold")


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def prepare(out: Path) -> Path:
    """Check ``out`` is free and return a fresh staging folder for it."""
    if out.exists():
        raise RunError(f"--out {out}: already exists; choose another run directory")
    staging = partial_dir(out)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, out: Path) -> None:
    staging.rename(out)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


class Run:
    """A finished run directory. ``scores`` is one row per example (see README: run directory)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        missing = [f for f in RUN_FILES if not (self.path / f).exists()]
        if missing:
            raise RunError(f"{self.path}: not a complete curator run (missing {', '.join(missing)})")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    @cached_property
    def scores(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "scores.parquet")

    @cached_property
    def classes(self) -> list[str]:
        return json.loads((self.path / "classes.json").read_text())

    @cached_property
    def oof_probs(self) -> np.ndarray:
        """(N, C) float32 out-of-fold probabilities, rows in ``scores`` order."""
        return np.load(self.path / "oof_probs.npy")

    @cached_property
    def review_queue(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "review_queue.csv")

    @property
    def score_columns(self) -> list[str]:
        return [c for c in self.scores.columns if c.startswith("score_")]


def review_queue(scores: pd.DataFrame) -> pd.DataFrame:
    """Flagged examples, most urgent first: one row per (example, issue)."""
    parts = []
    for issue in ("mislabeled", "outlier", "spurious"):
        rows = scores[scores[f"is_{issue}"]]
        parts.append(pd.DataFrame({
            "id": rows["id"], "path": rows["path"], "label": rows["label"],
            "suggested_label": rows["suggested_label"], "issue": issue,
            "score": rows[f"{issue}_score"], "reasons": rows["reasons"]}))
    queue = pd.concat(parts, ignore_index=True)
    return queue.sort_values(["score", "issue", "id"], ascending=[False, True, True], kind="stable").reset_index(drop=True)
