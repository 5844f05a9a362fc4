"""The backend protocol (:class:`Backend`) and the gatherer of sharded scorer parts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from ..engine.folds import ArtifactSink, FoldJob
from ..errors import PluginError

if TYPE_CHECKING:
    from ..context import ScoreContext
    from ..scorer import RowParts, Scorer


class Backend(ABC):
    """Trains the folds of a :class:`FoldJob` and hands their results to the driver's sink."""

    name: str

    def start(self, device: torch.device) -> torch.device:
        """Get ready (connect to a cluster, ...); set and return :attr:`fold_device`, the device type
        the folds train on (it picks the batch size). ``device`` is the driver's."""
        self.fold_device = device
        return device

    @abstractmethod
    def train_folds(self, todo: Sequence[int], job: FoldJob, sink: ArtifactSink,
                    progress: Callable[..., object] | None) -> Iterator[dict]:
        """Train folds ``todo``; yield each fold's log once its results are in ``sink``, in any order."""

    def score_rows(self, scorer: "Scorer", ctx: "ScoreContext",
                   progress: Callable[..., object] | None) -> "RowParts | None":
        """The parts of a shardable ``scorer`` gathered over every row ((N,) arrays in example order),
        computed here or elsewhere; or None: the driver calls ``scorer.score(ctx)`` itself."""
        return None

    def stop(self) -> None:
        """Release what :meth:`start` took."""

    def describe(self) -> dict:
        """What the manifest records under ``config.backend``."""
        return {"name": self.name}


class PartsGatherer:
    """Puts the ``score_rows`` parts of a scorer's shards, as they come in, into (N,) arrays."""

    def __init__(self, scorer: "Scorer", n_examples: int):
        self.scorer, self.n = scorer, n_examples
        self.parts: dict[str, np.ndarray] = {}

    def add(self, rows: np.ndarray, parts: "RowParts") -> None:
        parts = {name: np.asarray(values) for name, values in parts.items()}
        name = self.scorer.name
        self.parts = self.parts or {part: np.empty(self.n, dtype=values.dtype) for part, values in parts.items()}
        if set(parts) != set(self.parts):
            raise PluginError(f"scorer {name!r}: score_rows returned parts {sorted(parts)} for one shard "
                              f"and {sorted(self.parts)} for another")
        for part, values in parts.items():
            if values.shape != (len(rows),):
                raise PluginError(f"scorer {name!r}: score_rows part {part!r} has shape {values.shape} "
                                  f"for {len(rows)} rows")
            self.parts[part][rows] = values
