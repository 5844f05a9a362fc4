"""The plugin contract. One hook namespace (``curator``) and one entry-point group (``curator``).

A plugin is any module or object with functions marked ``@curator.hookimpl``. Installed packages
are discovered through the ``curator`` entry-point group; the built-in scorers, exporters and dataset
adapters register that way too. Every hook is a verb that hands the plugin a ``register`` callback;
curator calls each plugin's hooks once each time it collects plugins (``curator score``,
``curator export``, ``curator plugins``, ...), through the plugin manager. A plugin that implements a
hook not listed here (a misspelt name) or with other arguments is reported by name and skipped.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("curator")
hookimpl = pluggy.HookimplMarker("curator")


@hookspec
def register_scorers(register: Callable) -> None:
    """Register scorers by calling ``register(curator.Scorer(...))`` once per scorer.

    ``register`` takes one :class:`curator.Scorer`; scorer names must be unique across all
    installed plugins, and a duplicate is an error naming both packages. Return nothing.
    """


@hookspec
def register_exporters(register: Callable) -> None:
    """Register exporters by calling ``register(curator.Exporter(...))`` once per labelling tool or file format.

    An exporter's ``name`` is what ``curator export --to NAME`` selects; its ``write`` receives the run,
    its flagged examples (one row per example, most urgent first) and the output path. Names must be
    unique across all installed plugins. Return nothing.
    """


@hookspec
def register_adapters(register: Callable) -> None:
    """Register dataset adapters by calling ``register(curator.Adapter(...))`` once per dataset format.

    An adapter's ``name`` is what ``--format NAME`` selects; with ``--format auto`` its ``detect`` is
    asked whether it reads the given path (adapters with a higher ``priority`` are asked first), and
    its ``load`` returns :class:`curator.Examples`. Names must be unique. Return nothing.
    """
