"""``curator.score``: dataset -> cross-fitted proxies -> scorers -> flags -> run directory."""

from __future__ import annotations

import platform
import threading
import resource
import sys
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from . import __version__, store
from .atomic import atomic_path, write_csv, write_json, write_npy, write_parquet
from .backends import Backend, get_backend
from .config import load_config
from .context import Dynamics, ScoreContext
from .data import Examples, load_dataset
from .device import select_device
from .engine.config import TrainConfig
from .engine.training import train_cross_fitted
from .errors import ConfigError, CuratorError, PluginError
from .flags import FlagConfig, flag
from .plugins import RegisteredScorer, ScorerRegistry, load_scorers
from .progress import progress_bar


def _select(registry: ScorerRegistry, names: Sequence[str] | str | None) -> list[RegisteredScorer]:
    if names is None or names == "all":
        return list(registry.scorers.values())
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ConfigError(f"--scorers {unknown[0]!r}: unknown scorer (available: {', '.join(registry.names()) or 'none'})")
    return [registry[n] for n in names]


def run_scorer(entry: RegisteredScorer, ctx: ScoreContext, backend: Backend) -> dict[str, np.ndarray]:
    """Call one scorer (whole here, or in shards where ``backend`` spreads them) and return its
    validated columns, normalised to higher = worse."""
    scorer = entry.scorer
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


def _call_with_timeout(fn, timeout: float | None):
    """Run ``fn()``; raise TimeoutError if it is still running after ``timeout`` seconds.

    The scorer runs in a daemon thread: a hung scorer is abandoned (it cannot be killed) and the
    run goes on without it.
    """
    if not timeout:
        return fn()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"timed out after {timeout:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _save_columns(path: Path, columns: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **columns)


def score(dataset: str | Path | Examples, *, out: str | Path | None = None,
          scorers: Sequence[str] | str | None = None, folds: int | None = None, epochs: int | None = None,
          device: str | None = None, seed: int | None = None, config: str | Path | None = None,
          format: str = "auto", label_column: str = "label", max_side: int = 64, on_error: str = "skip",
          loss: str | None = None, max_flag_rate: float | None = None, strict: bool = False,
          scorer_timeout: float | None = None, resume: bool = False, plugins: Iterable[object] = (),
          backend: str | None = None, ray_address: str | None = None, threads: int | None = None,
          progress: bool = True, log=None) -> store.Run:
    """Score every example of ``dataset`` and write a run directory; returns the finished :class:`Run`.

    Explicit arguments override ``config`` (a ``curator.toml``), which overrides the defaults.
    ``plugins`` are extra plugin objects registered for this call only. The run is built in
    ``<out>.partial/``; if interrupted, ``resume=True`` redoes only the unfinished stages (folds,
    scorers). A scorer that raises, returns a bad column or runs past ``scorer_timeout`` seconds is
    left out and recorded (``strict`` makes it fatal). ``backend`` says where the fold proxies train
    and the shardable scorers run: ``"local"`` (default, all in this process) or ``"ray"`` (one Ray
    task per fold and shards of rows as Ray tasks, on the cluster at ``ray_address`` or a Ray instance
    started on this machine); every write stays in this process. ``threads`` sets torch's CPU threads
    in this process for the call (default: torch's, one per core).
    """
    say = log or (lambda msg: None)
    file_cfg = load_config(config)
    opts = dict(file_cfg.get("score", {}))
    train_opts = dict(file_cfg.get("train", {}))
    for key, value in (("folds", folds), ("epochs", epochs), ("seed", seed), ("loss", loss)):
        if value is not None:
            train_opts[key] = value
        elif key in opts:
            train_opts[key] = opts[key]
    try:
        train_config = TrainConfig(**train_opts)
    except TypeError as exc:
        raise ConfigError(f"[train] in {config}: {exc}") from exc
    flag_opts = dict(file_cfg.get("flags", {}))
    if max_flag_rate is not None:
        flag_opts["max_flag_rate"] = max_flag_rate
    try:
        flag_config = FlagConfig(**flag_opts)
    except TypeError as exc:
        raise ConfigError(f"[flags] in {config}: {exc}") from exc
    scorer_options = file_cfg.get("scorers", {})
    scorer_timeout = scorer_timeout if scorer_timeout is not None else opts.get("scorer_timeout")
    threads = threads if threads is not None else opts.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"--threads {threads}: must be a whole number of at least 1")
    device_t = select_device(device or opts.get("device", "auto"))
    fold_backend = get_backend(backend or opts.get("backend", "local"), ray_address or opts.get("address"))

    registry = load_scorers(plugins)
    selected = _select(registry, scorers if scorers is not None else opts.get("scorers"))

    t0 = time.perf_counter()
    examples = dataset if isinstance(dataset, Examples) else load_dataset(
        dataset, format=format, label_column=label_column, max_side=max_side, on_error=on_error)
    load_stage = _done(t0)
    say(f"{len(examples)} examples, {examples.n_classes} classes, inputs {tuple(examples.inputs.shape[1:])}, device {device_t}")

    out = Path(out) if out is not None else default_out(examples.name)
    key = {"fingerprint": examples.fingerprint, "n_examples": len(examples), "train": asdict(train_config)}
    if resume and (finished := store.completed(out, key)) is not None:
        say(f"{out} is already complete: nothing to resume")
        return finished
    staging = store.Staging(out, key, resume)
    if staging.resumed:
        say(f"resuming {staging.path}: finished stages {', '.join(staging.done) or 'none'}")
    default_threads = torch.get_num_threads()
    try:
        staging.mark("load", load_stage)
        torch.set_num_threads(threads or default_threads)
        fold_backend.start(device_t)
        try:
            _score_into(staging, examples, selected, train_config, flag_config, scorer_options, scorer_timeout,
                        strict, device_t, registry, config, progress, say, fold_backend)
        finally:
            fold_backend.stop()
            torch.set_num_threads(default_threads)
        staging.publish()
    except CuratorError:
        staging.discard()
        raise
    except BaseException:
        staging.close()              # keep the partial: `--resume` picks it up
        raise
    return store.Run(out)


