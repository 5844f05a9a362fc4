"""early_learning: the early-learning phenomenon (Arpit et al. 2017; Liu et al. 2020, ELR).

Before a network memorises noisy labels it predicts their true class. A temporal-ensemble target
t <- beta * t + (1 - beta) * p is kept over the epochs (bias-corrected, as the EMA starts at 0);
the score is 1 - t[y]. ``early_learning_disagrees`` is 1 where argmax t != y, the suggested label.

Options (``[scorers.early_learning]``): ``beta`` (default 0.7).
"""

from __future__ import annotations

import numpy as np

import curator


BETA = 0.7


def check_options(options) -> None:
    beta = options["beta"]
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
        raise curator.ConfigError(f"[scorers.early_learning] beta = {beta!r}: must be a number in [0, 1)")


def score_early_learning(ctx: curator.ScoreContext) -> dict[str, np.ndarray]:
    target = ctx.dynamics.ema_rows(float(ctx.options.get("beta", BETA)))    # (N, C), recorded in training
    labels = np.asarray(ctx.labels)
    score = np.empty(ctx.n_examples, np.float32)
    disagrees = np.empty(ctx.n_examples, np.float32)
    for rows in curator.row_slices(ctx.n_examples, ctx.n_classes):
        t, y = target[rows], labels[rows]
        score[rows] = 1.0 - t[np.arange(len(t)), y]
        disagrees[rows] = t.argmax(axis=1) != y
    return {"early_learning": score, "early_learning_disagrees": disagrees}


@curator.hookimpl
def register_scorers(register):
    register(curator.Scorer(
        name="early_learning",
        issue=("mislabeled",),
        requires=("dynamics",),
        score=score_early_learning,
        description="1 - EMA target probability of the given label over training (ELR early learning)",
        options={"beta": BETA},
        check_options=check_options,
    ))
