"""Where every benchmark's Markdown table goes: its results file, and the terminal; and the cell format
of a figure over seeds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


def mean_std(values) -> str:
    """"0.586 ± 0.007" over several values, "0.586" for one."""
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def code_version() -> str:
    """The commit the benchmark ran on (``-dirty`` with uncommitted changes), or "unknown" outside git."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def publish(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (making its folder), with the commit it came from, and print it."""
    text = text.rstrip("\n") + f"\n\nCode: commit `{code_version()}`.\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
