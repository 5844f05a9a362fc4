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


def el2n(prob_sq: np.ndarray, p_label: np.ndarray) -> np.ndarray:
    """(E, N) per-epoch sum of squared probabilities and probability of the given label -> (N,) float32:
    mean over epochs of ||softmax(z) - e_y||_2, since ||p - e_y||^2 = sum_k p_k^2 - 2 p_y + 1."""
    sq = np.asarray(prob_sq, dtype=np.float64) - 2.0 * np.asarray(p_label, dtype=np.float64) + 1.0
    return np.sqrt(np.maximum(sq, 0.0)).mean(axis=0).astype(np.float32)


def check_options(options) -> None:
    """Called by curator before any training, so a bad value costs nothing."""
    fraction = options["early_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise curator.ConfigError(f"[scorers.el2n] early_fraction = {fraction!r}: must be a number in (0, 1]")


def score_el2n(ctx: curator.ScoreContext) -> np.ndarray:
    n_early = math.ceil(ctx.options["early_fraction"] * ctx.dynamics.n_epochs)
    return el2n(ctx.dynamics.prob_sq[:n_early], ctx.dynamics.p_label[:n_early])


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
