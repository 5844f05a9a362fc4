"""The ``local`` backend: this machine's cores, used the way Ray uses a cluster's.

On the CPU each of the K fold proxies trains with ``cores // K`` torch threads, and every shardable
scorer's rows are cut into one shard per core, each scored with one thread: exactly the task shapes of
the ``ray`` backend on a cluster with the same number of CPUs, so both backends compute the same numbers
by construction (the thread count changes floating-point reductions, and SGD amplifies them).
Large jobs run those folds side by side and those shards in worker processes, which write their rows
straight into the driver's memory-mapped artifacts (same disk, disjoint rows); small ones run them
one after another in this process, with the same thread counts, where spawning workers would cost
more than it saves. One thread pool per core also keeps a shared machine from collapsing under
oversubscribed threads. On a GPU the folds train one after another in this process.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..engine import folds as fold_training
from ..engine.folds import ArtifactSink, FoldJob
from ..engine.inputs import InputBank, shared_bank
from .base import Backend, PartsGatherer
from .workers import WorkerPool, opened, picklable, shareable

if TYPE_CHECKING:
    from ..context import ScoreContext
    from ..scorer import RowParts, Scorer

#: Below these sizes the folds / shards run in this process: a worker costs seconds to start.
WORKERS_FROM_EXAMPLE_EPOCHS = 100_000
WORKERS_FROM_ROWS = 20_000


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _ProgressReport:
    """The ``progress`` of a fold worker: reports batches done, every ``every`` batches, to the driver."""

    def __init__(self, report: Callable[[int], None], every: int = 20):
        self.report, self.every = report, every

    def __call__(self, steps, **_):
        done = 0
        for done, step in enumerate(steps, 1):
            if done % self.every == 0:
                self.report(self.every)
            yield step
        self.report(done % self.every)


def _fold_task(k: int, job: FoldJob, records: Mapping[str, str], artifacts: str, threads: int,
               report: Callable[[int], None]) -> dict:
    """Runs in a worker process: train fold k, writing its rows into the driver's memory maps."""
    torch.set_num_threads(threads)
    inputs = opened(job.inputs)
    sink = ArtifactSink({name: np.load(path, mmap_mode="r+") for name, path in records.items()}, Path(artifacts),
                        job.labels, job.config.ema_beta)
    bank = InputBank(inputs, job.normalizer, torch.device("cpu"))
    y_all = torch.as_tensor(np.array(job.labels, dtype=np.int64))
    log = fold_training.train_fold(k, job.folds, job.config, job.spec, bank, y_all, torch.device("cpu"), sink,
                                   _ProgressReport(report))
    sink.flush()
    return log


def _shard_task(scorer: "Scorer", context: dict, rows: np.ndarray, report) -> dict[str, np.ndarray]:
    """Runs in a worker process: ``scorer.score_rows`` on ``rows`` with one thread."""
    from ..context import ScoreContext

    torch.set_num_threads(1)
    ctx = ScoreContext(**{**context, "inputs_array": opened(context["inputs_array"])})
    return {name: np.asarray(values) for name, values in scorer.score_rows(ctx, rows).items()}


