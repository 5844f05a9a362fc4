"""Where the fold proxies train.

``local`` trains them one after another in this process; ``ray`` runs each fold as a Ray task on
whichever machine of a Ray cluster has room (a GPU when the cluster has GPUs). Either way this
process, the driver, reads the dataset, writes every file of the run directory and runs the
scorers: a backend only decides where :func:`curator.engine.training._train_fold` runs, and a fold
depends only on (seed, k), so every backend gives the same run.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..engine.inputs import Normalizer
    from ..engine.models import ModelSpec
    from ..engine.training import ArtifactSink, TrainConfig

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class FoldJob:
    """Everything a fold proxy trains from; fold k's result depends only on this and k."""

    folds: np.ndarray            # (N,) int, the fold each example is held out in
    config: "TrainConfig"        # resolved for the device the folds train on
    spec: "ModelSpec"
    normalizer: "Normalizer"
    inputs: np.ndarray           # (N, C, H, W) uint8 or (N, D) float32
    labels: np.ndarray           # (N,) int64


class Backend(ABC):
    """Trains the folds of a :class:`FoldJob` and hands their results to the driver's sink."""

    name: str

    def start(self, device: torch.device) -> torch.device:
        """Get ready (connect to a cluster, ...); return the device type the folds train on
        (it picks the batch size). ``device`` is the driver's."""
        return device

    @abstractmethod
    def train_folds(self, todo: Sequence[int], job: FoldJob, sink: "ArtifactSink",
                    progress: Callable[..., object] | None) -> Iterator[dict]:
        """Train folds ``todo``; yield each fold's log once its results are in ``sink``, in any order."""

    def stop(self) -> None:
        """Release what :meth:`start` took."""

    def describe(self) -> dict:
        """What the manifest records under ``config.backend``."""
        return {"name": self.name}


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


__all__ = ["BACKENDS", "Backend", "FoldJob", "get_backend"]
