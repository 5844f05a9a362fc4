"""The ``ray`` backend: each fold proxy trains as one Ray task, and each shardable scorer runs as
Ray tasks over shards of the rows, anywhere on a Ray cluster.

Training: the driver puts the job (inputs, labels, folds, settings) into the object store once; every
fold task reads it from there (zero-copy on the driver's machine), trains with the same
:func:`~curator.engine.folds.train_fold` as the local backend into a :class:`FoldRecording`,
and returns it. The driver replays each recording into its own :class:`ArtifactSink` as the fold
finishes, so the run directory is written by the driver alone and is the same as a local run's.

Scoring: for a scorer with ``score_rows``, the driver puts the artifact files the scorer requires
into the object store (each file once per run), splits the rows into one contiguous shard per task
slot, and each shard task unpacks the files into a directory on its machine (once per machine and
run, see :class:`ShippedContext`), opens a :class:`~curator.context.ScoreContext` there and returns
``score_rows(ctx, shard)``. The driver gathers the parts in example order and calls ``finish``.
Neither kind of task needs a shared file system. A task asks for one GPU when the cluster has GPUs,
else for CPUs (its share of the cluster for a fold; one for a shard).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..context import ScoreContext
from ..engine import folds as fold_training
from ..engine.folds import ArtifactSink, FoldJob
from ..engine.inputs import InputBank
from ..errors import ConfigError
from ..scorer import RowParts, Scorer
from .base import Backend, PartsGatherer

#: Artifact files (globs under ``artifacts/``) a shard task gets, by what the scorer requires.
SHIPPED_ALWAYS = ("folds.npy", "model.json", "checkpoints.json")
SHIPPED_FOR = {
    "dynamics": ("dynamics_*.npy",),
    "oof": ("oof_logits.npy",),
    "embeddings": ("embeddings.npy",),
    "knn": ("embeddings.npy", "knn_*.npy"),
    "checkpoints": ("checkpoints/*.pt",),
    "model": ("checkpoints/*.pt",),
}


class FoldRecording:
    """Stands in for the driver's :class:`ArtifactSink` on a worker: keeps every call to replay there.

    Holds only the rows the fold fills: dynamics (E, N_recorded, C), out-of-fold logits and
    embeddings of the held-out fold, and one state_dict per epoch.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def dynamics(self, epoch: int, rows: np.ndarray, logits: np.ndarray, features_sq: np.ndarray,
                 lrs: np.ndarray) -> None:
        self.calls.append(("dynamics", (epoch, rows, logits, features_sq, lrs)))

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
    inputs = ray.get(job.inputs)            # a ref of its own, shared with the scorer shards
    bank = InputBank(inputs, job.normalizer, device)
    y_all = torch.as_tensor(np.array(job.labels, dtype=np.int64), device=device)
    recording = FoldRecording()
    log = fold_training.train_fold(k, job.folds, job.config, job.spec, bank, y_all, device, recording, None)
    return log, recording, ray.util.get_node_ip_address()


@dataclass
class ShippedContext:
    """A :class:`ScoreContext` that travels to a shard task without a shared file system.

    ``files`` maps artifact paths (relative to ``artifacts/``) to object-store refs of their bytes;
    ``key`` names the run's files, so the first shard task on a machine unpacks them into
    ``<tmp>/curator-shards/<key>/`` and later tasks there (and later scorers) reuse that directory.
    """

    key: str
    files: dict[str, Any]                   # relative path -> ObjectRef of bytes
    inputs: Any                             # ObjectRef of the (N, ...) inputs, or an empty array
    labels: np.ndarray
    classes: list[str]
    ids: list[str]
    seed: int
    options: Mapping[str, Any] = field(default_factory=dict)

    def open(self, device: torch.device) -> ScoreContext:
        inputs = ray.get(self.inputs) if isinstance(self.inputs, ray.ObjectRef) else self.inputs
        return ScoreContext(artifacts=self._unpack(), labels=self.labels, classes=self.classes, ids=self.ids,
                            inputs_array=inputs, device=device, seed=self.seed, options=self.options)

    def _unpack(self) -> Path:
        root = shard_dir(self.key)
        missing = [name for name in self.files if not (root / name).exists()]
        if not missing:
            return root
        # Unpack the missing files into a fresh directory, then rename each into place: a task on the
        # same machine doing the same at the same time writes identical bytes, and a rename is atomic.
        staging = root.parent / f".{self.key}-{uuid.uuid4().hex}"
        for name in missing:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(ray.get(self.files[name]))
        for name in missing:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, root / name)
        shutil.rmtree(staging, ignore_errors=True)
        return root


def shard_dir(key: str) -> Path:
    """Where shard tasks on this machine unpack the artifact files of the run ``key``."""
    return Path(tempfile.gettempdir()) / "curator-shards" / key


def _score_shard_task(scorer: Scorer, shipped: ShippedContext, rows: np.ndarray, device_type: str
                      ) -> tuple[dict[str, np.ndarray], str]:
    """Runs on a Ray worker: ``scorer.score_rows`` on ``rows``; returns (parts, node address)."""
    device = torch.device(device_type)
    if device.type == "cpu":
        torch.set_num_threads(1)            # the one CPU Ray gave this task
    parts = scorer.score_rows(shipped.open(device), rows)
    return dict(parts), ray.util.get_node_ip_address()


STALE_SHARD_DIR_S = 24 * 3600


