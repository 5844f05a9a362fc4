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
#: What ``score_rows`` returns for R rows: a mapping of part name -> (R,) array.
RowParts = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Scorer:
    """A scorer plugin.

    name:      column name; the run gets ``score_<name>`` (and ``score_<extra>`` for extra columns)
    issue:     issue type(s) the main column informs: ``mislabeled``, ``outlier``, ``spurious``
    requires:  artifacts read from the context: ``dynamics``, ``oof``, ``embeddings``, ``knn``,
               ``checkpoints``, ``model``, ``inputs``
    score:     ``score(ctx) -> ScoreResult``, each array (N,) float, N = ``ctx.n_examples``; may be
               left out when ``score_rows`` is given (it is then ``finish(ctx, score_rows(ctx, all rows))``)
    direction: ``"higher"`` if a larger raw value is more suspicious, ``"lower"`` if a smaller one is;
               curator negates ``"lower"`` columns, so every ``score_*`` column reads higher = worse
    description: one line for ``curator plugins``
    extra_issues: issue types informed by extra columns, by column name (without ``score_``);
               extra columns not named here are reported but do not feed the flags
    options:   default option values; ``ctx.options`` holds them overlaid by the user's
               ``[scorers.<name>]`` table, and ``curator plugins`` lists them
    score_rows: optional, makes the scorer shardable: ``score_rows(ctx, rows) -> RowParts`` computes
               the per-example work for the example indices ``rows`` ((R,) int64, sorted), one (R,)
               array per part. A row's values must not depend on which other rows are asked for, so
               the rows can be split into shards scored anywhere (``--backend ray``) and gathered.
    finish:    optional, with ``score_rows``: ``finish(ctx, parts) -> ScoreResult`` turns the gathered
               parts ((N,) arrays in example order) into the columns, for what needs every row (a rank,
               a quantile). Without it the gathered parts are the columns.
    check_options: optional, ``check_options(options) -> None``: called with the scorer's options (the
               declared defaults overlaid by the user's ``[scorers.<name>]``) before any training, so a
               bad value stops the run at once; raise :class:`curator.ConfigError` (or ValueError) naming
               the option. Keys the scorer does not declare in ``options`` are refused before it is called.
    """

    name: str
    issue: tuple[str, ...]
    requires: tuple[str, ...]
    score: Callable[["ScoreContext"], ScoreResult] | None = None
    direction: str = "higher"
    description: str = ""
    extra_issues: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    options: Mapping[str, object] = field(default_factory=dict)
    score_rows: Callable[["ScoreContext", np.ndarray], RowParts] | None = None
    finish: Callable[["ScoreContext", RowParts], ScoreResult] | None = None
    check_options: Callable[[Mapping[str, object]], None] | None = None

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
        if self.score is None and self.score_rows is not None:
            object.__setattr__(self, "score", _WholeDataset(self.score_rows, self.finish))
        if not callable(self.score):
            raise PluginError(f"scorer {self.name!r}: score must be callable (or give score_rows)")
        for role in ("score_rows", "finish", "check_options"):
            if getattr(self, role) is not None and not callable(getattr(self, role)):
                raise PluginError(f"scorer {self.name!r}: {role} must be callable")
        if self.finish is not None and self.score_rows is None:
            raise PluginError(f"scorer {self.name!r}: finish needs score_rows")

    @property
    def shardable(self) -> bool:
        return self.score_rows is not None

    def finish_parts(self, ctx: "ScoreContext", parts: RowParts) -> ScoreResult:
        """The columns from parts gathered over every row (``finish``, or the parts themselves)."""
        return _finish(self.finish, ctx, parts)

    def column_issues(self) -> dict[str, tuple[str, ...]]:
        """Issue types per column name (main column first) that feed the flags."""
        return {self.name: self.issue, **{col: tuple(kinds) for col, kinds in self.extra_issues.items()}}


@dataclass(frozen=True)
class _WholeDataset:
    """``score`` of a shardable scorer: every row in one shard. A class, not a closure, so the
    scorer record pickles (worker processes receive it)."""

    score_rows: Callable
    finish: Callable | None

    def __call__(self, ctx: "ScoreContext") -> ScoreResult:
        return _finish(self.finish, ctx, self.score_rows(ctx, np.arange(ctx.n_examples, dtype=np.int64)))


def _finish(finish: Callable | None, ctx: "ScoreContext", parts: RowParts) -> ScoreResult:
    return finish(ctx, parts) if finish is not None else dict(parts)
