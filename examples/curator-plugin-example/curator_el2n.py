"""EL2N, the error L2-norm score of Paul, Ganguli & Dziugaite (2021), "Deep Learning on a Data Diet".

EL2N(x, y) = ||softmax(z(x)) - e_y||_2: how far the network's prediction is from the one-hot given
label early in training. The paper measures it at an early epoch, averaged over independent runs;
here it is averaged over the first ``early_fraction`` of the epochs that curator's in-sample proxies
recorded. Examples still predicted far from their label score high: a mislabel signal.

Options (``[scorers.el2n]`` in curator.toml): ``early_fraction`` in (0, 1], default 0.5.
"""

import math

import numpy as np

import curator


def el2n(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(E, N, C) logits and (N,) labels -> (N,) float32: mean over epochs of ||softmax(z) - e_y||_2."""
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    p[:, np.arange(len(labels)), labels] -= 1.0
    return np.linalg.norm(p, axis=2).mean(axis=0).astype(np.float32)


def check_options(options) -> None:
    """Called by curator before any training, so a bad value costs nothing."""
    fraction = options["early_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise curator.ConfigError(f"[scorers.el2n] early_fraction = {fraction!r}: must be a number in (0, 1]")


def score_el2n(ctx: curator.ScoreContext) -> np.ndarray:
    n_early = math.ceil(ctx.options["early_fraction"] * ctx.dynamics.n_epochs)
    return el2n(ctx.dynamics.logits[:n_early], ctx.labels)


@curator.hookimpl
def register_scorers(register):
    register(curator.Scorer(
        name="el2n",
        issue="mislabeled",
        requires="dynamics",
        score=score_el2n,
        description="EL2N (Paul et al. 2021): ||softmax - one-hot label||, mean over the early epochs",
        options={"early_fraction": 0.5},
        check_options=check_options,
    ))
