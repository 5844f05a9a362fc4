"""Held-out logits for MAT trained here, when no ``curator score`` run provides them: cross-fitted
models (:func:`cross_fitted_logits`) or XRM twins with label flipping (:func:`xrm_holdout_logits`,
Pezeshki et al. 2024). Both train with :func:`curator.retrain.loop.fit`."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.optim import ScheduledSGD
from ..engine.training import assign_folds
from .config import Hyper
from .loop import fit, predict_logits


def cross_fitted_logits(make_model: Callable[[], nn.Module], bank, labels: np.ndarray, hyper: Hyper, *,
                        folds: int = 2, seed: int = 0, device: torch.device = torch.device("cpu")) -> np.ndarray:
    """(N, C) held-out logits: K models, each trained by :func:`curator.retrain.fit` on the other folds.

    bank: anything with ``batch(index) -> (B, ...) float tensor`` over N examples; labels: (N,).
    """
    labels = np.asarray(labels, dtype=np.int64)
    fold_of = assign_folds(labels, folds, seed)
    out = None
    for k in range(folds):
        torch.manual_seed(seed * 1009 + k)
        model = make_model().to(device)
        train = np.flatnonzero(fold_of != k)
        fit(model, bank, train, labels[train], hyper, seed=seed * 7919 + k, device=device)
        held = np.flatnonzero(fold_of == k)
        logits = predict_logits(model, bank, held, device=device)
        if out is None:
            out = np.zeros((len(labels), logits.shape[1]), np.float32)
        out[held] = logits
    return out


def xrm_holdout_logits(make_model: Callable[[], nn.Module], bank, labels: np.ndarray, n_classes: int,
                       hyper: Hyper, *, seed: int = 0, device: torch.device = torch.device("cpu"),
                       ) -> tuple[np.ndarray, list[nn.Module]]:
    """Held-out logits from XRM twins (Pezeshki et al. 2024, "Discovering environments with XRM").

    Two twins, each trained on a random half with a class-balanced loss. After every step each example
    of the batch takes, with probability (p_max − 1/C)·C/(C−1), the label its *other* twin (which never
    trains on it) predicts: confident held-out mistakes are echoed, so a twin cannot memorise its way past
    the examples a shortcut gets wrong. Returns ((N, C) logits of the twin that did not train on each
    example, [twin 0, twin 1]); the twins' average is a held-out predictor for any other data.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    gen = torch.Generator().manual_seed(seed)
    half = (torch.randperm(n, generator=gen) % 2).numpy()            # (N,) the twin that trains on each row
    twins = []
    for t in range(2):
        torch.manual_seed(seed * 1009 + t)
        twins.append(make_model().to(device))
    params = [p for m in twins for p in m.parameters()]
    dynamic = torch.as_tensor(labels.copy(), device=device)          # labels as flipped so far
    half_dev = torch.as_tensor(half, device=device)
    batch = min(hyper.batch_size, n)
    opt = ScheduledSGD(params, hyper.epochs * math.ceil(n / batch), hyper.lr, hyper.momentum, hyper.weight_decay)
    for _ in range(hyper.epochs):
        for m in twins:
            m.train()
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            x, y = bank.batch(idx), dynamic[idx.to(device)]
            mine = half_dev[idx.to(device)]
            losses, guesses, confidence, rows = [], [], [], []
            for t in (0, 1):
                sel = torch.nonzero(mine == t).squeeze(1)
                if len(sel) == 0:
                    continue
                losses.append(F.cross_entropy(twins[t](x[sel]).float(), y[sel], reduction="none"))
                with torch.no_grad():         # the sibling's held-out guess on the same rows
                    p_max, guess = torch.softmax(twins[1 - t](x[sel]).float(), 1).max(1)
                guesses.append(guess)
                confidence.append(p_max)
                rows.append(sel)
            rows_t, losses_t = torch.cat(rows), torch.cat(losses)
            y_rows = y[rows_t]
            loss = torch.stack([losses_t[y_rows == c].mean() for c in torch.unique(y_rows)]).mean()
            opt.step(loss)
            chance = ((torch.cat(confidence) - 1.0 / n_classes) * n_classes / (n_classes - 1)).clamp(0, 1)
            flip = torch.bernoulli(chance.cpu(), generator=gen).bool().to(device)
            y_new = torch.where(flip, torch.cat(guesses), y_rows)
            dynamic[idx.to(device)[rows_t]] = y_new
    holdout = np.zeros((n, n_classes), np.float32)
    for t in range(2):
        rows = np.flatnonzero(half != t)
        holdout[rows] = predict_logits(twins[t], bank, rows, device=device)
    return holdout, twins
