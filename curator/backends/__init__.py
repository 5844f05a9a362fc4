"""Where the fold proxies train and the shardable scorers run.

``local`` does everything in this process, one fold after another; ``ray`` runs each fold as a Ray
task on whichever machine of a Ray cluster has room (a GPU when the cluster has GPUs), and splits
the rows of each shardable scorer (:attr:`curator.Scorer.score_rows`) into shards scored as Ray
tasks. Either way this process, the driver, reads the dataset and writes every file of the run
directory: a backend only decides where :func:`curator.engine.training._train_fold` and
``score_rows`` run, a fold depends only on (seed, k) and a row's parts only on that row, so every
backend gives the same run.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError, PluginError

if TYPE_CHECKING:
    from ..context import ScoreContext
    from ..engine.inputs import Normalizer
    from ..engine.models import ModelSpec
    from ..engine.training import ArtifactSink, TrainConfig
    from ..scorer import RowParts, Scorer

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class FoldJob:
    """Everything a fold proxy trains from; fold k's result depends only on this and k."""

    folds: np.ndarray            # (N,) int, the fold each example is held out in
    config: "TrainConfig"        # resolved for the device the folds train on
    spec: "ModelSpec"
    normalizer: "Normalizer"
    inputs: np.ndarray           # (N, C, H, W) uint8 or (N, D) float32 (its object-store ref on Ray)
    labels: np.ndarray           # (N,) int64


class Backend(ABC):
    """Trains the folds of a :class:`FoldJob` and hands their results to the driver's sink."""

    name: str

    def start(self, device: torch.device) -> torch.device:
        """Get ready (connect to a cluster, ...); set and return :attr:`fold_device`, the device type
        the folds train on (it picks the batch size). ``device`` is the driver's."""
        self.fold_device = device
        return device

    @abstractmethod
    def train_folds(self, todo: Sequence[int], job: FoldJob, sink: "ArtifactSink",
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


def get_backend(name: str = "local", address: str | None = None) -> Backend:
    """The backend called ``name`` (``local`` or ``ray``); ``address`` is the Ray cluster, ray only."""
    if name not in BACKENDS:
        raise ConfigError(f"--backend {name!r}: expected one of {', '.join(BACKENDS)}")
    if name == "local":
        if address:
            raise ConfigError(f"--address {address}: a cluster address needs --backend ray")
        from .local import LocalBackend
        return LocalBackend()
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--backend ray: Ray is not installed; pip install 'curator[ray]'")
    from .ray import RayBackend
    return RayBackend(address)


__all__ = ["BACKENDS", "Backend", "FoldJob", "PartsGatherer", "get_backend"]
