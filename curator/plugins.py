"""The plugin manager: built-ins and third-party scorers, all discovered through entry points.

``CURATOR_PLUGINS`` (comma-separated entry-point names) loads only those plugins;
``CURATOR_DISABLE_PLUGINS`` loads all but those. A plugin that fails to import is skipped with a
warning and recorded; it never stops the tool.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Iterable

import pluggy

from . import hookspecs
from .errors import PluginError
from .scorer import Scorer

ENTRY_POINT_GROUP = "curator"


@dataclass(frozen=True)
class RegisteredScorer:
    """A scorer together with where it came from."""

    scorer: Scorer
    plugin: str
    package: str
    version: str

    def describe(self) -> dict:
        s = self.scorer
        return {"name": s.name, "issue": list(s.issue), "requires": list(s.requires), "direction": s.direction,
                "description": s.description, "options": dict(s.options), "plugin": self.plugin, "package": self.package,
                "version": self.version}


@dataclass
class ScorerRegistry:
    """Every scorer found, by name, and the plugins that could not be loaded."""

    scorers: dict[str, RegisteredScorer] = field(default_factory=dict)
    load_errors: list[dict] = field(default_factory=list)

    def __getitem__(self, name: str) -> RegisteredScorer:
        return self.scorers[name]

    def __contains__(self, name: str) -> bool:
        return name in self.scorers

    def names(self) -> list[str]:
        return list(self.scorers)


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name, "").strip()
    return {v.strip() for v in value.split(",") if v.strip()} if value else None


def _plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("curator")
    pm.add_hookspecs(hookspecs)
    return pm


def load_scorers(extra_plugins: Iterable[object] = (), *, entry_points_enabled: bool = True) -> ScorerRegistry:
    """Collect scorers from the ``curator`` entry points (filtered by the env lists) and ``extra_plugins``.

    ``extra_plugins`` are plugin objects registered for this call only (tests, notebooks).
    """
    pm = _plugin_manager()
    registry = ScorerRegistry()
    origin: dict[str, tuple[str, str, str]] = {}
    allow, deny = _env_list("CURATOR_PLUGINS"), _env_list("CURATOR_DISABLE_PLUGINS")
    if entry_points_enabled:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if (allow is not None and ep.name not in allow) or (deny and ep.name in deny):
                continue
            if pm.has_plugin(ep.name):
                continue  # the same entry point seen twice (editable + regular install)
            dist = getattr(ep, "dist", None)
            package = dist.metadata["Name"] if dist else "?"
            version = dist.version if dist else "?"
            try:
                plugin = ep.load()
            except Exception as exc:
                warnings.warn(f"plugin {ep.name!r} from {package} failed to import and is skipped: "
                              f"{type(exc).__name__}: {exc}", stacklevel=2)
                registry.load_errors.append({"plugin": ep.name, "package": package, "error": f"{type(exc).__name__}: {exc}"})
                continue
            pm.register(plugin, name=ep.name)
            origin[ep.name] = (ep.name, package, version)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        pm.register(plugin, name=f"{name}-{id(plugin)}")
        origin[pm.get_name(plugin)] = (name, getattr(plugin, "__module__", None) or "local", "local")

    for impl in pm.hook.register_scorers.get_hookimpls():
        plugin_name, package, version = origin.get(impl.plugin_name, (impl.plugin_name, "?", "?"))

        def register(scorer: Scorer, _from=(plugin_name, package, version)) -> None:
            if not isinstance(scorer, Scorer):
                raise PluginError(f"plugin {_from[0]!r} ({_from[1]}) registered {type(scorer).__name__}, not a curator.Scorer")
            if scorer.name in registry.scorers:
                other = registry.scorers[scorer.name]
                raise PluginError(f"scorer name {scorer.name!r} is registered twice: by {other.package} "
                                  f"(plugin {other.plugin!r}) and by {_from[1]} (plugin {_from[0]!r})")
            registry.scorers[scorer.name] = RegisteredScorer(scorer, *_from)

        try:
            impl.function(register=register) if "register" in impl.argnames else impl.function()
        except PluginError:
            raise                     # a contract breach (duplicate name, bad record) names its culprit
        except Exception as exc:
            warnings.warn(f"plugin {plugin_name!r} from {package} failed in register_scorers and is skipped: "
                          f"{type(exc).__name__}: {exc}", stacklevel=2)
            registry.load_errors.append({"plugin": plugin_name, "package": package,
                                         "error": f"register_scorers: {type(exc).__name__}: {exc}"})
    return registry
