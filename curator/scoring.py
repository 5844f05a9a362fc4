"""``curator.score``: dataset -> cross-fitted proxies -> scorers -> flags -> run directory."""

from __future__ import annotations

import builtins
import dataclasses
import platform
import threading
import resource
import sys
import time
import traceback
import uuid
from dataclasses import asdict, replace
from datetime import datetime, timezone
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from . import __version__, history, store
from .atomic import atomic_path, write_csv, write_json, write_parquet
from .backends import Backend, get_backend
from .backends.workers import WorkerError, WorkerPool, opened, picklable, shareable
from .context import Dynamics, ScoreContext
from .data import Examples, check_format, load_dataset
from .device import select_device
from .engine.features import load_examples, proxy_inputs
from .engine.folds import deterministic_kernels
from .engine.inputs import release_banks
from .engine.training import train_cross_fitted
from .errors import ConfigError, CuratorError, PluginError, nearest
from .flags import flag
from .plugins import PluginRegistry, Registered, load_plugins
from .progress import progress_bar
from .settings import Settings


def select_scorers(registry: PluginRegistry, names: Sequence[str] | None) -> list[Registered]:
    """The registered scorers called ``names`` (every one for None); an unknown name is an error."""
    if names is None:
        return list(registry.scorers.values())
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ConfigError(f"--scorers {unknown[0]!r}: unknown scorer{nearest(unknown[0], registry.names())} "
                          f"(available: {', '.join(registry.names()) or 'none'})")
    return [registry[n] for n in names]


def check_scorer_options(selected: list[Registered], given: Mapping[str, Mapping[str, object]],
                         installed: Sequence[str]) -> dict[str, dict[str, object]]:
    """Each selected scorer's options (its declared defaults overlaid by ``[scorers.<name>]``), checked
    before anything is trained: a table for no ``installed`` scorer, a key the scorer does not declare,
    or a value its ``check_options`` refuses is an error naming it."""
    for name in given:
        if name not in installed:
            raise ConfigError(f"[scorers.{name}]: no scorer {name!r} is installed{nearest(name, installed)}")
    resolved = {}
    for entry in selected:
        scorer = entry.record
        options = dict(given.get(scorer.name, {}))
        for key in options:
            if key not in scorer.options:
                known = ", ".join(scorer.options) or "none"
                raise ConfigError(f"[scorers.{scorer.name}] unknown option {key!r}{nearest(key, scorer.options)} "
                                  f"(options: {known})")
        merged = {**scorer.options, **options}
        if scorer.check_options is not None:
            try:
                scorer.check_options(merged)
            except CuratorError:
                raise
            except (ValueError, TypeError, KeyError) as exc:
                raise ConfigError(f"[scorers.{scorer.name}] {exc}") from exc
        resolved[scorer.name] = merged
    return resolved


def run_scorer(entry: Registered, ctx: ScoreContext, backend: Backend) -> dict[str, np.ndarray]:
    """Call one scorer (whole here, or in shards where ``backend`` spreads them) and return its
    validated columns, normalised to higher = worse."""
    scorer = entry.record
    parts = backend.score_rows(scorer, ctx, ctx.progress)
    result = scorer.score(ctx) if parts is None else scorer.finish_parts(ctx, parts)
    columns = {scorer.name: result} if not isinstance(result, dict) else dict(result)
    if scorer.name not in columns:
        raise PluginError(f"scorer {scorer.name!r} returned no column named {scorer.name!r}")
    out = {}
    for name, values in columns.items():
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (ctx.n_examples,):
            raise PluginError(f"scorer {scorer.name!r}: column {name!r} has shape {values.shape}, expected ({ctx.n_examples},)")
        if not np.isfinite(values).all():
            raise PluginError(f"scorer {scorer.name!r}: column {name!r} has {int((~np.isfinite(values)).sum())} NaN/inf values")
        out[name] = -values if scorer.direction == "lower" else values
    main = {scorer.name: out.pop(scorer.name)}
    return {**main, **out}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _done(started: float) -> dict:
    return {"status": "done", "seconds": round(time.perf_counter() - started, 3), "peak_rss_mb": _peak_rss_mb()}


