"""Mislabel evidence: how many labels are wrong per class pair, and the probability that each one is.

Two steps, both fitted on the run's own data.

**Held-out anchor, calibrated by virtual flips.** Each example's runner-up class j (the most likely
class other than its label i under the out-of-fold probabilities) puts it in cell (i, j); its held-out
evidence is d = log p_j - log p_i. The model that produced p never saw the example, so an image of
class j carrying label i gets the same held-out probabilities as the images labelled j: those are
*virtual flips* into i, whose d (computed as if they were labelled i) is free to score. Per cell, the
number of flips is estimated by counting the cell's examples above the median d of its virtual flips
(half of all flips from j lie there, few clean examples of i do) and doubling it; the held-out
posterior of an example is that count times the density ratio of virtual flips to the cell's
examples at its d (fitted increasing in d: further out is never less suspicious). This is a
confident joint per class pair whose threshold is set by how flips from j actually look, not by a
mean self-confidence. With many classes a cell often holds a single flip: when it lies above its
virtual flips' median the doubled count exceeds the cell and is capped, when below the cell counts
none. What the caps cut off (the flips of the cells that count none) is then placed among the
examples of those cells by their position q among their cell's virtual flips (a flip below the median
has q uniform on [0, 1/2), a clean example q near 0), with the same density-ratio fit pooled over all
such cells. With few classes the cells are large, no cap binds, and this step does nothing.

**Every mislabel scorer, weighted by the run.** The evidence vector of an example is d and every
column that declares ``mislabeled`` (built-in or third-party), each turned into normal scores against
the examples the anchor calls clean. A two-group Gaussian model (quadratic discriminant: its own mean
and covariance for the suspected flips and for the rest) is fitted once, per class where the anchor
suspects enough flips for the fit and over all classes otherwise, with the anchor's posteriors as the
group weights. Its log-likelihood ratio added to the log prior odds of the example's cell is the
posterior log odds. A column that separates the two groups (a scorer that knows the flips) moves the
posterior; a column that does not (noise) has the same distribution in both groups and adds nothing;
correlated columns share their weight through the covariance. A scorer's contribution to one
example is how much its removal changes that example's log-likelihood ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.stats import norm

from .blocks import row_slices

#: Fewest suspected flips per evidence column before a class gets its own fit (else the global one).
FLIPS_PER_FEATURE = 5
#: Floor on every prior and posterior: nothing is certain.
EPS = 1e-4


def group_rows(values: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions grouped by an integer value in [0, n_groups): (order, starts), so that group g is
    ``order[starts[g]:starts[g + 1]]``, in increasing position; one stable sort, not a pass per group."""
    order = np.argsort(values, kind="stable")
    return order, np.searchsorted(values[order], np.arange(n_groups + 1))


@dataclass
class HeldoutCells:
    """The held-out anchor. runner_up, d, prior, posterior: (N,); counts: (C, C) estimated flips
    (given label, true class) per cell, zero diagonal."""

    runner_up: np.ndarray
    d: np.ndarray
    prior: np.ndarray
    posterior: np.ndarray
    counts: np.ndarray


def _row_summaries(probs: np.ndarray, labels: np.ndarray):
    """(runner_up, d, predicted): (N,) each, from ``probs`` (N, C) read in row blocks (it may be a
    memory map too large to copy)."""
    n = len(labels)
    runner_up = np.empty(n, np.int64)
    predicted = np.empty(n, np.int64)
    d = np.empty(n, np.float64)
    for block in row_slices(n, probs.shape[1]):
        p = np.array(probs[block])                  # its own dtype: argmax and two lookups need no more
        rows = np.arange(len(p))
        y = labels[block]
        predicted[block] = p.argmax(axis=1)
        own = p[rows, y].astype(np.float64)
        p[rows, y] = -np.inf
        runner_up[block] = p.argmax(axis=1)
        d[block] = _log(p[rows, runner_up[block]]) - _log(own)
    return runner_up, d, predicted


def _log(p: np.ndarray) -> np.ndarray:
    """log of probabilities in float64, clipped at 1e-12 (the log of zero is not evidence)."""
    return np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0))


