"""Progress bars on stderr; silent when stderr is not a terminal (batch jobs keep clean logs)."""

from __future__ import annotations

import sys
from typing import Iterable

from tqdm.auto import tqdm


def progress_bar(iterable: Iterable, *, desc: str = "", total: int | None = None, unit: str = "it") -> Iterable:
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, file=sys.stderr,
                disable=not sys.stderr.isatty(), dynamic_ncols=True)
