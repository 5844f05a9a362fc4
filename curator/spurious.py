"""Spurious correlations: shortcut groups the held-out model fails on, and metadata columns that
predict the label on their own.

A model that learned a shortcut (the ruler in the skin-lesion photo) gets most of a class right and
a coherent minority of it wrong: the bias-conflicting examples, which the held-out model consistently
pushes towards the same other class. So per class, the directions of the out-of-fold logit vectors
are clustered (spherical k-means; on digits with a planted patch shortcut this isolates the minority far better
than clustering the embeddings, which mostly follow the digit's shape; with more than ``CLUSTER_DIMS``
classes, on the logits of the classes the members come nearest to, as the others carry no direction
any member is pushed in), and a cluster is a **suspected shortcut group** when it is large enough, its
held-out accuracy falls well below its class's, and so many misses in so few members would be rare
by chance (a binomial tail at the rest of the class's miss rate, Bonferroni over every cluster
tested: with a thousand classes a few small clusters fall short by chance alone). Its held-out
misses are flagged ``is_spurious``. Examples another decision explains (flagged mislabels,
foreign batches) are left out first, so a cluster of flipped labels is never taken for a shortcut; a
cluster whose misses are mostly outlier flags is a few atypical images, not a shortcut; and a group
needs the rest of its class to be easy (a hard, confusable class has no coherent minority to speak of).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binom

from .engine.knn import spherical_kmeans, unit_rows
from .blocks import row_slices
from .mislabel import group_rows

#: Above this many classes a class's members are clustered on the logits of the CLUSTER_DIMS classes
#: with the largest mean held-out probability among them (its own included).
CLUSTER_DIMS = 64


@dataclass
class ShortcutGroup:
    """A cluster of one class that the held-out model gets wrong far more often than the rest of the
    class (``class_heldout_accuracy``: the class without the cluster)."""

    label: str
    cluster: int
    size: int
    heldout_accuracy: float
    class_heldout_accuracy: float
    ids: list[str]
    kind: str = "shortcut"

    def to_dict(self) -> dict:
        return {"class": self.label, "cluster": self.cluster, "kind": self.kind, "size": self.size,
                "heldout_accuracy": round(self.heldout_accuracy, 4),
                "class_heldout_accuracy": round(self.class_heldout_accuracy, 4), "ids": self.ids}


@dataclass
class Shortcuts:
    """groups: suspected shortcut groups, worst first; is_spurious: (N,) held-out misses inside a
    group; gap: (N,) accuracy gap of each example's cluster; group_index: (N,) index into ``groups``
    of each example's group, -1 outside any."""

    groups: list[ShortcutGroup]
    is_spurious: np.ndarray
    gap: np.ndarray
    group_index: np.ndarray


