"""Memorization-Aware Training (Bayat et al. 2024, "The Pitfalls of Memorization").

A model that can memorise fits its minority examples (the ones a shortcut gets wrong) one by one instead
of learning the feature that explains them. MAT trains the final model f on logits shifted by what a
*held-out* model believes about each training example:

    p(y=i | ŷ=j)  ∝ Σ_x p_τ(ŷ=j | x) · 1[y_x = i]        estimated once, over the whole training set
    p_ho(y | x)   = Σ_j p_τ(ŷ=j | x) · p(y | ŷ=j)
    loss          = CE(f(x) + log max(p_ho(·|x), floor), y)    the shift is a constant (detached)

and predicts with f(x) alone. Examples the held-out model already explains contribute little gradient;
the ones it gets wrong — which memorisation would otherwise absorb — drive the learning.

This module is the arithmetic of the shift; held-out logits come from the cross-fitted proxies of a
``curator score`` run or from :mod:`curator.retrain.holdout` (cross-fitted models, XRM twins).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError



def _soft(holdout_logits: np.ndarray | torch.Tensor, tau: float) -> torch.Tensor:
    if tau <= 0:
        raise ConfigError(f"--tau {tau}: the temperature must be positive")
    z = torch.as_tensor(np.asarray(holdout_logits, dtype=np.float32))
    return torch.softmax(z / tau, dim=1)


def label_given_holdout(holdout_logits: np.ndarray, labels: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """(C, C) matrix ``P[j, i] = p(y=i | ŷ_ho=j)``; every row sums to 1.

    holdout_logits: (N, C) logits of models that never trained on the row's example; labels: (N,) int.
    Soft counts: example x adds p_τ(ŷ=j|x) to cell (j, y_x). A prediction no example makes (an empty row)
    says nothing about y, so its row is uniform.
    """
    p = _soft(holdout_logits, tau).double()                       # (N, C)
    n_classes = p.shape[1]
    onehot = F.one_hot(torch.as_tensor(np.array(labels, dtype=np.int64)), n_classes).double()
    joint = p.T @ onehot                                           # (C ŷ, C y)
    mass = joint.sum(1, keepdim=True)
    uniform = torch.full_like(joint, 1.0 / n_classes)
    return torch.where(mass > 0, joint / mass.clamp_min(1e-300), uniform).float().numpy()


def holdout_label_probs(holdout_logits: np.ndarray, labels: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """(N, C) ``p_ho(y|x) = Σ_j p_τ(ŷ=j|x) p(y|ŷ=j)``, with p(y|ŷ) from :func:`label_given_holdout`."""
    p = _soft(holdout_logits, tau)
    table = torch.from_numpy(label_given_holdout(holdout_logits, labels, tau))
    return (p @ table).numpy()


def log_prior(holdout_logits: np.ndarray, labels: np.ndarray, tau: float = 1.0, floor: float = 0.01) -> np.ndarray:
    """(N, C) float32 ``log max(p_ho(y|x), floor)``: the constant MAT adds to the model's logits.

    The floor bounds the push an example can give: with p_ho = 1e-6 the model would have to raise the
    label's logit by 14 nats to fit it, which is memorisation by another name.
    """
    if not 0 < floor < 1:
        raise ConfigError(f"--floor {floor}: must be in (0, 1)")
    return np.log(np.maximum(holdout_label_probs(holdout_logits, labels, tau), floor)).astype(np.float32)


def adjusted_cross_entropy(logits: torch.Tensor, log_prior: torch.Tensor, labels: torch.Tensor,
                           reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits + log_prior`` (B, C); no gradient flows into ``log_prior``."""
    return F.cross_entropy(logits + log_prior.detach(), labels, reduction=reduction)
