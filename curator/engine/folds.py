"""One fold proxy: what it trains from (:class:`FoldJob`), where its results go (:class:`ArtifactSink`)
and the training itself (:func:`train_fold`). Backends run :func:`train_fold` wherever they like; it
depends only on the job and the fold index."""

from __future__ import annotations

import math
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


class ArtifactSink:
    """Where :func:`train_fold` puts a fold's results on the driver: rows into the memory-mapped
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


def train_fold(k: int, folds: np.ndarray, cfg: TrainConfig, spec: ModelSpec, bank: InputBank,
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
