"""The plugin manager: every scorer, exporter and dataset adapter, built-in or third-party, discovered
through the ``curator`` entry-point group and collected through the hooks of :mod:`curator.hookspecs`.

``CURATOR_PLUGINS`` (comma-separated entry-point names) loads only those plugins (curator's own
formats, the entry points ``adapters`` and ``exporters``, always load); ``CURATOR_DISABLE_PLUGINS``
loads all but those. A plugin that fails to import, implements a hook that does not exist (a misspelt
name) or a hook with the wrong arguments, or raises in a hook, is skipped with a warning and
recorded in :attr:`PluginRegistry.errors` by plugin and package; it never stops the tool unless
``strict`` is asked for.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Iterable, Union

import pluggy

from . import hookspecs
from .adapter import Adapter
from .errors import PluginError
from .exporter import Exporter
from .scorer import Scorer

ENTRY_POINT_GROUP = "curator"
#: curator's own adapters and exporters: loaded whatever ``CURATOR_PLUGINS`` says (the deny list can drop them).
CORE_PLUGINS = ("adapters", "exporters")
#: hook name -> (record type, the registry's table, what one record is called)
HOOKS = {"register_scorers": (Scorer, "scorers", "scorer"),
         "register_exporters": (Exporter, "exporters", "exporter"),
         "register_adapters": (Adapter, "adapters", "adapter")}

Record = Union[Scorer, Exporter, Adapter]


@dataclass(frozen=True)
class Registered:
    """A scorer, exporter or adapter record together with the plugin and package it came from."""

    record: Record
    plugin: str
    package: str
    version: str

    @property
    def scorer(self) -> Scorer:
        return self.record

    def describe(self) -> dict:
        r = self.record
        if isinstance(r, Scorer):
            own = {"name": r.name, "issue": list(r.issue), "requires": list(r.requires), "direction": r.direction,
                   "description": r.description, "options": dict(r.options)}
        elif isinstance(r, Exporter):
            own = {"name": r.name, "default_file": r.default_file, "description": r.description,
                   "options": dict(r.options)}
        else:
            own = {"name": r.name, "priority": r.priority, "description": r.description}
        return {**own, "plugin": self.plugin, "package": self.package, "version": self.version}


@dataclass
class PluginRegistry:
    """Everything the plugins registered, by name, and every plugin that was skipped and why.

    errors: ``{"plugin", "package", "hook", "error"}`` per skipped plugin (``hook`` is None when the
    plugin failed to import). Indexing and ``in`` look up scorers.
    """

    scorers: dict[str, Registered] = field(default_factory=dict)
    exporters: dict[str, Registered] = field(default_factory=dict)
    adapters: dict[str, Registered] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)

    def __getitem__(self, name: str) -> Registered:
        return self.scorers[name]

    def __contains__(self, name: str) -> bool:
        return name in self.scorers

    def names(self) -> list[str]:
        """Scorer names, in registration order."""
        return list(self.scorers)

    def records(self, table: str) -> dict[str, Record]:
        """name -> record of ``table`` (``scorers``, ``exporters`` or ``adapters``)."""
        return {name: entry.record for name, entry in getattr(self, table).items()}

    def describe(self) -> dict:
        """What ``curator plugins --json`` prints."""
        return {table: [entry.describe() for entry in getattr(self, table).values()]
                for table in ("scorers", "exporters", "adapters")} | {"errors": list(self.errors)}


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name, "").strip()
    return {v.strip() for v in value.split(",") if v.strip()} if value else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Collector:
    """Loads plugins into one pluggy manager, keeps where each came from, and records what it skips."""

    def __init__(self, strict: bool):
        self.pm = pluggy.PluginManager("curator")
        self.pm.add_hookspecs(hookspecs)
        self.registry = PluginRegistry()
        self.origin: dict[str, tuple[str, str, str]] = {}      # pluggy name -> (plugin, package, version)
        self.strict = strict

    def skip(self, plugin: str, package: str, hook: str | None, error: str) -> None:
        where = f"failed in {hook}" if hook else "failed to import"
        message = f"plugin {plugin!r} from {package} {where} and is skipped: {error}"
        if self.strict:
            raise PluginError(message)
        warnings.warn(message, stacklevel=3)
        self.registry.errors.append({"plugin": plugin, "package": package, "hook": hook, "error": error})

    def add(self, plugin: object, name: str, origin: tuple[str, str, str]) -> None:
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            hook = re.search(r"for hook '(\w+)'", str(exc))
            self.skip(origin[0], origin[1], hook.group(1) if hook else None, _one_line(exc))
            return
        self.origin[name] = origin

    def drop_unknown_hooks(self) -> None:
        """Plugins implementing a hook curator does not have (``register_scorer``) are skipped by name;
        then nothing is left for pluggy's own ``check_pending``."""
        for hook_name, caller in list(vars(self.pm.hook).items()):
            if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook or not self.pm.is_registered(impl.plugin):
                    continue
                plugin, package, _ = self.origin[impl.plugin_name]
                near = difflib.get_close_matches(hook_name, list(HOOKS), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else f" (hooks: {', '.join(HOOKS)})"
                self.skip(plugin, package, hook_name, f"unknown hook {hook_name!r}{hint}")
                self.pm.unregister(impl.plugin)
                del self.origin[impl.plugin_name]
        self.pm.check_pending()

    def collect(self, hook: str) -> None:
        """Call ``hook`` through the manager once per plugin (so a failure and each record are
        attributed to the plugin that made them) and file the records."""
        kind, table, noun = HOOKS[hook]
        found = getattr(self.registry, table)
        plugins = {name: self.pm.get_plugin(name) for name in self.origin}
        for name, plugin in plugins.items():
            others = [p for n, p in plugins.items() if n != name]
            caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
            if not caller.get_hookimpls():
                continue
            source = self.origin[name]

            def register(record: Record, _from=source) -> None:
                if not isinstance(record, kind):
                    raise PluginError(f"plugin {_from[0]!r} ({_from[1]}) registered {type(record).__name__}, "
                                      f"not a curator.{kind.__name__}")
                if record.name in found:
                    other = found[record.name]
                    raise PluginError(f"{noun} name {record.name!r} is registered twice: by {other.package} "
                                      f"(plugin {other.plugin!r}) and by {_from[1]} (plugin {_from[0]!r})")
                found[record.name] = Registered(record, *_from)

            try:
                caller(register=register)
            except PluginError:
                raise                     # a contract breach (duplicate name, bad record) names its culprit
            except Exception as exc:
                self.skip(source[0], source[1], hook, f"{type(exc).__name__}: {exc}")


def load_plugins(extra_plugins: Iterable[object] = (), *, entry_points_enabled: bool = True,
                 strict: bool = False) -> PluginRegistry:
    """Collect the scorers, exporters and adapters of the ``curator`` entry points (filtered by the
    env lists) and of ``extra_plugins`` (plugin objects registered for this call only: tests,
    notebooks). ``strict`` makes any skipped plugin a :class:`PluginError`."""
    collector = _Collector(strict)
    allow, deny = _env_list("CURATOR_PLUGINS"), _env_list("CURATOR_DISABLE_PLUGINS")
    if entry_points_enabled:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            package = dist.metadata["Name"] if dist else "?"
            version = dist.version if dist else "?"
            core = ep.name in CORE_PLUGINS and package == "curator"
            if (allow is not None and ep.name not in allow and not core) or (deny and ep.name in deny):
                continue
            if collector.pm.has_plugin(ep.name):
                continue  # the same entry point seen twice (editable + regular install)
            try:
                plugin = ep.load()
            except Exception as exc:
                collector.skip(ep.name, package, None, f"{type(exc).__name__}: {exc}")
                continue
            collector.add(plugin, ep.name, (ep.name, package, version))
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        collector.add(plugin, f"{name}-{id(plugin)}", (name, getattr(plugin, "__module__", None) or "local", "local"))
    collector.drop_unknown_hooks()
    for hook in HOOKS:
        collector.collect(hook)
    return collector.registry
