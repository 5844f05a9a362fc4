"""Errors a user can cause. Each carries a one-line message naming the file, column or option."""

from __future__ import annotations

import difflib
from typing import Iterable


def nearest(name: str, known: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest of ``known`` to a mistyped ``name``, or an empty string."""
    near = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


class CuratorError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""

    exit_code = 2


class DatasetError(CuratorError):
    """The dataset cannot be read as given (missing path, no classes, bad column, ...)."""


class ConfigError(CuratorError):
    """An option or configuration value is invalid."""


class PluginError(CuratorError):
    """A plugin breaks the contract (duplicate scorer name, bad record, failure in strict mode)."""


class RunError(CuratorError):
    """A run directory is missing, incomplete or locked."""