def shortcut_groups(oof_logits: np.ndarray, labels: np.ndarray, classes: list[str], ids: list[str], *,
                    insample_probs: np.ndarray | None = None, exclude: np.ndarray | None = None,
                    atypical: np.ndarray | None = None, clusters_per_class: int = 4, min_group_size: int = 10,
                    accuracy_gap: float = 0.3, alpha: float = 0.05, seed: int = 0) -> Shortcuts:
    """Find suspected shortcut groups. oof_logits: (N, C) out-of-fold (may be a memory map); labels:
    (N,); exclude: (N,) bool, examples another decision already explains (flagged mislabels, foreign
    batches), left out of the clusters and of the class accuracies; atypical: (N,) bool, examples the
    outlier decision flags: a cluster whose held-out misses are mostly such is a few atypical images
    among hard ones, not a shortcut, and is no group.

    A cluster is a group when it has ``min_group_size`` members, its held-out accuracy is at least
    ``accuracy_gap`` below the rest of its class, the rest of its class is easy (held-out accuracy at
    least 1 - ``accuracy_gap``) and, given ``insample_probs`` (N, C), the model that trained on the
    cluster fits it: its in-sample accuracy is at least ``accuracy_gap`` above the held-out one; and its
    misses are significant: P(at least that many misses among its members at the rest of the class's
    miss rate, add-one smoothed) at most ``alpha`` divided by the number of clusters tested. A
    shortcut fails a coherent minority of a class the model otherwise gets right, and the minority is
    learnable from its own features; a hard or ambiguous region is hard for both models."""
    n = len(labels)
    excluded = np.zeros(n, bool) if exclude is None else np.asarray(exclude, bool)
    correct = np.zeros(n, bool)
    fitted = np.ones(n, bool)
    for rows in row_slices(n, oof_logits.shape[1]):
        correct[rows] = np.asarray(oof_logits[rows]).argmax(axis=1) == labels[rows]
        if insample_probs is not None:
            fitted[rows] = np.asarray(insample_probs[rows]).argmax(axis=1) == labels[rows]
    groups: list[ShortcutGroup] = []
    members_of: list[np.ndarray] = []
    gap = np.zeros(n, np.float32)
    kept = np.flatnonzero(~excluded)
    order, starts = group_rows(labels[kept], len(classes))
    members_by_class = [kept[order[starts[c]:starts[c + 1]]] for c in range(len(classes))]
    clusters = [min(clusters_per_class, len(members) // max(min_group_size, 1)) for members in members_by_class]
    tests = max(sum(k for k in clusters if k >= 2), 1)
    for c, (members, k) in enumerate(zip(members_by_class, clusters)):
        if k < 2:
            continue
        z = np.asarray(oof_logits[members], dtype=np.float64)
        held = np.exp(z - z.max(axis=1, keepdims=True))
        held /= held.sum(axis=1, keepdims=True)
        p_label = held[:, c]
        if z.shape[1] > CLUSTER_DIMS:
            mass = held.mean(axis=0)
            mass[c] = np.inf
            z = z[:, np.argsort(-mass, kind="stable")[:CLUSTER_DIMS]]
        assignment = spherical_kmeans(unit_rows(z), k, seed)
        for g in range(k):
            inside = assignment == g
            rows = members[inside]
            acc = float(correct[rows].mean())
            rest = float(correct[members[~inside]].mean()) if (~inside).any() else acc
            gap[rows] = max(rest - acc, 0.0)
            learnable = insample_probs is None or float(fitted[rows].mean()) - acc >= accuracy_gap
            missed = np.flatnonzero(inside & ~correct[members])
            explained = atypical is not None and len(missed) > 0 and atypical[members[missed]].mean() >= 0.5
            if (len(rows) >= min_group_size and rest - acc >= accuracy_gap and rest >= 1 - accuracy_gap and learnable
                    and not explained and _rare_misses(correct[rows], correct[members[~inside]], alpha / tests)):
                worst = members[missed[np.argsort(p_label[missed])][:20]]
                groups.append(ShortcutGroup(classes[c], g, len(rows), acc, rest, [ids[i] for i in worst]))
                members_of.append(rows)
    order = sorted(range(len(groups)), key=lambda j: groups[j].heldout_accuracy - groups[j].class_heldout_accuracy)
    group_index = np.full(n, -1, np.int64)
    for rank, j in enumerate(order):
        group_index[members_of[j]] = rank
    is_spurious = (group_index >= 0) & ~correct
    return Shortcuts([groups[j] for j in order], is_spurious, gap, group_index)


def _rare_misses(cluster_correct: np.ndarray, rest_correct: np.ndarray, level: float) -> bool:
    """Whether the cluster's misses would be rarer than ``level`` at the rest's miss rate (add-one
    smoothed, never 0): the binomial tail of at least that many misses among its members."""
    rate = (float((~rest_correct).sum()) + 1.0) / (len(rest_correct) + 2.0)
    return bool(binom.sf(int((~cluster_correct).sum()) - 1, len(cluster_correct), rate) <= level)


def attribute_warnings(metadata: pd.DataFrame, labels: np.ndarray, *, margin: float = 0.2,
                       max_values: int = 50) -> list[dict]:
    """How well each metadata column alone predicts the label.

    Per column: accuracy of predicting the label by the majority label of the column's value (numeric
    columns binned into deciles), measured out-of-sample with 2-fold cross-fitting, against the
    majority-class baseline. ``warning`` when it beats the baseline by ``margin`` or more.
    """
    out = []
    n = len(labels)
    rng = np.random.default_rng(0)
    half = rng.permutation(n) < n // 2
    baseline = float(np.bincount(labels).max() / n)
    for column in metadata.columns:
        if column == "split":
            continue
        values = metadata[column]
        if values.dtype.kind in "fiu" and values.nunique() > max_values:
            values = pd.qcut(values, 10, duplicates="drop").astype(str)
        values = values.astype(str).to_numpy()
        if len(set(values)) > max_values or len(set(values)) < 2:
            continue
        hits = 0
        for fit, test in ((half, ~half), (~half, half)):
            table = pd.crosstab(values[fit], labels[fit])
            majority = table.idxmax(axis=1).to_dict()
            fallback = int(np.bincount(labels[fit]).argmax())
            hits += sum(majority.get(v, fallback) == y for v, y in zip(values[test], labels[test]))
        accuracy = hits / n
        out.append({"column": str(column), "accuracy": round(accuracy, 4), "baseline": round(baseline, 4),
                    "warning": accuracy >= baseline + margin})
    return out