def _score_into(staging: store.Staging, examples: Examples, selected: list[RegisteredScorer],
                train_config: TrainConfig, flag_config: FlagConfig, scorer_options: dict,
                scorer_timeout: float | None, strict: bool, device_t: torch.device, registry: ScorerRegistry,
                config, progress: bool, say, backend: Backend) -> None:
    """The stages after loading, each recorded in the partial manifest as it finishes."""
    root = staging.path
    bar = (lambda it, **kw: progress_bar(it, **kw)) if progress else None
    t0 = time.perf_counter()
    trained = train_cross_fitted(examples.inputs, examples.labels, examples.kind, examples.n_classes,
                                 train_config, backend, root / "artifacts", progress=bar, resume=staging.resumed)
    if not staging.finished("train"):
        staging.mark("train", _done(t0))
    oof_probs = torch.softmax(torch.from_numpy(trained.oof_logits), 1).numpy().astype(np.float32)

    columns: dict[str, np.ndarray] = {}
    scorer_log: dict[str, dict] = {}
    t0 = time.perf_counter()
    for entry in selected:
        name = entry.scorer.name
        saved = root / "columns" / f"{name}.npz"
        if staging.finished(f"scorer {name}") and saved.exists():
            with np.load(saved) as data:
                result = {col: data[col] for col in data.files}
            scorer_log[name] = staging.done[f"scorer {name}"]
            columns.update({f"score_{col}": values for col, values in result.items()})
            continue
        ctx = ScoreContext(artifacts=root / "artifacts", labels=examples.labels, classes=examples.classes,
                           ids=examples.ids, inputs_array=examples.inputs, device=device_t,
                           seed=trained.config.seed, options={**entry.scorer.options, **scorer_options.get(name, {})},
                           progress=(bar or (lambda it, **kw: it)))
        started = time.perf_counter()
        say(f"scorer {name} ...")
        try:
            result = _call_with_timeout(lambda: run_scorer(entry, ctx, backend), scorer_timeout)
        except Exception as exc:
            if strict:
                raise PluginError(f"scorer {name!r} failed: {type(exc).__name__}: {exc}") from exc
            scorer_log[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc(limit=5), **entry.describe()}
            say(f"scorer {name} failed and is left out: {type(exc).__name__}: {exc}")
            continue
        columns.update({f"score_{col}": values for col, values in result.items()})
        scorer_log[name] = {**_done(started), "columns": [f"score_{c}" for c in result], **entry.describe()}
        _save_columns(saved, result)
        staging.mark(f"scorer {name}", scorer_log[name])
    timings = {"load": staging.done["load"], "train": staging.done["train"], "score": _done(t0)}

    t0 = time.perf_counter()
    informing = {f"score_{col}": kinds for e in selected if scorer_log[e.scorer.name]["status"] == "done"
                 for col, kinds in e.scorer.column_issues().items() if f"score_{col}" in columns}
    flags = flag({c: columns[c] for c in informing}, informing, oof_probs, examples.labels, examples.classes,
                 examples.ids, flag_config, insample_probs=Dynamics(root / "artifacts").ema_probs(),
                 oof_logits=trained.oof_logits, embeddings=trained.embeddings, folds=trained.folds,
                 metadata=examples.metadata)
    timings["flag"] = _done(t0)

    scores = pd.DataFrame({
        "id": examples.ids, "path": examples.paths,
        "label": [examples.classes[j] for j in examples.labels], "fold": trained.folds.astype(np.int16)})
    scores = pd.concat([scores, pd.DataFrame(columns), flags.table], axis=1)
    queue = store.review_queue(scores)
    write_parquet(root / "scores.parquet", scores)
    write_npy(root / "oof_probs.npy", oof_probs)
    write_json(root / "classes.json", examples.classes)
    write_csv(root / "review_queue.csv", queue)
    write_parquet(root / "review_queue.parquet", queue)
    oof_acc = float((oof_probs.argmax(1) == examples.labels).mean())
    write_json(root / "manifest.json", {
        "status": "complete",
        "run_key": staging.key,    # what `--resume` compares: same dataset fingerprint and training settings
        "curator_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"path": str(Path(examples.source or examples.root).resolve()),
                    "root": str(Path(examples.root).resolve()), "name": examples.name, "kind": examples.kind,
                    "fingerprint": examples.fingerprint, "n_examples": len(examples),
                    "n_classes": examples.n_classes, "input_shape": list(examples.inputs.shape[1:]),
                    "skipped_files": examples.skipped},
        "config": {"train": asdict(trained.config), "flags": asdict(flag_config),
                   "scorers": [e.scorer.name for e in selected], "scorer_options": scorer_options,
                   "scorer_timeout": scorer_timeout, "config_file": str(config) if config else None,
                   "backend": backend.describe(), "threads": torch.get_num_threads()},
        "seed": trained.config.seed,
        "resumed": staging.resumed,
        "device": {"type": device_t.type, "name": torch.cuda.get_device_name(device_t) if device_t.type == "cuda"
                   else platform.processor() or platform.machine()},
        "proxy": {"model": trained.spec.to_dict(), "oof_accuracy": round(oof_acc, 4),
                  "train_accuracy_last_epoch": [round(a, 4) for a in trained.fold_train_accuracy]},
        "stages": timings,
        "scorers": scorer_log,
        "plugin_load_errors": registry.load_errors,
        "flag_counts": {k: int(flags.table[f"is_{k}"].sum()) for k in ("mislabeled", "outlier", "spurious")},
        "spurious_groups": [g.to_dict() for g in flags.spurious_groups if g.kind == "shortcut"],
        "outlier_groups": [g.to_dict() for g in flags.spurious_groups if g.kind == "outlier"],
        "foreign_batches": [b.to_dict() for b in flags.foreign_batches],
        "spurious_attributes": flags.spurious_attributes,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__},
    })
