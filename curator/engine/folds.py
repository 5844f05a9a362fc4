"""One fold proxy: what it trains from (:class:`FoldJob`), where its results go (:class:`ArtifactSink`)
and the training itself (:func:`train_fold`). Backends run :func:`train_fold` wherever they like; it
depends only on the job and the fold index."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import TrainConfig
from .inputs import InputBank, Normalizer
from .models import ModelSpec, build_model
from .optim import ScheduledSGD


@dataclass(frozen=True)
class FoldJob:
    """Everything a fold proxy trains from; fold k's result depends only on this and k."""

    folds: np.ndarray            # (N,) int, the fold each example is held out in
    config: TrainConfig          # resolved for the device the folds train on
    spec: ModelSpec
    normalizer: Normalizer
    inputs: np.ndarray           # (N, C, H, W) uint8 or (N, D) float32 (its object-store ref on Ray)
    labels: np.ndarray           # (N,) int64


#: Per-epoch statistics recorded for every example at the training step that read it, (E, N) each:
#: name -> dtype. ``head_grad_sq`` is ||grad of its loss w.r.t. the head (weights and bias)||^2 at that
#: step's weights, ``step_lr`` the step's learning rate: their product summed over epochs is TracIn.
EPOCH_STATS = {"p_label": np.float32, "margin": np.float32, "correct": np.bool_, "loss": np.float32,
               "prob_sq": np.float32, "head_grad_sq": np.float32, "step_lr": np.float32}
#: Rows of logits turned into statistics at a time, by bytes of float64 work space.
_STATS_BYTES = 64 << 20


