"""What goes to the labelling team: one row per flagged example, most urgent first."""

from __future__ import annotations

import pandas as pd

from ..errors import ConfigError
from ..store import Run, review_queue

ISSUES = ("mislabeled", "outlier", "spurious")
ISSUE_CHOICES = (*ISSUES, "all")


def check_issue(issue: str) -> str:
    if issue not in ISSUE_CHOICES:
        raise ConfigError(f"--issue {issue!r}: expected one of {', '.join(ISSUE_CHOICES)}")
    return issue


def flagged_examples(run: Run, issue: str = "all") -> pd.DataFrame:
    """The review queue folded to one row per example, so a reviewer sees each example once.

    Columns: id, path, label (given), suggested_label, issue (the most urgent one), issues (all of
    them, most urgent first, comma-separated), score (of the most urgent issue, 0..1, higher = worse),
    reasons. Rows are ordered by score, highest first. ``issue`` other than ``"all"`` keeps only
    examples flagged for that issue.
    """
    check_issue(issue)
    # review_queue.parquet, not the CSV: the CSV loses the string type of ids such as "007". It is the
    # queue the run wrote (without the examples a nightly run knows were reviewed); runs of older
    # versions without it are recomputed from scores.parquet.
    written = run.path / "review_queue.parquet"
    queue = pd.read_parquet(written) if written.is_file() else review_queue(run.scores)
    if issue != "all":
        queue = queue[queue["issue"] == issue]
    issues = queue.groupby("id", sort=False)["issue"].agg(", ".join)
    first = queue.drop_duplicates("id", keep="first").reset_index(drop=True)
    first.insert(first.columns.get_loc("issue") + 1, "issues", first["id"].map(issues))
    return first
