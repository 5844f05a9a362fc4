"""early_learning: the early-learning phenomenon (Arpit et al. 2017; Liu et al. 2020, ELR).

Before a network memorises noisy labels it predicts their true class. A temporal-ensemble target
t <- beta * t + (1 - beta) * p is kept over the epochs (bias-corrected, as the EMA starts at 0);
the score is 1 - t[y]. ``early_learning_disagrees`` is 1 where argmax t != y, the suggested label.

Options (``[scorers.early_learning]``): ``beta`` (default 0.7).
"""

from __future__ import annotations

import numpy as np

import curator


def ema_targets(probs: np.ndarray, beta: float) -> np.ndarray:
    """(E, N, C) per-epoch probabilities -> (N, C) bias-corrected EMA target after the last epoch."""
    target = np.zeros(probs.shape[1:], dtype=np.float64)
    for p in probs:
        target = beta * target + (1.0 - beta) * p
    return (target / (1.0 - beta ** len(probs))).astype(np.float32)


def score_early_learning(ctx: curator.ScoreContext) -> dict[str, np.ndarray]:
    beta = float(ctx.options.get("beta", 0.7))
    if not 0.0 <= beta < 1.0:
        raise curator.ConfigError(f"[scorers.early_learning] beta = {beta}: must be in [0, 1)")
    score = np.empty(ctx.n_examples, np.float32)
    disagrees = np.empty(ctx.n_examples, np.float32)
    logits = ctx.dynamics.logits                                  # (E, N, C) memory-mapped
    for start in range(0, ctx.n_examples, 65536):
        sl = slice(start, start + 65536)
        z = np.asarray(logits[:, sl], dtype=np.float64)
        p = np.exp(z - z.max(axis=2, keepdims=True))
        p /= p.sum(axis=2, keepdims=True)
        target = ema_targets(p, beta)
        y = ctx.labels[sl]
        score[sl] = 1.0 - target[np.arange(len(y)), y]
        disagrees[sl] = (target.argmax(axis=1) != y).astype(np.float32)
    return {"early_learning": score, "early_learning_disagrees": disagrees}


@curator.hookimpl
def register_scorers(register):
    register(curator.Scorer(
        name="early_learning",
        issue=("mislabeled",),
        requires=("dynamics",),
        score=score_early_learning,
        description="1 - EMA target probability of the given label over training (ELR early learning)",
    ))
