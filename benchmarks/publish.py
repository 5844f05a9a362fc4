"""Where every benchmark's Markdown table goes: its results file, and the terminal."""

from __future__ import annotations

from pathlib import Path


def publish(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (making its folder) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
