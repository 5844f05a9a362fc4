"""kernel_density: how crowded an example's neighbourhood is in the hidden representation
(Jiang et al. 2021, kernel-density proxy of the C-score).

On the shared kNN graph of L2-normalised out-of-fold embeddings (``ctx.knn``: each example's k
nearest others of its own fold), with d the Euclidean distance between unit vectors, d^2 = 2 - 2 cos,
and a Gaussian kernel K(i, j) = exp(-d_ij^2 / (2 sigma^2)):

- main column ``kernel_density``: minus the density (1/k) sum_j K(i, j). Isolated examples score
  high: an outlier signal.
- ``kernel_density_label``: minus the label-aware density (1/k) sum_j K(i, j) * (+1 if y_j == y_i
  else -1), i.e. same-class minus other-class density. Examples whose neighbours carry other labels
  score high: a mislabel signal (outliers with arbitrary labels score high too).

Both columns are negated here, so the scorer keeps ``direction="higher"``: what ``score_kernel_density``
returns already reads higher = more suspicious. The scorer declares ``issue=("outlier",)`` only: the
main column never reads the given label, so it says nothing about mislabels (on digits with 10% flipped
labels it ranks the flips at chance, AUROC 0.5), and feeding it to the mislabel flag would dilute it.
The label-aware column declares ``extra_issues={"kernel_density_label": ("mislabeled",)}`` and so
feeds the mislabel flag.

The kNN graph keeps only k neighbours, so a group of more than about k similar outliers (a batch of
images from another source) looks dense to itself; choose k above the size of such groups.

Options (``[scorers.kernel_density]``): ``k`` neighbours (default 20, capped at fold size - 1);
``bandwidth`` sigma in units of distance between unit vectors (0 < sigma <= 2), default ``"auto"``:
the median over examples of the distance to their k-th neighbour, so the kernel is exp(-1/2) at the
radius of a typical neighbourhood; ``exact_max`` (default 200,000): folds of up to this many examples
get an exact kNN search, larger ones an approximate IVF search (FAISS IVF-Flat, recall@20 about 0.95,
cost growing as M^1.5 instead of M^2). Set it above the fold size to keep every search exact.
"""

from __future__ import annotations

import numpy as np

import curator


def _option_k(options) -> int:
    k = options.get("k", 20)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise curator.ConfigError(f"[scorers.kernel_density] k = {k!r}: must be an integer >= 1")
    return int(k)


def _option_bandwidth(options) -> float | None:
    bandwidth = options.get("bandwidth", "auto")
    if bandwidth == "auto":
        return None
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not 0 < bandwidth <= 2:
        raise curator.ConfigError(
            f"[scorers.kernel_density] bandwidth = {bandwidth!r}: must be 'auto' or a number in (0, 2]")
    return float(bandwidth)


def _option_exact_max(options) -> int:
    exact_max = options.get("exact_max", 200_000)
    if isinstance(exact_max, bool) or not isinstance(exact_max, (int, np.integer)) or exact_max < 0:
        raise curator.ConfigError(f"[scorers.kernel_density] exact_max = {exact_max!r}: must be an integer >= 0")
    return int(exact_max)


def check_options(options) -> None:
    _option_k(options), _option_bandwidth(options), _option_exact_max(options)


def score_kernel_density(ctx: curator.ScoreContext) -> dict[str, np.ndarray]:
    k = _option_k(ctx.options)
    bandwidth = _option_bandwidth(ctx.options)
    indices, sims = ctx.knn(k, exact_max=_option_exact_max(ctx.options))   # (N, k') each, self excluded
    indices = np.asarray(indices)
    d2 = np.clip(2.0 - 2.0 * np.asarray(sims, dtype=np.float64), 0.0, 4.0)
    # Floor: with many exact duplicates the median radius is 0 and the kernel would be a spike.
    sigma2 = bandwidth ** 2 if bandwidth is not None else max(float(np.median(d2[:, -1])), 1e-6)
    kernel = np.exp(-d2 / (2.0 * sigma2))                         # (N, k')
    labels = np.asarray(ctx.labels)
    agree = np.where(labels[indices] == labels[:, None], 1.0, -1.0)
    return {
        "kernel_density": (-kernel.mean(axis=1)).astype(np.float32),
        "kernel_density_label": (-(kernel * agree).mean(axis=1)).astype(np.float32),
    }


@curator.hookimpl
def register_scorers(register):
    register(curator.Scorer(
        name="kernel_density",
        issue=("outlier",),
        extra_issues={"kernel_density_label": ("mislabeled",)},
        requires=("embeddings", "knn"),
        score=score_kernel_density,
        description="minus Gaussian kernel density among kNN of out-of-fold embeddings; plus a label-aware column",
        options={"k": 20, "bandwidth": "auto", "exact_max": 200_000},
        check_options=check_options,
    ))