def default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


class Deadlines:
    """Runs scorers under a time limit (``--scorer-timeout``): :meth:`run` is :func:`run_scorer`,
    stopped after ``timeout`` seconds (None: no limit) with a TimeoutError.

    With a limit, a scorer whose record pickles runs in a worker process (whole, one thread: the
    numbers of a sharded run), which is killed when the time is up, so its memory and its GPU are
    released; the clock starts once the worker is up. Any other scorer runs in a daemon thread,
    abandoned when the time is up: a thread cannot be stopped.
    """

    def __init__(self, timeout: float | None):
        self.timeout = timeout
        self._pool: WorkerPool | None = None

    def _worker(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(1)
            self._pool.submit(_ready).result()          # started and imported before any clock runs
        return self._pool

    def run(self, entry: Registered, ctx: ScoreContext, backend: Backend) -> dict[str, np.ndarray]:
        if not self.timeout:
            return run_scorer(entry, ctx, backend)
        if picklable(entry):
            fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx) if f.name != "progress"}
            fields.update(inputs_array=shareable(ctx.inputs_array), images_array=shareable(ctx.images_array))
            future = self._worker().submit(_score_in_worker, entry, fields)
            try:
                return future.result(self.timeout)
            except FutureTimeout:
                self.close()
                raise TimeoutError(f"timed out after {self.timeout:g}s; its worker process was stopped") from None
            except WorkerError as exc:
                raise _as_raised(str(exc)) from None
        outcome: dict = {}

        def target() -> None:
            try:
                outcome["value"] = run_scorer(entry, ctx, backend)
            except BaseException as exc:  # re-raised in the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            raise TimeoutError(f"timed out after {self.timeout:g}s; it runs on in a thread that cannot be stopped")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(kill=True)
            self._pool = None


def _ready(report) -> bool:
    from . import context, plugins  # noqa: F401  (what every scorer needs, imported once)
    return True


def _as_raised(worker_error: str) -> Exception:
    """The exception a worker's traceback ends with (``ZeroDivisionError: division by zero``), as the
    built-in class where it is one, so a failure reads the same wherever the scorer ran."""
    last = worker_error.strip().splitlines()[-1]
    name, _, message = last.partition(": ")
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind(message)
    return PluginError(last)


def _score_in_worker(entry: Registered, fields: dict, report) -> dict[str, np.ndarray]:
    """Runs in a worker process: the scorer on the context ``fields`` describe."""
    from .backends.local import LocalBackend

    fields = {**fields, "inputs_array": opened(fields["inputs_array"]), "images_array": opened(fields["images_array"])}
    return run_scorer(entry, ScoreContext(**fields), LocalBackend(cores=1))


def softmax_rows(logits: np.ndarray, path: Path, chunk_bytes: int = 64 << 20) -> np.ndarray:
    """(N, C) float32 softmax of ``logits`` written to ``path`` (an .npy, atomically) in row chunks of
    ~64 MB, returned memory-mapped: no (N, C) copy in memory, whatever N x C."""
    n, c = logits.shape
    step = max(1, chunk_bytes // (4 * max(1, c)))
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, "w+", np.float32, (n, c))
        for start in range(0, n, step):
            out[start:start + step] = torch.softmax(torch.from_numpy(np.asarray(logits[start:start + step])), 1)
        out.flush()
        del out
    return np.load(path, mmap_mode="r")


def _save_columns(path: Path, columns: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **columns)