def _remove_shard_dirs_task(key: str) -> None:
    """Runs on each machine at the end of a run: removes the run's directory, and any other run's that
    nothing has written to for a day (left by a run killed before its end). A live run whose directory
    this removes loses nothing: its next shard task there unpacks the files again."""
    shutil.rmtree(shard_dir(key), ignore_errors=True)
    cutoff = time.time() - STALE_SHARD_DIR_S
    for other in shard_dir(key).parent.glob("*"):
        try:
            if other.stat().st_mtime < cutoff:
                shutil.rmtree(other, ignore_errors=True)
        except FileNotFoundError:       # another run removed it meanwhile
            pass


class RayBackend(Backend):
    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address
        self._connected_here = False     # True when start() called ray.init, so stop() shuts it down
        self._gpus = False
        self._resources: dict[str, int] = {}
        self._fold_nodes: dict[int, str] = {}
        self._shards: dict[str, dict] = {}                # scorer -> {"shards": S, "nodes": [...]}
        self._shipped: dict[tuple, Any] = {}             # (path, size, mtime) -> ObjectRef of its bytes
        self._inputs: tuple[int, Any] | None = None      # (id of the array, ObjectRef)
        self._key: str | None = None

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
        self.fold_device = torch.device("cuda" if self._gpus else "cpu")
        return self.fold_device

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
        job_ref = ray.put(FoldJob(job.folds, job.config, job.spec, job.normalizer, self._put_inputs(job.inputs),
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

    def _put_inputs(self, inputs: np.ndarray):
        """The inputs' object-store ref, put once for the folds and every shard."""
        if self._inputs is None or self._inputs[0] != id(inputs):
            self._inputs = (id(inputs), ray.put(np.asarray(inputs)))
        return self._inputs[1]

    def _ship(self, ctx: ScoreContext, scorer: Scorer) -> ShippedContext:
        """The context for ``scorer``'s shard tasks: the artifact files it requires, each put once."""
        patterns = SHIPPED_ALWAYS + tuple(p for need in scorer.requires for p in SHIPPED_FOR.get(need, ()))
        paths = sorted({path for pattern in patterns for path in ctx.artifacts.glob(pattern) if path.is_file()})
        files = {}
        for path in paths:
            stat = path.stat()
            ident = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if ident not in self._shipped:
                self._shipped[ident] = ray.put(path.read_bytes())
            files[path.relative_to(ctx.artifacts).as_posix()] = self._shipped[ident]
        self._key = self._key or uuid.uuid4().hex[:16]     # this run's directory on each machine
        inputs = self._put_inputs(ctx.inputs_array) if "inputs" in scorer.requires else np.asarray(ctx.inputs_array)[:0]
        return ShippedContext(self._key, files, inputs, np.asarray(ctx.labels), list(ctx.classes), list(ctx.ids),
                              ctx.seed, dict(ctx.options))

    def _slots(self) -> int:
        """Shard tasks that can run at once: one per GPU, else one per CPU."""
        resources = ray.cluster_resources()
        return max(1, int(resources.get("GPU", 0) if self._gpus else resources.get("CPU", 1)))

    def score_rows(self, scorer: Scorer, ctx: ScoreContext,
                   progress: Callable[..., object] | None) -> RowParts | None:
        if not scorer.shardable:
            return None
        n = ctx.n_examples
        shards = [rows for rows in np.array_split(np.arange(n, dtype=np.int64), min(self._slots(), n)) if len(rows)]
        resources = {"num_gpus": 1, "num_cpus": 1} if self._gpus else {"num_cpus": 1}
        task = ray.remote(_score_shard_task).options(**resources, max_retries=1)
        shipped = ray.put(self._ship(ctx, scorer))
        pending = {task.remote(scorer, shipped, rows, "cuda" if self._gpus else "cpu"): rows for rows in shards}
        gathered = PartsGatherer(scorer, n)
        addresses: set[str] = set()
        finished = range(len(pending))
        if progress:
            finished = progress(finished, desc=f"{scorer.name}: {len(pending)} shards on Ray", total=len(pending),
                                unit="shard")
        try:
            for _ in finished:
                ready, _ = ray.wait(list(pending), num_returns=1)
                rows = pending.pop(ready[0])
                parts, address = ray.get(ready[0])
                addresses.add(address)
                gathered.add(rows, parts)
        finally:
            for ref in pending:
                ray.cancel(ref)
            if pending:      # a cancelled task may be unpacking: let it end before stop() removes the directory
                ray.wait(list(pending), num_returns=len(pending), timeout=60)
        self._shards[scorer.name] = {"shards": len(shards), "task_resources": resources, "nodes": sorted(addresses)}
        return gathered.parts

    def stop(self) -> None:
        if self._key is not None:      # the unpacked artifact files, on every machine that may hold them
            remove = ray.remote(_remove_shard_dirs_task)
            nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
            ray.get([remove.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                     .remote(self._key) for node in nodes])
            self._key = None
        self._shipped, self._inputs = {}, None
        if self._connected_here:
            ray.shutdown()
            self._connected_here = False

    def describe(self) -> dict:
        return {"name": self.name, "address": self.address, "fold_resources": dict(self._resources),
                "fold_nodes": {str(k): node for k, node in sorted(self._fold_nodes.items())},
                "scorer_shards": dict(self._shards),
                "shard_key": self._key}     # $TMPDIR/curator-shards/<key> on each machine, removed at the end
