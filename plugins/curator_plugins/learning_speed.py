"""learning_speed: how slowly an example is learned (Jiang et al. 2021, C-score proxy).

Main column: 1 - mean over epochs of p(y | x), the probability of the given label, recorded while
the in-sample proxy trained. Extra columns (both higher = worse):
- ``learning_speed_aum``: minus the area under the margin (Pleiss et al. 2020), mean over epochs of
  z_y - max_{k != y} z_k;
- ``learning_speed_forgetting``: forgetting events (Toneva et al. 2019), transitions from correct to
  wrong between consecutive epochs; examples never learned count as ``E`` events.
"""

from __future__ import annotations

import numpy as np

import curator


def score_learning_speed(ctx: curator.ScoreContext) -> dict[str, np.ndarray]:
    dyn = ctx.dynamics
    p_label = np.asarray(dyn.p_label, dtype=np.float32)          # (E, N)
    margin = np.asarray(dyn.margin, dtype=np.float32)            # (E, N)
    correct = np.asarray(dyn.correct, dtype=bool)                # (E, N)
    forgotten = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.float32)
    never_learned = ~correct.any(axis=0)
    forgotten[never_learned] = dyn.n_epochs
    return {
        "learning_speed": 1.0 - p_label.mean(axis=0),
        "learning_speed_aum": -margin.mean(axis=0),
        "learning_speed_forgetting": forgotten,
    }


@curator.hookimpl
def register_scorers(register):
    register(curator.Scorer(
        name="learning_speed",
        issue=("mislabeled",),
        requires=("dynamics",),
        score=score_learning_speed,
        description="C-score proxy: 1 - mean p(given label) over epochs; plus AUM and forgetting events",
    ))
