"""The scorer record a plugin registers: what it is, what it needs, and how to call it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Union

import numpy as np

from .errors import PluginError

if TYPE_CHECKING:
    from .context import ScoreContext

ISSUES = ("mislabeled", "outlier", "spurious")
ARTIFACTS = ("dynamics", "oof", "embeddings", "knn", "checkpoints", "model", "inputs")
DIRECTIONS = ("higher", "lower")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

#: What ``score`` returns: one (N,) array, or a mapping of column name -> (N,) array whose first
#: entry is the scorer's main column (named after the scorer) and the others extra columns.
ScoreResult = Union[np.ndarray, Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Scorer:
    """A scorer plugin.

    name:      column name; the run gets ``score_<name>`` (and ``score_<extra>`` for extra columns)
    issue:     issue type(s) the main column informs: ``mislabeled``, ``outlier``, ``spurious``
    requires:  artifacts read from the context: ``dynamics``, ``oof``, ``embeddings``, ``knn``,
               ``checkpoints``, ``model``, ``inputs``
    score:     ``score(ctx) -> ScoreResult``, each array (N,) float, N = ``ctx.n_examples``
    direction: ``"higher"`` if a larger raw value is more suspicious, ``"lower"`` if a smaller one is;
               curator negates ``"lower"`` columns, so every ``score_*`` column reads higher = worse
    description: one line for ``curator plugins``
    extra_issues: issue types informed by extra columns, by column name (without ``score_``);
               extra columns not named here are reported but do not feed the flags
    options:   default option values; ``ctx.options`` holds them overlaid by the user's
               ``[scorers.<name>]`` table, and ``curator plugins`` lists them
    """

    name: str
    issue: tuple[str, ...]
    requires: tuple[str, ...]
    score: Callable[["ScoreContext"], ScoreResult]
    direction: str = "higher"
    description: str = ""
    extra_issues: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        issue = (self.issue,) if isinstance(self.issue, str) else tuple(self.issue)
        requires = (self.requires,) if isinstance(self.requires, str) else tuple(self.requires)
        object.__setattr__(self, "issue", issue)
        object.__setattr__(self, "requires", requires)
        if not NAME_PATTERN.match(self.name):
            raise PluginError(f"scorer name {self.name!r}: use lower_snake_case, 1-48 characters")
        for value in issue + tuple(v for kinds in self.extra_issues.values() for v in kinds):
            if value not in ISSUES:
                raise PluginError(f"scorer {self.name!r}: issue {value!r} is not one of {', '.join(ISSUES)}")
        for value in requires:
            if value not in ARTIFACTS:
                raise PluginError(f"scorer {self.name!r}: requires {value!r} is not one of {', '.join(ARTIFACTS)}")
        if self.direction not in DIRECTIONS:
            raise PluginError(f"scorer {self.name!r}: direction {self.direction!r} is not 'higher' or 'lower'")
        if not callable(self.score):
            raise PluginError(f"scorer {self.name!r}: score must be callable")

    def column_issues(self) -> dict[str, tuple[str, ...]]:
        """Issue types per column name (main column first) that feed the flags."""
        return {self.name: self.issue, **{col: tuple(kinds) for col, kinds in self.extra_issues.items()}}
