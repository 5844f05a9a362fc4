"""The training loop every retrain method uses: :func:`fit` (SGD with upsampling, MAT's logit
adjustment or GroupDRO's group weights, and per-epoch model selection) and :func:`predict_logits`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.optim import ScheduledSGD
from ..errors import ConfigError
from .config import Hyper
from .mat import adjusted_cross_entropy

class TensorBank:
    """In-memory (N, ...) float inputs used as they are (no normalisation): the ``InputBank`` interface."""

    def __init__(self, inputs, device: torch.device = torch.device("cpu")):
        self.data = torch.as_tensor(np.asarray(inputs, dtype=np.float32)).to(device)
        self.device = device

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        return self.data[torch.as_tensor(index).to(self.device)]


@dataclass
class Fitted:
    """What :func:`fit` did.

    best: criterion -> (score, epoch (1-based)) of the best epoch under each criterion ``select`` returned, then
    ``last`` (the last epoch); states: criterion -> that epoch's ``state_dict`` (with ``select``; the model
    itself holds the first criterion's);
    history: every epoch's scores; group_weights: GroupDRO's final weights q, (G,), or None.
    """

    best: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    group_weights: np.ndarray | None = None

    @property
    def epoch(self) -> int:
        """The kept epoch of the first criterion (the last epoch without ``select``)."""
        return next(iter(self.best.values()))[1]


def fit(model: nn.Module, bank, rows: np.ndarray, labels: np.ndarray, hyper: Hyper, *, seed: int = 0,
        device: torch.device = torch.device("cpu"), weights: np.ndarray | None = None,
        log_prior: np.ndarray | None = None, groups: np.ndarray | None = None, dro_step: float = 0.01,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        select: Callable[[nn.Module], dict[str, tuple]] | None = None) -> Fitted:
    """Train ``model`` in place with SGD (Nesterov momentum, warm-up + cosine) and return what was kept.

    rows: (n,) indices into ``bank``; labels: (n,) int targets of those rows.
    weights: (n,) sampling weights — each epoch draws n rows with replacement in proportion (upsampling).
    log_prior: (n, C) MAT adjustment added (detached) to the logits in the loss only.
    groups: (n,) int group of each row for GroupDRO (Sagawa et al. 2020): the loss is Σ_g q_g ℓ_g with
    q_g ← q_g·exp(dro_step·ℓ_g) after every batch.
    augment: applied to every training batch (never to what ``select`` or :func:`predict_logits` sees).
    select: called after every epoch; returns criterion -> score tuple (higher is better). The best epoch of
    each criterion is kept (``Fitted.states``), and the last epoch as criterion ``last``; the model ends as the
    best epoch of the first criterion. Without ``select`` the model ends as trained (``last`` only).
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    if n == 0:
        raise ConfigError("no training examples left (every row was dropped)")
    y_all = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
    rows_dev = torch.as_tensor(rows)
    prior = torch.as_tensor(log_prior, device=device) if log_prior is not None else None
    group_t = torch.as_tensor(np.asarray(groups, dtype=np.int64), device=device) if groups is not None else None
    q = torch.ones(int(group_t.max()) + 1, device=device) / (int(group_t.max()) + 1) if groups is not None else None
    draw = torch.as_tensor(np.asarray(weights, dtype=np.float64)) if weights is not None else None
    gen = torch.Generator().manual_seed(seed)
    batch = min(hyper.batch_size, n)
    use_bf16 = device.type == "cuda"
    opt = ScheduledSGD(model.parameters(), hyper.epochs * math.ceil(n / batch), hyper.lr, hyper.momentum,
                       hyper.weight_decay)
    fitted = Fitted()
    for epoch in range(hyper.epochs):
        model.train()
        order = (torch.multinomial(draw, n, replacement=True, generator=gen) if draw is not None
                 else torch.randperm(n, generator=gen))
        for start in range(0, n, batch):
            pos = order[start:start + batch]
            x = bank.batch(rows_dev[pos])
            if augment is not None:
                x = augment(x)
            pos_dev = pos.to(device)
            y = y_all[pos_dev]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(x)
            logits = logits.float()
            if prior is not None:
                losses = adjusted_cross_entropy(logits, prior[pos_dev], y, reduction="none")
            else:
                losses = F.cross_entropy(logits, y, reduction="none")
            if q is not None:
                g = group_t[pos_dev]
                group_loss = torch.zeros_like(q).index_add(0, g, losses)
                counts = torch.zeros_like(q).index_add(0, g, torch.ones_like(losses))
                group_loss = group_loss / counts.clamp_min(1)
                with torch.no_grad():
                    q = q * torch.exp(dro_step * group_loss.detach() * (counts > 0))
                    q = q / q.sum()
                loss = (q * group_loss).sum()
            else:
                loss = losses.mean()
            opt.step(loss)
        if select is not None:
            scores = {name: tuple(score) for name, score in select(model).items()}
            fitted.history.append(scores)
            for name, score in scores.items():
                if name not in fitted.best or score > fitted.best[name][0]:
                    fitted.best[name] = (score, epoch + 1)
                    fitted.states[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    fitted.best["last"] = ((), hyper.epochs)
    if select is not None:
        fitted.states["last"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(next(iter(fitted.states.values())))
    fitted.group_weights = q.cpu().numpy() if q is not None else None
    model.eval()
    return fitted


@torch.no_grad()
def predict_logits(model: nn.Module, bank, rows: np.ndarray, *, device: torch.device = torch.device("cpu"),
                   batch: int = 512) -> np.ndarray:
    """(n, C) float32 logits of ``model`` alone (no adjustment) for ``rows`` of ``bank``."""
    was_training = model.training
    model.eval()
    rows = np.asarray(rows, dtype=np.int64)
    out = []
    for start in range(0, len(rows), batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(model(bank.batch(torch.from_numpy(rows[start:start + batch]))).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