def heldout_cells(oof_probs: np.ndarray, labels: np.ndarray) -> HeldoutCells:
    """Per-cell flip counts and held-out posteriors from virtual flips. oof_probs: (N, C); labels: (N,)."""
    n, c = oof_probs.shape
    runner_up, d, predicted = _row_summaries(oof_probs, labels)
    counts = np.zeros((c, c))
    posterior = np.full(n, EPS)
    # Where counting per cell falls short: flips cut off by the caps, and the position q of each example
    # of a cell that counted none among its cell's virtual flips.
    cut_off = 0.0
    q = np.full(n, np.nan)
    confident = np.flatnonzero(predicted == labels)
    order, starts = group_rows(labels[confident], c)
    confident = confident[order]
    by_runner_up, runner_up_starts = group_rows(runner_up, c)
    for j in range(c):
        # Every cell (i, j) at once: the examples whose runner-up is j, against the virtual flips from
        # j (images the held-out model takes for j and that are labelled j, scored as if labelled i).
        members = by_runner_up[runner_up_starts[j]:runner_up_starts[j + 1]]
        source = confident[starts[j]:starts[j + 1]]
        if len(members) == 0 or len(source) < 2:
            continue
        targets, column = np.unique(labels[members], return_inverse=True)     # cell of each member
        block = np.asarray(oof_probs[source])
        virtual = np.sort(_log(block[:, [j]]) - _log(block[:, targets]), axis=0)     # (S, T), each column sorted
        half = len(virtual) // 2
        median = virtual[half] if len(virtual) % 2 else 0.5 * (virtual[half - 1] + virtual[half])
        above = np.bincount(column, weights=d[members] >= median[column], minlength=len(targets))
        count = np.minimum(2.0 * above, np.bincount(column, minlength=len(targets)))
        cut_off += float((2.0 * above - count).sum())
        counts[targets, j] = count
        none = count[column] <= 0
        q[members[none]] = _count_at_most(virtual, column[none], d[members[none]]) / len(virtual)
        for t in np.flatnonzero(count > 0):
            cell = members[column == t]
            posterior[cell] = np.clip(count[t] / len(cell) * _density_ratio(virtual[:, t], d[cell]), EPS, 1 - EPS)
    uncounted = np.flatnonzero(np.isfinite(q))
    if cut_off > 0 and len(uncounted):
        posterior[uncounted] = _placed_flips(q[uncounted], cut_off)
        np.add.at(counts, (labels[uncounted], runner_up[uncounted]), posterior[uncounted])
    # Prior of each cell: its flip rate shrunk towards its class's by one pseudo-example, so a cell
    # where the virtual flips found none still lets strong evidence from the other columns through.
    sizes = np.bincount(labels * c + runner_up, minlength=c * c).reshape(c, c)
    class_rate = counts.sum(axis=1) / np.maximum(np.bincount(labels, minlength=c), 1)
    cell_prior = (counts + class_rate[:, None]) / (sizes + 1.0)
    prior = np.clip(cell_prior[labels, runner_up], EPS, 1 - EPS)
    return HeldoutCells(runner_up, d.astype(np.float32), prior, posterior, counts)


