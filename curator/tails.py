"""Outlier evidence: how far into its tail each example sits, as a probability, for every column that
declares ``outlier`` and for two held-out measures of atypicality.

**Robust tails.** Above its 80th percentile a column's values are compared with an exponential tail
fitted to the band between its 80th and 95th percentiles (so outliers, while fewer than 5% of the
examples, do not move it): at a value v the expected number of ordinary examples at least as
extreme is ``N * 0.2 * 4 ** (-(v - q80) / (q95 - q80))``; the observed number is ``#{values >= v}``. One minus their
ratio (the tail-area false discovery rate), made monotone in v, is the probability that an example
that far out is a real outlier. A tail that decays like an exponential or faster (a Gaussian, a
rank, noise) never rises above it, so such a column flags nothing on its own; examples that stand
out beyond what the rest of the tail predicts do. Every scorer can flag this way, a log distance
included; a rank cannot (it has no tail).

**Atypical single examples** (held-out, built in):
- ``heldout_isolation``: 1 - the largest cosine similarity of the out-of-fold embedding to a class
  centre of its fold (centres of the examples the held-out model assigns to their own label): far
  from every class.
- ``heldout_hardness``: -log max_c sqrt(p_oof(c) p_in(c)): no class is likely under both the
  held-out model and the model that trained on the example, whatever its label; a flipped label is
  not hard (both see its true class), an image unlike every class is.
"""

from __future__ import annotations

import numpy as np

from .engine.knn import unit_rows
from .blocks import row_slices

#: The tail is fitted between these quantiles, and flags start above the first.
TAIL_BAND = (0.8, 0.95)


def tail_probability(values: np.ndarray) -> np.ndarray:
    """(N,) in [0, 1]: the probability that each example is beyond the column's ordinary tail
    (0 below the 80th percentile)."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    out = np.zeros(n)
    if n < 20:
        return out
    low, high = TAIL_BAND
    start, end = np.quantile(v, [low, high])
    if end <= start:
        return out
    rate = np.log((1 - low) / (1 - high)) / (end - start)
    tail = np.flatnonzero(v > start)
    order = tail[np.argsort(-v[tail], kind="stable")]
    # Observed count at or above each value (ties share the larger count).
    sorted_vals = np.sort(v)
    observed = n - np.searchsorted(sorted_vals, v[order], side="left")
    expected = n * (1 - low) * np.exp(-rate * (v[order] - start))
    probability = np.clip(1.0 - expected / observed, 0.0, 1.0)
    # Monotone: an example further out is at least as likely an outlier as one closer in.
    out[order] = np.maximum.accumulate(probability[::-1])[::-1]
    return out


def heldout_isolation(embeddings: np.ndarray, folds: np.ndarray, labels: np.ndarray,
                      predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(N,) 1 - max cosine similarity to the class centres of the example's fold (see module doc)."""
    x = unit_rows(np.asarray(embeddings, dtype=np.float32))
    out = np.zeros(len(x), np.float32)
    for fold in np.unique(folds):
        rows = np.flatnonzero(folds == fold)
        right = rows[predicted[rows] == labels[rows]]
        counts = np.bincount(labels[right], minlength=n_classes)
        if not counts.any():
            continue
        by_class = right[np.argsort(labels[right], kind="stable")]
        present = counts > 0
        starts = np.concatenate([[0], np.cumsum(counts[present])[:-1]])
        sums = np.add.reduceat(x[by_class].astype(np.float64), starts, axis=0)        # one row per present class
        centres = unit_rows((sums / counts[present, None]).astype(np.float32))
        # Similarities in row blocks: never a (rows, classes) array of a whole fold at once.
        for block in row_slices(len(rows), len(centres)):
            at = rows[block]
            out[at] = 1.0 - (x[at] @ centres.T).max(axis=1)
    return out


def heldout_hardness(oof_probs: np.ndarray, insample_probs: np.ndarray | None) -> np.ndarray:
    """(N,) -log max_c of the geometric mean of the held-out and in-sample probabilities (read in row
    blocks: either may be a large memory map)."""
    out = np.empty(len(oof_probs), np.float32)
    for rows in row_slices(len(oof_probs), oof_probs.shape[1]):
        p = np.array(oof_probs[rows], dtype=np.float32)
        if insample_probs is None:
            out[rows] = -np.log(np.clip(p.max(axis=1).astype(np.float64), 1e-12, None))
        else:       # the largest geometric mean is the square root of the largest product
            p *= np.asarray(insample_probs[rows], dtype=np.float32)
            out[rows] = -0.5 * np.log(np.clip(p.max(axis=1).astype(np.float64), 1e-24, None))
    return out
