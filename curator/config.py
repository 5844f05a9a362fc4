"""``curator.toml``: defaults for ``curator score``, per-scorer options and flag thresholds.

    [score]                 # any option of `curator score`, e.g. folds, epochs, device, scorers
    epochs = 6
    [scorers.early_learning]
    beta = 0.8
    [flags]
    max_flag_rate = 0.3
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import ConfigError

SECTIONS = ("score", "train", "scorers", "flags")


def load_config(path: str | Path | None) -> dict:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from exc
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"--config {path}: unknown section [{unknown[0]}] (known: {', '.join(SECTIONS)})")
    return data
