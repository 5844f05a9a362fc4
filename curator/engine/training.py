"""Cross-fitted proxy training with a recorder of per-example training dynamics.

K stratified folds; the model of fold k trains on the other folds. Every example therefore gets
out-of-fold predictions from model ``fold`` and in-sample dynamics from model ``(fold + 1) % K``.
All per-example records live in memory-mapped ``.npy`` files under ``artifacts/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from ..atomic import write_json
from .config import TrainConfig
from .folds import EPOCH_STATS, ArtifactSink, FoldJob
from .inputs import Normalizer
from .models import ModelSpec

if TYPE_CHECKING:
    from ..backends import Backend


@dataclass
class TrainResult:
    folds: np.ndarray                      # (N,) int, the fold each example is held out in
    oof_logits: np.ndarray                 # (N, C) float32, memory-mapped
    embeddings: np.ndarray                 # (N, D) float32, out-of-fold penultimate features
    checkpoints: list[dict]                # {"fold", "epoch", "lr", "file"}
    spec: ModelSpec
    normalizer: Normalizer
    config: TrainConfig
    fold_train_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0


def assign_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) fold index, stratified by label; classes smaller than k are spread round-robin."""
    folds = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    big = counts[labels] >= k
    if big.any():
        idx = np.flatnonzero(big)
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for fold, (_, test) in enumerate(splitter.split(np.zeros(len(idx)), labels[idx])):
            folds[idx[test]] = fold
    small = np.flatnonzero(~big)
    folds[small] = rng.permutation(len(small)) % k
    return folds


def _open_array(path: Path, shape: tuple[int, ...], dtype, resume: bool) -> np.ndarray:
    """A writable memory-mapped .npy: reopened when resuming and the shape matches, else created."""
    if resume and path.exists():
        arr = np.load(path, mmap_mode="r+")
        if arr.shape == shape and arr.dtype == np.dtype(dtype):
            return arr
    return np.lib.format.open_memmap(path, "w+", dtype, shape)


def train_cross_fitted(inputs: np.ndarray, labels: np.ndarray, kind: str, n_classes: int, config: TrainConfig,
                       backend: "Backend", artifacts: Path, progress: Callable[..., object] | None = None,
                       resume: bool = False, backbone: dict | None = None) -> TrainResult:
    """Train K fold proxies and record everything scorers need into ``artifacts/``.

    inputs: (N, C, H, W) uint8 or (N, D) float32, or with kind ``"activations"`` a backbone's
    activations at its cut (N, C, H, W) float16; labels: (N,) int64. ``backbone``: what made the
    inputs when a pretrained backbone did (:func:`curator.engine.features.proxy_inputs`); recorded
    in ``model.json``, and for activations it says which blocks the fine-tuned proxies hold.
    Writes dynamics_{p_label,margin,correct,loss,prob_sq,head_grad_sq,step_lr}.npy (E, N), dynamics_ema.npy (N, C),
    dynamics_logits.npy (E, N, C) when ``config.keeps_logits``, oof_logits.npy, embeddings.npy,
    checkpoints/*.pt, checkpoints.json and model.json. Each finished fold is recorded in
    ``fold<k>.json``; with ``resume`` those folds are not trained again (a fold depends only on
    the seed and its index, so the result is the same as an uninterrupted run).
    ``backend`` trains the folds: a started :class:`curator.backends.Backend` (the local one trains
    them one after another on its device); whichever it is, only this process writes ``artifacts/``.
    """
    return _train_with(backend, backend.fold_device, inputs, labels, kind, n_classes, config, artifacts,
                       progress, resume, time.perf_counter(), backbone)


def _train_with(backend: "Backend", device: torch.device, inputs: np.ndarray, labels: np.ndarray, kind: str,
                n_classes: int, config: TrainConfig, artifacts: Path, progress: Callable[..., object] | None,
                resume: bool, started: float, backbone: dict | None = None) -> TrainResult:
    n = len(labels)
    cfg = config.resolved(device, n_train=n * (config.folds - 1) // config.folds)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "checkpoints").mkdir(exist_ok=True)
    folds = assign_folds(labels, cfg.folds, cfg.seed)
    if kind == "activations":
        normalizer = Normalizer("identity", (), ())
        spec = ModelSpec(kind="finetune", input_shape=tuple(inputs.shape[1:]), n_classes=n_classes, width=cfg.width,
                         backbone={k: backbone[k] for k in ("name", "weights", "cut")})
    else:
        normalizer = Normalizer.fit(inputs, kind)
        spec = ModelSpec(kind="cnn" if kind == "image" else "mlp", input_shape=tuple(inputs.shape[1:]),
                         n_classes=n_classes, width=cfg.width)

    E, C = cfg.epochs, n_classes
    records = {
        **{f"dyn_{name}": _open_array(artifacts / f"dynamics_{name}.npy", (E, n), dtype, resume)
           for name, dtype in EPOCH_STATS.items()},
        "dyn_ema": _open_array(artifacts / "dynamics_ema.npy", (n, C), np.float32, resume),
        "oof_logits": _open_array(artifacts / "oof_logits.npy", (n, C), np.float32, resume),
        "embeddings": _open_array(artifacts / "embeddings.npy", (n, spec.embedding_dim), np.float32, resume),
    }
    if cfg.keeps_logits(n, C):
        records["dyn_logits"] = _open_array(artifacts / "dynamics_logits.npy", (E, n, C), np.float32, resume)
    fold_logs = {}
    for k in range(cfg.folds):
        if resume and (artifacts / f"fold{k}.json").exists():
            fold_logs[k] = json.loads((artifacts / f"fold{k}.json").read_text())
    sink = ArtifactSink(records, artifacts, labels, cfg.ema_beta)
    todo = [k for k in range(cfg.folds) if k not in fold_logs]
    job = FoldJob(folds, cfg, spec, normalizer, inputs, labels)
    for log in backend.train_folds(todo, job, sink, progress):
        sink.flush()
        write_json(artifacts / f"fold{log['fold']}.json", log)   # written last: the fold is complete on disk
        fold_logs[log["fold"]] = log
    fold_logs = [fold_logs[k] for k in range(cfg.folds)]

    np.save(artifacts / "folds.npy", folds)
    checkpoints = [c for log in fold_logs for c in log["checkpoints"]]
    write_json(artifacts / "checkpoints.json", checkpoints)
    write_json(artifacts / "model.json", {"spec": spec.to_dict(), "normalizer": normalizer.to_dict(),
                                          "train_config": asdict(cfg), "backbone": backbone})
    return TrainResult(folds, records["oof_logits"], records["embeddings"], checkpoints, spec,
                       normalizer, cfg, [log["train_accuracy"] for log in fold_logs],
                       time.perf_counter() - started)
