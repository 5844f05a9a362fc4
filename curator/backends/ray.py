"""The ``ray`` backend: each fold proxy trains as one Ray task, anywhere on a Ray cluster.

The driver puts the job (inputs, labels, folds, settings) into the object store once; every fold
task reads it from there (zero-copy on the driver's machine), trains with the same
:func:`~curator.engine.training._train_fold` as the local backend into a :class:`FoldRecording`,
and returns it. The driver replays each recording into its own :class:`ArtifactSink` as the fold
finishes, so the run directory is written by the driver alone and is the same as a local run's.
A task asks for one GPU when the cluster has GPUs, else for its share of the CPUs.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import ray
import torch

from ..engine.inputs import InputBank
from ..engine import training
from ..engine.training import ArtifactSink
from ..errors import ConfigError
from . import Backend, FoldJob


class FoldRecording:
    """Stands in for the driver's :class:`ArtifactSink` on a worker: keeps every call to replay there.

    Holds only the rows the fold fills: dynamics (E, N_recorded, C), out-of-fold logits and
    embeddings of the held-out fold, and one state_dict per epoch.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def dynamics(self, epoch: int, rows: np.ndarray, logits: np.ndarray) -> None:
        self.calls.append(("dynamics", (epoch, rows, logits)))   # same `rows` object every epoch: pickled once

    def held_out(self, rows: np.ndarray, logits: np.ndarray, embeddings: np.ndarray) -> None:
        self.calls.append(("held_out", (rows, logits, embeddings)))

    def checkpoint(self, name: str, state: dict[str, torch.Tensor]) -> None:
        # On CPU the state_dict shares storage with the live weights: copy it before training goes on.
        self.calls.append(("checkpoint", (name, {key: t.clone() for key, t in state.items()})))

    def replay(self, sink: ArtifactSink) -> None:
        for method, args in self.calls:
            getattr(sink, method)(*args)


def _train_fold_task(k: int, job: FoldJob, device_type: str, threads: int) -> tuple[dict, FoldRecording, str]:
    """Runs on a Ray worker: train fold k of ``job``; returns (log, recording, node address)."""
    device = torch.device(device_type)
    if device.type == "cpu":
        torch.set_num_threads(threads)      # the CPUs Ray gave this task, no more
    bank = InputBank(job.inputs, job.normalizer, device)
    y_all = torch.as_tensor(np.array(job.labels, dtype=np.int64), device=device)
    recording = FoldRecording()
    log = training._train_fold(k, job.folds, job.config, job.spec, bank, y_all, device, recording, None)
    return log, recording, ray.util.get_node_ip_address()


class RayBackend(Backend):
    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address
        self._connected_here = False     # True when start() called ray.init, so stop() shuts it down
        self._gpus = False
        self._resources: dict[str, int] = {}
        self._fold_nodes: dict[int, str] = {}

    def start(self, device: torch.device) -> torch.device:
        if not ray.is_initialized():
            # No address: $RAY_ADDRESS, else a cluster `ray start`ed on this machine, else a new instance here.
            extra = {"include_dashboard": False} if self.address is None else {}
            try:
                ray.init(address=self.address, log_to_driver=False, **extra)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                option = f"--address {self.address}" if self.address else "--backend ray"
                reason = (str(exc).splitlines() or [""])[0]
                raise ConfigError(f"{option}: cannot connect to a Ray cluster ({type(exc).__name__}: {reason})") from exc
            self._connected_here = True
        self._gpus = ray.cluster_resources().get("GPU", 0) >= 1
        return torch.device("cuda" if self._gpus else "cpu")

    def _resources_per_fold(self, n_folds: int) -> dict[str, int]:
        """One GPU per fold on a cluster with GPUs; else an even share of the CPUs, no more than the
        largest machine has (else the task could never be placed)."""
        if self._gpus:
            return {"num_gpus": 1, "num_cpus": 1}
        cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
        return {"num_cpus": max(1, min(max(cpus, default=1), sum(cpus) // n_folds))}

    def train_folds(self, todo: Sequence[int], job: FoldJob, sink: ArtifactSink,
                    progress: Callable[..., object] | None) -> Iterator[dict]:
        if not todo:
            return
        self._resources = self._resources_per_fold(len(todo))
        task = ray.remote(_train_fold_task).options(**self._resources, max_retries=1)
        device_type = "cuda" if self._gpus else "cpu"
        job_ref = ray.put(FoldJob(job.folds, job.config, job.spec, job.normalizer, np.asarray(job.inputs),
                                  np.asarray(job.labels)))
        pending = {task.remote(k, job_ref, device_type, int(self._resources["num_cpus"])): k for k in todo}
        finished = range(len(pending))
        if progress:
            finished = progress(finished, desc=f"{len(pending)} folds on Ray", total=len(pending), unit="fold")
        try:
            for _ in finished:
                ready, _ = ray.wait(list(pending), num_returns=1)
                k = pending.pop(ready[0])
                log, recording, node = ray.get(ready[0])
                recording.replay(sink)
                self._fold_nodes[k] = node
                yield log
        finally:
            for ref in pending:          # the driver gave up (error, interrupt): stop the others
                ray.cancel(ref)

    def stop(self) -> None:
        if self._connected_here:
            ray.shutdown()
            self._connected_here = False

    def describe(self) -> dict:
        return {"name": self.name, "address": self.address, "fold_resources": dict(self._resources),
                "fold_nodes": {str(k): node for k, node in sorted(self._fold_nodes.items())}}
