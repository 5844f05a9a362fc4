"""CSV for spreadsheets: one row per flagged example, worst first, with class names.

Columns: id, path, given_label, suggested_label, issue, issues, score, reasons, decision, label.
``decision`` is left empty and ``label`` holds the suggestion: the team writes relabel, remove or
keep (and corrects ``label`` where needed), and the same file goes back in through ``curator apply``.

Written as UTF-8 with a byte-order mark so spreadsheet programs read non-ASCII names correctly.
Cells that a spreadsheet would run as a formula (starting with ``= + - @``, a tab or a carriage
return) get one leading apostrophe, the usual guard; ``restore`` removes it again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..atomic import atomic_path
from ..store import Run

COLUMNS = ("id", "path", "given_label", "suggested_label", "issue", "issues", "score", "reasons", "decision", "label")
ENCODING = "utf-8-sig"

# Apostrophes already in front are counted in, so defuse/restore is a bijection on all strings.
_FORMULA = re.compile(r"^'*[=+\-@\t\r]")


def defuse(text: str) -> str:
    return "'" + text if _FORMULA.match(text) else text


def restore(text: str) -> str:
    return text[1:] if text.startswith("'") and _FORMULA.match(text[1:]) else text


def review_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The spreadsheet for ``rows``, the flagged examples of a run (most urgent first)."""
    table = rows.rename(columns={"label": "given_label"}).assign(
        path=rows["path"].fillna(""), score=rows["score"].astype(float).round(4), decision="",
        label=rows["suggested_label"])
    table = table[list(COLUMNS)]
    text = [c for c in COLUMNS if c != "score"]
    table[text] = table[text].astype(str).map(defuse)
    return table


def export_csv(run: Run, rows: pd.DataFrame, out: Path, options: Mapping[str, object]) -> list[Path]:
    out = Path(out)
    with atomic_path(out) as tmp:
        review_table(rows).to_csv(tmp, index=False, encoding=ENCODING)
    return [out]