def score(dataset: str | Path | Examples, *, out: str | Path | None = None, config: str | Path | None = None,
          settings: Settings | None = None, resume: bool = False, previous: str | Path | None = None,
          plugins: Iterable[object] = (), progress: bool = True, log=None, **arguments) -> store.Run:
    """Score every example of ``dataset`` and write a run directory; returns the finished :class:`Run`.

    ``arguments`` are the options of ``curator score`` by their flat names (``epochs=3``,
    ``scorers="learning_speed,early_learning"``, ``device="cpu"``, ``format``, ``label_column``,
    ``image_size``, ``on_error``, ``folds``, ``seed``, ``loss``, ``max_flag_rate``, ``strict``,
    ``scorer_timeout``, ``backend``, ``address``, ``threads``); they override ``config`` (a
    ``curator.toml``), which overrides the defaults; or pass a built :class:`curator.Settings`.
    Everything is validated before the dataset is read: settings, plugins, scorer options, format.
    ``plugins`` are extra plugin objects registered for this call only. The run is built in
    ``<out>.partial/``; if interrupted, ``resume=True`` redoes only the unfinished stages (folds,
    scorers), and on a finished run has nothing to do. A scorer that raises, returns a bad column or
    runs past ``scorer_timeout`` seconds is left out and recorded (``strict`` makes it fatal).
    ``backend`` says where the fold proxies train and the shardable scorers run: ``"local"``
    (default, all in this process) or ``"ray"`` (one Ray task per fold and shards of rows as Ray
    tasks, on the cluster at ``address`` or a Ray instance started on this machine); every write
    stays in this process. ``previous``: the run before this one over the same (grown) dataset
    (``--previous``): scores.parquet gains is_new, previously_flagged, reviewed and review_decision,
    the reviews the team made are carried into ``reviews.csv``, and reviewed examples stay out of the
    queue (see :mod:`curator.history`).
    """
    say = log or (lambda msg: None)
    if settings is not None and config is not None:
        raise ConfigError("score(): give settings or config, not both")
    settings = (settings or Settings.build(config)).with_arguments(**arguments)
    registry = load_plugins(plugins, strict=settings.score.strict)
    selected = select_scorers(registry, settings.score.scorers)
    scorer_options = check_scorer_options(selected, settings.scorer_options, registry.names())
    if "early_learning" in scorer_options:
        # The engine records the early-learning target while the proxies train; the early_learning
        # scorer's beta decides which, so the scorer and the flags read the same target.
        beta = float(scorer_options["early_learning"]["beta"])
        settings = replace(settings, train=replace(settings.train, ema_beta=beta))
    adapters = registry.records("adapters")
    check_format(settings.dataset.format, adapters)
    device_t = select_device(settings.score.device)
    fold_backend = get_backend(settings.score.backend, settings.score.address, settings.score.threads)
    before = history.open_previous(previous) if previous is not None else None

    t0 = time.perf_counter()
    examples = dataset if isinstance(dataset, Examples) else load_examples(
        lambda dataset_settings: load_dataset(dataset, dataset_settings, adapters=adapters), settings.dataset,
        settings.backbone)
    load_stage = _done(t0)
    if before is not None and not examples.stable_ids:
        raise ConfigError(f"--previous: {examples.source or examples.root} has no ids (an .npz without an 'ids' "
                          "array is numbered by row, which changes when rows are added); add an 'ids' array")
    say(f"{len(examples)} examples, {examples.n_classes} classes, inputs {tuple(examples.inputs.shape[1:])}, device {device_t}")

    out = Path(out) if out is not None else default_out(examples.name)
    key = {"fingerprint": examples.fingerprint, "n_examples": len(examples), "train": asdict(settings.train),
           "backbone": {**asdict(settings.backbone), "input_space": list(settings.backbone.input_space)}}
    if resume and (finished := store.completed(out, key)) is not None:
        say(f"{out} is already complete: nothing to resume")
        return finished
    staging = store.Staging(out, key, resume)
    if staging.resumed:
        say(f"resuming {staging.path}: finished stages {', '.join(staging.done) or 'none'}")
    default_threads = torch.get_num_threads()
    try:
        staging.mark("load", load_stage)
        torch.set_num_threads(settings.score.threads or default_threads)
        fold_backend.start(device_t)
        try:
            with deterministic_kernels(settings.train.deterministic):
                _score_into(staging, examples, selected, scorer_options, settings, device_t, registry, progress,
                            say, fold_backend, before)
        finally:
            fold_backend.stop()
            release_banks()
            torch.set_num_threads(default_threads)
        staging.publish()
    except CuratorError:
        staging.discard()
        raise
    except BaseException:
        staging.close()              # keep the partial: `--resume` picks it up
        raise
    return store.Run(out)