class ArtifactSink:
    """Where :func:`train_fold` puts a fold's results on the driver: rows into the memory-mapped
    records, checkpoints into ``artifacts/checkpoints/``. A remote backend records the same calls
    on its worker and replays them here, so every backend writes the same files.

    records: ``dyn_<stat>`` (E, N) for each of EPOCH_STATS, ``dyn_ema`` (N, C) float32 (the running
    early-learning target, not yet bias-corrected), ``oof_logits`` (N, C), ``embeddings`` (N, D) and,
    when the run keeps them, ``dyn_logits`` (E, N, C). labels: (N,) int64. ema_beta: the EMA's beta.
    """

    def __init__(self, records: dict[str, np.ndarray], artifacts: Path, labels: np.ndarray, ema_beta: float):
        self.records = records
        self.artifacts = artifacts
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ema_beta = float(ema_beta)

    def dynamics(self, epoch: int, rows: np.ndarray, logits: np.ndarray, features_sq: np.ndarray,
                 lrs: np.ndarray) -> None:
        """logits: (len(rows), C) float32 of epoch ``epoch`` for dataset rows ``rows`` (each row once an
        epoch, epochs in order), features_sq: (len(rows),) ||h||^2 of their penultimate features and
        lrs: (len(rows),) the learning rate of the step that read them: the epoch's statistics of those
        rows and their early-learning target."""
        if "dyn_logits" in self.records:
            self.records["dyn_logits"][epoch, rows] = logits
        step = max(1, _STATS_BYTES // (8 * max(1, logits.shape[1])))
        beta = self.ema_beta
        for start in range(0, len(rows), step):
            r = np.asarray(rows[start:start + step])
            z = torch.from_numpy(np.asarray(logits[start:start + step], dtype=np.float64))     # (b, C)
            y = torch.from_numpy(self.labels[r]).view(-1, 1)
            log_p = F.log_softmax(z, dim=1)
            p = log_p.exp()
            log_p_y = log_p.gather(1, y).squeeze(1)
            z_y = z.gather(1, y).squeeze(1)
            prob_sq = (p * p).sum(1)
            residual_sq = prob_sq - 2.0 * log_p_y.exp() + 1.0                  # ||p - e_y||^2
            h_sq = torch.from_numpy(np.asarray(features_sq[start:start + step], dtype=np.float64))
            stats = {"p_label": log_p_y.exp(), "margin": z_y - z.scatter(1, y, float("-inf")).amax(1),
                     "correct": z.argmax(1) == y.squeeze(1), "loss": -log_p_y, "prob_sq": prob_sq,
                     # the head's gradient is (p - e_y) outer [h, 1]: its squared norm in closed form
                     "head_grad_sq": residual_sq.clamp_min(0.0) * (h_sq + 1.0),
                     "step_lr": torch.from_numpy(np.asarray(lrs[start:start + step], dtype=np.float64))}
            for name, values in stats.items():
                self.records[f"dyn_{name}"][epoch, r] = values.numpy()
            # A fold restarted after an interruption starts its rows' EMA from zero again at epoch 0.
            previous = 0.0 if epoch == 0 else np.asarray(self.records["dyn_ema"][r], dtype=np.float64)
            self.records["dyn_ema"][r] = (beta * previous + (1.0 - beta) * p.numpy()).astype(np.float32)

    def held_out(self, rows: np.ndarray, logits: np.ndarray, embeddings: np.ndarray) -> None:
        """logits: (len(rows), C), embeddings: (len(rows), D), from the model that never saw ``rows``."""
        self.records["oof_logits"][rows] = logits
        self.records["embeddings"][rows] = embeddings

    def checkpoint(self, name: str, state: dict[str, torch.Tensor]) -> None:
        torch.save(state, self.artifacts / "checkpoints" / name)

    def flush(self) -> None:
        for arr in self.records.values():
            arr.flush()


def train_fold(k: int, folds: np.ndarray, cfg: TrainConfig, spec: ModelSpec, bank: InputBank,
                y_all: torch.Tensor, device: torch.device, sink: ArtifactSink,
                progress: Callable[..., object] | None) -> dict:
    """Train the fold-k proxy on every other fold; hand its dynamics rows, checkpoints, out-of-fold
    logits and embeddings to ``sink`` (an :class:`ArtifactSink` or anything with its three methods).
    Returns the fold's log (checkpoints with LR, accuracy). Depends only on (cfg.seed, k)."""
    with deterministic_kernels(cfg.deterministic):
        return _train(k, folds, cfg, spec, bank, y_all, device, sink, progress)


def _train(k: int, folds: np.ndarray, cfg: TrainConfig, spec: ModelSpec, bank: InputBank, y_all: torch.Tensor,
           device: torch.device, sink: ArtifactSink, progress: Callable[..., object] | None) -> dict:
    E, C = cfg.epochs, spec.n_classes
    amp = autocast_dtype(device)
    train_idx = np.flatnonzero(folds != k)
    record = (folds[train_idx] + 1) % cfg.folds == k      # examples whose dynamics this model records
    torch.manual_seed(cfg.seed * 1009 + k)
    model = build_model(spec).to(device)
    channels_last = spec.kind in ("cnn", "finetune")
    if channels_last:  # about twice as fast for these small convolutions, on CPU and GPU alike
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + k)
    train_cpu = torch.from_numpy(train_idx)
    train_dev = train_cpu.to(device)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    opt = ScheduledSGD(model.parameters(), steps_per_epoch * E, cfg.lr, cfg.momentum, cfg.weight_decay)
    target = torch.zeros(len(train_idx), C, device=device) if cfg.loss == "elr" else None
    checkpoints = []
    recorded = torch.as_tensor(record, device=device)              # (len(train_idx),) bool
    # Logits of the recorded rows go to the sink in blocks of at most ~64 MB: one device->host copy
    # per block, never an (N, C) array per epoch.
    block = max(cfg.batch_size, (64 << 20) // (4 * C))
    for epoch in range(E):
        model.train()
        order = torch.randperm(len(train_idx), generator=gen)      # on the host, where the prefetcher reads it
        order_dev = order.to(device)
        pending = {"pos": [], "logits": [], "features_sq": [], "lrs": []}
        held = 0
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
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits, h = model.forward_features(x)
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
            keep = recorded[pos]
            pending["pos"].append(pos[keep])
            pending["logits"].append(logits.detach()[keep])
            features_sq = h.detach()[keep].float().pow(2).sum(1)
            pending["features_sq"].append(features_sq)
            pending["lrs"].append(torch.full_like(features_sq, lrs[-1]))     # on the device: no sync per step
            held += len(pos)
            correct += (logits.argmax(1) == y).sum()
            if held >= block:
                _hand_over(sink, epoch, train_idx, pending)
                held = 0
        _hand_over(sink, epoch, train_idx, pending)
        name = f"fold{k}-epoch{epoch}.pt"
        sink.checkpoint(name, {key: t.detach().cpu() for key, t in model.state_dict().items()})
        checkpoints.append({"fold": k, "epoch": epoch, "lr": float(np.mean(lrs)), "file": f"checkpoints/{name}"})

    model.eval()
    held_out = np.flatnonzero(folds == k)
    with torch.no_grad():   # in fp32: the scorers and the flags read these
        for start in range(0, len(held_out), 4 * cfg.batch_size):
            idx = held_out[start:start + 4 * cfg.batch_size]
            logits, h = model.forward_features(bank.batch(torch.from_numpy(idx)))
            sink.held_out(idx, logits.float().cpu().numpy(), h.float().cpu().numpy())
    return {"fold": k, "checkpoints": checkpoints, "train_accuracy": float(correct.item()) / len(train_idx)}


def _hand_over(sink: ArtifactSink, epoch: int, train_idx: np.ndarray, pending: dict[str, list]) -> None:
    """Give ``sink`` the buffered logits, ||h||^2 and step learning rates of recorded rows (``pos``:
    positions into ``train_idx``) and empty the buffer."""
    if pending["pos"]:
        joined = {key: torch.cat(parts).cpu().numpy() for key, parts in pending.items()}
        sink.dynamics(epoch, train_idx[joined["pos"]], joined["logits"], joined["features_sq"], joined["lrs"])
    for parts in pending.values():
        parts.clear()


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision training runs in: bf16 on a CUDA device that supports it, else none (fp32).
    (fp16 would need loss scaling; the proxies are small enough that fp32 costs little there.)"""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@contextmanager
def deterministic_kernels(enabled: bool):
    """torch restricted to deterministic kernels for the block (when ``enabled``), as before after it.
    cuBLAS needs its workspace setting before CUDA starts; it is set for this process and its workers."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before, benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark = benchmark