class LocalBackend(Backend):
    name = "local"

    def __init__(self, cores: int | None = None):
        self.cores = cores or available_cores()
        self.fold_device = torch.device("cpu")          # until start() says otherwise
        self._pool: WorkerPool | None = None
        self._fold_threads = 0
        self._folds_where = ""
        self._shards: dict[str, dict] = {}

    def _workers(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(self.cores)
        return self._pool

    def fold_threads(self, job: FoldJob) -> int:
        """Torch threads per fold: an even share of the cores over all K folds (as Ray's fold tasks)."""
        return max(1, self.cores // job.config.folds)

    def train_folds(self, todo: Sequence[int], job: FoldJob, sink: ArtifactSink,
                    progress: Callable[..., object] | None) -> Iterator[dict]:
        if not todo:
            return
        self._fold_threads = self.fold_threads(job)
        big = len(job.labels) * job.config.epochs >= WORKERS_FROM_EXAMPLE_EPOCHS
        if self.fold_device.type == "cpu" and len(todo) > 1 and self.cores > 1 and big:
            self._folds_where = "workers"
            yield from self._train_in_workers(todo, job, sink, progress)
            return
        self._folds_where = "this process"
        # Results go straight into the driver's memory maps: nothing is held per fold.
        bank = shared_bank(job.inputs, job.normalizer, self.fold_device)      # the scorers reuse it
        y_all = torch.as_tensor(np.array(job.labels, dtype=np.int64), device=self.fold_device)
        with _torch_threads(self._fold_threads if self.fold_device.type == "cpu" else None):
            for k in todo:          # looked up on the module, where the resume tests wrap it
                yield fold_training.train_fold(k, job.folds, job.config, job.spec, bank, y_all, self.fold_device,
                                               sink, progress)

    def _train_in_workers(self, todo: Sequence[int], job: FoldJob, sink: ArtifactSink,
                          progress: Callable[..., object] | None) -> Iterator[dict]:
        n_parallel = min(len(todo), max(1, self.cores // self._fold_threads))
        shared = replace(job, inputs=shareable(job.inputs))
        records = {name: str(array.filename) for name, array in sink.records.items()}
        steps = job.config.epochs * -(-int((job.folds != todo[0]).sum()) // job.config.batch_size)
        bar = progress(_Counter(), desc=f"{len(todo)} folds side by side, {self._fold_threads} threads each",
                       total=steps * len(todo), unit="batch") if progress else None
        advance = bar.update if hasattr(bar, "update") else None
        pool, pending, waiting = self._workers(), {}, list(todo)
        try:
            while waiting or pending:
                while waiting and len(pending) < n_parallel:
                    k = waiting.pop(0)
                    future = pool.submit(_fold_task, k, shared, records, str(sink.artifacts), self._fold_threads,
                                         on_progress=advance)
                    pending[future] = k
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    pending.pop(future)
                    yield future.result()
        except BaseException:
            self.stop(kill=True)          # an error or Ctrl-C: the other folds stop now
            raise
        finally:
            if hasattr(bar, "close"):
                bar.close()

    def score_rows(self, scorer: "Scorer", ctx: "ScoreContext",
                   progress: Callable[..., object] | None) -> "RowParts | None":
        if not scorer.shardable or self.fold_device.type != "cpu":
            return None
        n = ctx.n_examples
        shards = [rows for rows in np.array_split(np.arange(n, dtype=np.int64), min(self.cores, n)) if len(rows)]
        gathered = PartsGatherer(scorer, n)
        where = "workers" if self.cores > 1 and n >= WORKERS_FROM_ROWS and picklable(scorer) else "this process"
        if where == "this process":
            with _torch_threads(1):
                for rows in shards:
                    gathered.add(rows, scorer.score_rows(ctx, rows))
        else:
            context = {"artifacts": ctx.artifacts, "labels": np.asarray(ctx.labels), "classes": list(ctx.classes),
                       "ids": list(ctx.ids), "inputs_array": shareable(ctx.inputs_array),
                       "device": torch.device("cpu"), "seed": ctx.seed, "options": dict(ctx.options)}
            pool = self._workers()
            futures = {pool.submit(_shard_task, scorer, context, rows): rows for rows in shards}
            finished = range(len(futures))
            if progress:
                finished = progress(finished, desc=f"{scorer.name}: {len(shards)} shards", total=len(futures),
                                    unit="shard")
            pending = set(futures)
            try:
                for _ in finished:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        gathered.add(futures[future], future.result())
            except BaseException:
                self.stop(kill=True)
                raise
        self._shards[scorer.name] = {"shards": len(shards), "threads_each": 1, "where": where}
        return gathered.parts

    def stop(self, kill: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(kill)
            self._pool = None

    def describe(self) -> dict:
        return {"name": self.name, "cores": self.cores, "folds": self._folds_where, "fold_threads": self._fold_threads,
                "scorer_shards": dict(self._shards)}


@contextmanager
def _torch_threads(threads: int | None):
    """torch's CPU threads set to ``threads`` (None: unchanged) for the block."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Counter:
    """An endless iterable: the progress bar a fold pool advances by hand."""

    def __iter__(self):
        return self
