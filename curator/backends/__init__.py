"""Where the fold proxies train and the shardable scorers run.

``local`` does everything in this process, one fold after another; ``ray`` runs each fold as a Ray
task on whichever machine of a Ray cluster has room (a GPU when the cluster has GPUs), and splits
the rows of each shardable scorer (:attr:`curator.Scorer.score_rows`) into shards scored as Ray
tasks. Either way this process, the driver, reads the dataset and writes every file of the run
directory: a backend only decides where :func:`curator.engine.folds.train_fold` and
``score_rows`` run, a fold depends only on (seed, k) and a row's parts only on that row, so every
backend gives the same run.
"""

from __future__ import annotations

import importlib.util

from ..errors import ConfigError
from .base import Backend, PartsGatherer

BACKENDS = ("local", "ray")


def get_backend(name: str = "local", address: str | None = None, cores: int | None = None) -> Backend:
    """The backend called ``name`` (``local`` or ``ray``); ``address`` is the Ray cluster, ray only;
    ``cores`` the CPU cores the local backend uses (default: every core this process may use)."""
    if name not in BACKENDS:
        raise ConfigError(f"--backend {name!r}: expected one of {', '.join(BACKENDS)}")
    if name == "local":
        if address:
            raise ConfigError(f"--address {address}: a cluster address needs --backend ray")
        from .local import LocalBackend
        return LocalBackend(cores)
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--backend ray: Ray is not installed; pip install 'curator[ray]'")
    from .ray import RayBackend
    return RayBackend(address)


__all__ = ["BACKENDS", "Backend", "PartsGatherer", "get_backend"]