def _count_at_most(columns: np.ndarray, which: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(M,) how many entries of column ``which[m]`` of ``columns`` (S, T), each column sorted, are at
    most ``values[m]``: one searchsorted per column asked about."""
    out = np.empty(len(which), np.int64)
    order, bounds = group_rows(which, columns.shape[1])
    for column in np.flatnonzero(np.diff(bounds)):
        asked = order[bounds[column]:bounds[column + 1]]
        out[asked] = np.searchsorted(columns[:, column], values[asked], side="right")
    return out


def _density_ratio(virtual: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """(len(observed),) density of the ``virtual`` sample over that of ``observed`` at each observed
    value: the share of virtual points among the two samples pooled with equal weight, fitted
    increasing in the value (pool adjacent violators): further out is never less suspicious."""
    pooled = np.concatenate([virtual, observed])
    is_virtual = np.concatenate([np.ones(len(virtual)), np.zeros(len(observed))])
    weight = np.concatenate([np.full(len(virtual), 0.5 / len(virtual)), np.full(len(observed), 0.5 / len(observed))])
    order = np.argsort(pooled, kind="stable")
    share = np.empty(len(pooled))
    share[order] = isotonic_regression(is_virtual[order], weights=weight[order]).x
    share = np.clip(share[len(virtual):], EPS, 1 - EPS)
    return share / (1 - share)


def _placed_flips(q: np.ndarray, flips: float) -> np.ndarray:
    """Posteriors of M examples, ``flips`` of them expected to be flips whose position ``q`` (M,) among
    virtual flips is uniform on [0, 1/2): the flip rate times the density ratio of that uniform to the
    examples' q."""
    m = len(q)
    uniform = (np.arange(m) + 0.5) / (2 * m)
    return np.clip(min(flips / m, 1.0) * _density_ratio(uniform, q), EPS, 1 - EPS)


def clean_normal_scores(values: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """(N,) normal scores of ``values`` against the examples marked ``clean``: Phi^-1 of each value's
    mid-rank among them. Ties stay ties; the clean ones come out standard normal."""
    reference = np.sort(values[clean]) if clean.any() else np.sort(values)
    m = len(reference)
    rank = (np.searchsorted(reference, values, side="left") + np.searchsorted(reference, values, side="right")) / 2
    return norm.ppf(np.clip(rank / m, 0.5 / m, 1 - 0.5 / m))


def _gaussian_loglik(u: np.ndarray, weight: np.ndarray, ridge: float) -> np.ndarray:
    """(N,) log density of the rows of u (N, m) under the Gaussian fitted to them with ``weight``."""
    total = max(weight.sum(), 1e-12)
    mean = (u * weight[:, None]).sum(axis=0) / total
    centred = u - mean
    cov = (centred * weight[:, None]).T @ centred / total + ridge * np.eye(u.shape[1])
    inverse = np.linalg.inv(cov)
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (np.einsum("ij,jk,ik->i", centred, inverse, centred) + logdet)


def likelihood_ratio(u: np.ndarray, weight: np.ndarray, ridge: float = 1e-2) -> np.ndarray:
    """(N,) log f1(u) / f0(u) of two Gaussians fitted with soft group weights ``weight`` (group 1)."""
    return _gaussian_loglik(u, weight, ridge) - _gaussian_loglik(u, 1 - weight, ridge)


@dataclass
class MislabelEvidence:
    """posterior: (N,) P(label wrong); cells: the held-out anchor; contributions: column -> (N,) change
    in log odds when that column is left out (positive: the column argued for a flip)."""

    posterior: np.ndarray
    cells: HeldoutCells
    contributions: dict[str, np.ndarray]


def _class_llr(u: np.ndarray, weight: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Log-likelihood ratio per example: a fit per class with enough suspected flips, else the global fit."""
    llr = likelihood_ratio(u, weight)
    need = FLIPS_PER_FEATURE * u.shape[1]
    flips = np.bincount(labels, weights=weight)
    clean = np.bincount(labels) - flips
    fitted = np.flatnonzero((flips >= need) & (clean >= need))
    by_class, starts = group_rows(labels, len(flips))
    for cls in fitted:
        members = by_class[starts[cls]:starts[cls + 1]]
        llr[members] = likelihood_ratio(u[members], weight[members])
    return llr


def mislabel_evidence(oof_probs: np.ndarray, labels: np.ndarray, columns: dict[str, np.ndarray]) -> MislabelEvidence:
    """The posterior that each label is wrong. oof_probs: (N, C); labels: (N,); columns: name -> (N,)
    higher = more suspicious, every column that declares ``mislabeled``."""
    cells = heldout_cells(oof_probs, labels)
    clean = cells.posterior < 0.5
    names = ["heldout"] + list(columns)
    raw = [cells.d] + [np.asarray(columns[k], np.float64) for k in columns]
    u = np.column_stack([clean_normal_scores(np.asarray(v, np.float64), clean) for v in raw])
    weight = cells.posterior
    llr = _class_llr(u, weight, labels)
    log_odds = np.log(cells.prior / (1 - cells.prior)) + llr
    posterior = 1.0 / (1.0 + np.exp(-np.clip(log_odds, -50, 50)))
    contributions = {}
    if u.shape[1] > 1:
        for k, name in enumerate(names):
            keep = [j for j in range(u.shape[1]) if j != k]
            contributions[name] = (llr - _class_llr(u[:, keep], weight, labels)).astype(np.float32)
    return MislabelEvidence(np.clip(posterior, EPS, 1 - EPS).astype(np.float32), cells, contributions)
