"""The plugin contract. One hook namespace (``curator``) and one entry-point group (``curator``).

A plugin is any module or object with functions marked ``@curator.hookimpl``. Installed packages
are discovered through the ``curator`` entry-point group; the built-in scorers register that way too.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("curator")
hookimpl = pluggy.HookimplMarker("curator")


@hookspec
def register_scorers(register: Callable) -> None:
    """Register scorers by calling ``register(curator.Scorer(...))`` once per scorer.

    Called once each time curator collects scorers (``curator score``, ``curator plugins``).
    ``register`` takes one :class:`curator.Scorer`; scorer names must be unique across all
    installed plugins, and a duplicate is an error naming both packages. Return nothing.
    """
