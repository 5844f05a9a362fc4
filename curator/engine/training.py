"""Cross-fitted proxy training with a recorder of per-example training dynamics.

K stratified folds; the model of fold k trains on the other folds. Every example therefore gets
out-of-fold predictions from model ``fold`` and in-sample dynamics from model ``(fold + 1) % K``.
All per-example records live in memory-mapped ``.npy`` files under ``artifacts/``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold

from ..atomic import write_json
from ..backends import Backend, FoldJob
from ..errors import ConfigError
from .inputs import InputBank, Normalizer
from .models import ModelSpec, build_model
from .optim import ScheduledSGD

LOSSES = ("ce", "elr")


@dataclass(frozen=True)
class TrainConfig:
    """Proxy-training settings. ``batch_size``/``lr`` of None pick device-appropriate defaults."""

    folds: int = 2
    epochs: int = 6
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    width: int = 16
    loss: str = "ce"
    elr_lambda: float = 3.0
    elr_beta: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"--folds {self.folds}: need at least 2 folds for out-of-fold predictions")
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: need at least 1 epoch")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss {self.loss!r}: expected one of {', '.join(LOSSES)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size {self.batch_size}: must be positive")

    def resolved(self, device: torch.device, n_train: int) -> "TrainConfig":
        """Fill in the batch size (512 on GPU, 128 on CPU, smaller for small datasets so that each epoch
        still has about 30 steps) and a learning rate scaled linearly with batches above 128."""
        batch = self.batch_size or min(512 if device.type == "cuda" else 128, max(32, n_train // 30))
        return TrainConfig(**{**asdict(self), "batch_size": batch, "lr": self.lr or 0.1 * max(batch, 128) / 256})


@dataclass
class TrainResult:
    folds: np.ndarray                      # (N,) int, the fold each example is held out in
    oof_logits: np.ndarray                 # (N, C) float32
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


class ArtifactSink:
    """Where :func:`_train_fold` puts a fold's results on the driver: rows into the memory-mapped
    records, checkpoints into ``artifacts/checkpoints/``. A remote backend records the same calls
    on its worker and replays them here, so every backend writes the same files."""

    def __init__(self, records: dict[str, np.ndarray], artifacts: Path):
        self.records = records
        self.artifacts = artifacts

    def dynamics(self, epoch: int, rows: np.ndarray, logits: np.ndarray) -> None:
        """logits: (len(rows), C) float32 of epoch ``epoch`` for dataset rows ``rows``."""
        self.records["dyn_logits"][epoch, rows] = logits

    def held_out(self, rows: np.ndarray, logits: np.ndarray, embeddings: np.ndarray) -> None:
        """logits: (len(rows), C), embeddings: (len(rows), D), from the model that never saw ``rows``."""
        self.records["oof_logits"][rows] = logits
        self.records["embeddings"][rows] = embeddings

    def checkpoint(self, name: str, state: dict[str, torch.Tensor]) -> None:
        torch.save(state, self.artifacts / "checkpoints" / name)

    def flush(self) -> None:
        for arr in self.records.values():
            arr.flush()


def train_cross_fitted(inputs: np.ndarray, labels: np.ndarray, kind: str, n_classes: int, config: TrainConfig,
                       device: torch.device, artifacts: Path, progress: Callable[..., object] | None = None,
                       resume: bool = False, backend: Backend | None = None) -> TrainResult:
    """Train K fold proxies and record everything scorers need into ``artifacts/``.

    inputs: (N, C, H, W) uint8 or (N, D) float32; labels: (N,) int64.
    Writes dynamics_{logits,p_label,margin,correct,loss}.npy, oof_logits.npy, embeddings.npy,
    checkpoints/*.pt, checkpoints.json and model.json. Each finished fold is recorded in
    ``fold<k>.json``; with ``resume`` those folds are not trained again (a fold depends only on
    the seed and its index, so the result is the same as an uninterrupted run).
    ``backend`` trains the folds: a started :class:`curator.backends.Backend` (default: the local
    backend, one fold after another on ``device``); whichever it is, only this process writes
    ``artifacts/``.
    """
    if backend is None:
        from ..backends.local import LocalBackend   # not at the top: the backends import this module
        backend = LocalBackend()
        backend.start(device)
    return _train_with(backend, backend.fold_device, inputs, labels, kind, n_classes, config, artifacts,
                       progress, resume, time.perf_counter())


def _train_with(backend: Backend, device: torch.device, inputs: np.ndarray, labels: np.ndarray, kind: str,
                n_classes: int, config: TrainConfig, artifacts: Path, progress: Callable[..., object] | None,
                resume: bool, started: float) -> TrainResult:
    n = len(labels)
    cfg = config.resolved(device, n_train=n * (config.folds - 1) // config.folds)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "checkpoints").mkdir(exist_ok=True)
    folds = assign_folds(labels, cfg.folds, cfg.seed)
    normalizer = Normalizer.fit(inputs, kind)
    spec = ModelSpec(kind="cnn" if kind == "image" else "mlp", input_shape=tuple(inputs.shape[1:]),
                     n_classes=n_classes, width=cfg.width)

    E, C = cfg.epochs, n_classes
    records = {
        "dyn_logits": _open_array(artifacts / "dynamics_logits.npy", (E, n, C), np.float32, resume),
        "oof_logits": _open_array(artifacts / "oof_logits.npy", (n, C), np.float32, resume),
        "embeddings": _open_array(artifacts / "embeddings.npy", (n, spec.embedding_dim), np.float32, resume),
    }
    fold_logs = {}
    for k in range(cfg.folds):
        if resume and (artifacts / f"fold{k}.json").exists():
            fold_logs[k] = json.loads((artifacts / f"fold{k}.json").read_text())
    sink = ArtifactSink(records, artifacts)
    todo = [k for k in range(cfg.folds) if k not in fold_logs]
    job = FoldJob(folds, cfg, spec, normalizer, inputs, labels)
    for log in backend.train_folds(todo, job, sink, progress):
        sink.flush()
        write_json(artifacts / f"fold{log['fold']}.json", log)   # written last: the fold is complete on disk
        fold_logs[log["fold"]] = log
    fold_logs = [fold_logs[k] for k in range(cfg.folds)]

    _write_dynamics_stats(np.load(artifacts / "dynamics_logits.npy", mmap_mode="r"), labels, artifacts)
    np.save(artifacts / "folds.npy", folds)
    checkpoints = [c for log in fold_logs for c in log["checkpoints"]]
    write_json(artifacts / "checkpoints.json", checkpoints)
    write_json(artifacts / "model.json", {"spec": spec.to_dict(), "normalizer": normalizer.to_dict(),
                                          "train_config": asdict(cfg)})
    return TrainResult(folds, np.array(records["oof_logits"]), records["embeddings"], checkpoints, spec,
                       normalizer, cfg, [log["train_accuracy"] for log in fold_logs],
                       time.perf_counter() - started)


def _train_fold(k: int, folds: np.ndarray, cfg: TrainConfig, spec: ModelSpec, bank: InputBank,
                y_all: torch.Tensor, device: torch.device, sink: ArtifactSink,
                progress: Callable[..., object] | None) -> dict:
    """Train the fold-k proxy on every other fold; hand its dynamics rows, checkpoints, out-of-fold
    logits and embeddings to ``sink`` (an :class:`ArtifactSink` or anything with its three methods).
    Returns the fold's log (checkpoints with LR, accuracy). Depends only on (cfg.seed, k)."""
    E, C = cfg.epochs, spec.n_classes
    use_bf16 = device.type == "cuda"
    train_idx = np.flatnonzero(folds != k)
    record = (folds[train_idx] + 1) % cfg.folds == k      # examples whose dynamics this model records
    record_rows = train_idx[record]
    torch.manual_seed(cfg.seed * 1009 + k)
    model = build_model(spec).to(device)
    channels_last = spec.kind == "cnn"
    if channels_last:  # about twice as fast for these small convolutions, on CPU and GPU alike
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + k)
    train_cpu = torch.from_numpy(train_idx)
    train_dev = train_cpu.to(device)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    opt = ScheduledSGD(model.parameters(), steps_per_epoch * E, cfg.lr, cfg.momentum, cfg.weight_decay)
    target = torch.zeros(len(train_idx), C, device=device) if cfg.loss == "elr" else None
    checkpoints = []
    for epoch in range(E):
        model.train()
        order = torch.randperm(len(train_idx), generator=gen)      # on the host, where the prefetcher reads it
        order_dev = order.to(device)
        epoch_logits = torch.empty(len(train_idx), C, device=device)
        correct = torch.zeros((), device=device)
        lrs = []
        starts = range(0, len(train_idx), cfg.batch_size)
        steps = zip(starts, bank.batches(train_cpu[order[s:s + cfg.batch_size]] for s in starts))
        if progress:
            steps = progress(steps, desc=f"fold {k + 1}/{cfg.folds} epoch {epoch + 1}/{E}",
                             total=steps_per_epoch, unit="batch")
        for start, x in steps:
            pos = order_dev[start:start + cfg.batch_size]
            idx = train_dev[pos]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y_all[idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y)
            if target is not None:
                # ELR (Liu et al. 2020): pull predictions towards their early-learning targets.
                p = F.softmax(logits, dim=1).clamp(1e-4, 1 - 1e-4)
                with torch.no_grad():
                    t = cfg.elr_beta * target[pos] + (1 - cfg.elr_beta) * (p / p.sum(1, keepdim=True))
                    target[pos] = t
                loss = loss + cfg.elr_lambda * torch.log(1 - (t * p).sum(1)).mean()
            lrs.append(opt.step(loss))
            epoch_logits[pos] = logits.detach()
            correct += (logits.argmax(1) == y).sum()
        # One device->host copy per epoch; rows in dataset order.
        host = epoch_logits.cpu().numpy()
        sink.dynamics(epoch, record_rows, host[record])
        name = f"fold{k}-epoch{epoch}.pt"
        sink.checkpoint(name, {key: t.detach().cpu() for key, t in model.state_dict().items()})
        checkpoints.append({"fold": k, "epoch": epoch, "lr": float(np.mean(lrs)), "file": f"checkpoints/{name}"})

    model.eval()
    held = np.flatnonzero(folds == k)
    with torch.no_grad():
        for start in range(0, len(held), 4 * cfg.batch_size):
            idx = held[start:start + 4 * cfg.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits, h = model.forward_features(bank.batch(torch.from_numpy(idx)))
            sink.held_out(idx, logits.float().cpu().numpy(), h.float().cpu().numpy())
    return {"fold": k, "checkpoints": checkpoints, "train_accuracy": float(correct.item()) / len(train_idx)}


def _write_dynamics_stats(logits: np.ndarray, labels: np.ndarray, artifacts: Path, chunk: int = 65536) -> None:
    """Per-epoch (E, N) views derived from the recorded logits: p_label, margin, correct, loss."""
    E, n, _ = logits.shape
    out = {name: np.lib.format.open_memmap(artifacts / f"dynamics_{name}.npy", "w+", dtype, (E, n))
           for name, dtype in (("p_label", np.float32), ("margin", np.float32), ("correct", np.bool_),
                               ("loss", np.float32))}
    for start in range(0, n, chunk):
        z = torch.from_numpy(np.array(logits[:, start:start + chunk]))       # (E, b, C)
        y = torch.from_numpy(np.array(labels[start:start + chunk])).view(1, -1, 1).expand(E, -1, 1)
        log_p = F.log_softmax(z, dim=2)
        z_y = z.gather(2, y).squeeze(2)
        others = z.scatter(2, y, float("-inf")).amax(2)
        sl = slice(start, start + chunk)
        out["p_label"][:, sl] = log_p.gather(2, y).squeeze(2).exp().numpy()
        out["margin"][:, sl] = (z_y - others).numpy()
        out["correct"][:, sl] = (z.argmax(2) == y.squeeze(2)).numpy()
        out["loss"][:, sl] = (-log_p.gather(2, y).squeeze(2)).numpy()
    for arr in out.values():
        arr.flush()