def _score_into(staging: store.Staging, examples: Examples, selected: list[Registered],
                scorer_options: dict[str, dict], settings: Settings, device_t: torch.device,
                registry: PluginRegistry, progress: bool, say, backend: Backend, before: store.Run | None) -> None:
    """The stages after loading, each recorded in the partial manifest as it finishes.
    ``scorer_options``: each selected scorer's checked options (:func:`check_scorer_options`)."""
    root = staging.path
    strict, scorer_timeout = settings.score.strict, settings.score.scorer_timeout
    bar = (lambda it, **kw: progress_bar(it, **kw)) if progress else None
    t0 = time.perf_counter()
    fed = proxy_inputs(examples, settings.backbone, device_t, bar)     # a pretrained backbone's feature pass
    trained = train_cross_fitted(fed.inputs, examples.labels, fed.kind, examples.n_classes, settings.train,
                                 backend, root / "artifacts", progress=bar, resume=staging.resumed,
                                 backbone=fed.backbone)
    if not staging.finished("train"):
        staging.mark("train", _done(t0))
    oof_probs = softmax_rows(trained.oof_logits, root / "oof_probs.npy")

    columns: dict[str, np.ndarray] = {}
    scorer_log: dict[str, dict] = {}
    t0 = time.perf_counter()
    deadlines = Deadlines(scorer_timeout)
    for entry in selected:
        name = entry.record.name
        saved = root / "columns" / f"{name}.npz"
        if staging.finished(f"scorer {name}") and saved.exists():
            with np.load(saved) as data:
                result = {col: data[col] for col in data.files}
            scorer_log[name] = staging.done[f"scorer {name}"]
            columns.update({f"score_{col}": values for col, values in result.items()})
            continue
        ctx = ScoreContext(artifacts=root / "artifacts", labels=examples.labels, classes=examples.classes,
                           ids=examples.ids, inputs_array=fed.inputs, device=device_t,
                           images_array=examples.inputs, input_space=name in settings.backbone.input_space,
                           seed=trained.config.seed, options=scorer_options[name],
                           progress=(bar or (lambda it, **kw: it)))
        started = time.perf_counter()
        say(f"scorer {name} ...")
        try:
            result = deadlines.run(entry, ctx, backend)
        except Exception as exc:
            if strict:
                raise PluginError(f"scorer {name!r} failed: {type(exc).__name__}: {exc}") from exc
            scorer_log[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc(limit=5), **entry.describe(),
                                "options": scorer_options[name]}
            say(f"scorer {name} failed and is left out: {type(exc).__name__}: {exc}")
            continue
        columns.update({f"score_{col}": values for col, values in result.items()})
        scorer_log[name] = {**_done(started), "columns": [f"score_{c}" for c in result], **entry.describe(),
                            "options": scorer_options[name]}
        _save_columns(saved, result)
        staging.mark(f"scorer {name}", scorer_log[name])
    deadlines.close()
    timings = {"load": staging.done["load"], "train": staging.done["train"], "score": _done(t0)}

    t0 = time.perf_counter()
    informing = {f"score_{col}": kinds for e in selected if scorer_log[e.record.name]["status"] == "done"
                 for col, kinds in e.record.column_issues().items() if f"score_{col}" in columns}
    flags = flag({c: columns[c] for c in informing}, informing, oof_probs, examples.labels, examples.classes,
                 examples.ids, settings.flags, insample_probs=Dynamics(root / "artifacts").ema_rows(),
                 oof_logits=trained.oof_logits, embeddings=trained.embeddings, folds=trained.folds,
                 metadata=examples.metadata)
    timings["flag"] = _done(t0)

    scores = pd.DataFrame({
        "id": examples.ids, "path": examples.paths,
        "label": [examples.classes[j] for j in examples.labels], "fold": trained.folds.astype(np.int16)})
    scores = pd.concat([scores, pd.DataFrame(columns), flags.table], axis=1)
    queue = store.review_queue(scores)
    linked = None
    if before is not None:
        linked = history.link_previous(scores, before)
        scores = pd.concat([scores, linked.columns], axis=1)
        flagged_ids = queue["id"].nunique()
        queue = history.unreviewed_queue(queue, scores, settings.score.review_again_above)
        linked.counts["kept_out_of_queue"] = int(flagged_ids - queue["id"].nunique())
        write_csv(root / "reviews.csv", linked.reviews)
    write_parquet(root / "scores.parquet", scores)
    write_json(root / "classes.json", examples.classes)
    write_csv(root / "review_queue.csv", queue)
    write_parquet(root / "review_queue.parquet", queue)
    oof_acc = sum(int((oof_probs[s:s + 65536].argmax(1) == examples.labels[s:s + 65536]).sum())
                  for s in range(0, len(oof_probs), 65536)) / len(oof_probs)
    write_json(root / "manifest.json", {
        "status": "complete",
        "run_id": uuid.uuid4().hex,
        "run_key": staging.key,    # what `--resume` compares: same dataset fingerprint and training settings
        "curator_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"path": str(Path(examples.source or examples.root).resolve()),
                    "root": str(Path(examples.root).resolve()), "name": examples.name, "kind": examples.kind,
                    "format": examples.format,
                    "fingerprint": examples.fingerprint, "n_examples": len(examples),
                    "n_classes": examples.n_classes, "input_shape": list(examples.inputs.shape[1:]),
                    "decode": examples.decode, "decoded_files": examples.decode.get("decoded_files"),
                    "skipped_files": examples.skipped},
        "features": {**fed.record, "adversarial_space": "input" if fed.backbone is None else
                     "input (DeepFool through the backbone)" if "adversarial_distance" in settings.backbone.input_space
                     else "features (DeepFool on the head's input)"},
        "config": {"train": asdict(trained.config), "flags": asdict(settings.flags),
                   "dataset": asdict(settings.dataset), "score": asdict(settings.score),
                   "scorers": [e.record.name for e in selected], "scorer_options": settings.scorer_options,
                   "scorer_timeout": scorer_timeout, "config_file": settings.config_file,
                   "backend": backend.describe(), "threads": torch.get_num_threads()},
        "previous": None if before is None else {
            "path": str(before.path.resolve()), "run_id": before.manifest.get("run_id"), **linked.counts},
        "seed": trained.config.seed,
        "resumed": staging.resumed,
        "device": {"type": device_t.type, "name": torch.cuda.get_device_name(device_t) if device_t.type == "cuda"
                   else platform.processor() or platform.machine()},
        "proxy": {"model": trained.spec.to_dict(), "oof_accuracy": round(oof_acc, 4),
                  "train_accuracy_last_epoch": [round(a, 4) for a in trained.fold_train_accuracy]},
        "stages": timings,
        "scorers": scorer_log,
        "plugin_errors": registry.errors,
        "flag_counts": {k: int(flags.table[f"is_{k}"].sum()) for k in ("mislabeled", "outlier", "spurious")},
        "spurious_groups": [g.to_dict() for g in flags.spurious_groups if g.kind == "shortcut"],
        "outlier_groups": [g.to_dict() for g in flags.spurious_groups if g.kind == "outlier"],
        "foreign_batches": [b.to_dict() for b in flags.foreign_batches],
        "spurious_attributes": flags.spurious_attributes,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__},
    })
