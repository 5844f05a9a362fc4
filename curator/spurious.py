"""Spurious correlations: shortcut groups the held-out model fails on, and metadata columns that
predict the label on their own.

A model that learned a shortcut (the ruler in the skin-lesion photo) gets most of a class right and
a coherent minority of it wrong: the bias-conflicting examples, which the held-out model consistently
pushes towards the same other class. So per class, the directions of the out-of-fold logit vectors
are clustered (k-means; on digits with a planted patch shortcut this isolates the minority far better
than clustering the embeddings, which mostly follow the digit's shape), and a cluster is a **suspected
shortcut group** when it is large enough and its held-out accuracy falls well below its class's. Its
held-out misses are flagged ``is_spurious``; ``spurious_score`` is (1 - p_heldout(y)) times the
accuracy gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from .engine.knn import unit_rows


@dataclass
class ShortcutGroup:
    """A cluster of one class that the held-out model gets wrong far more often than the class."""

    label: str
    cluster: int
    size: int
    heldout_accuracy: float
    class_heldout_accuracy: float
    ids: list[str]
    kind: str = "shortcut"          # or "outlier" / "mislabeled": set by the flagger

    def to_dict(self) -> dict:
        return {"class": self.label, "cluster": self.cluster, "kind": self.kind, "size": self.size,
                "heldout_accuracy": round(self.heldout_accuracy, 4),
                "class_heldout_accuracy": round(self.class_heldout_accuracy, 4), "ids": self.ids}


@dataclass
class Shortcuts:
    """groups: suspected shortcut groups, worst first; is_spurious, score: (N,); group_index: (N,)
    index into ``groups`` of each example's group, -1 outside any."""

    groups: list[ShortcutGroup]
    is_spurious: np.ndarray
    score: np.ndarray
    group_index: np.ndarray


def shortcut_groups(oof_logits: np.ndarray, labels: np.ndarray, classes: list[str], ids: list[str], *,
                    clusters_per_class: int = 4, min_group_size: int = 10, accuracy_gap: float = 0.3,
                    seed: int = 0) -> Shortcuts:
    """Find suspected shortcut groups. oof_logits: (N, C) out-of-fold; labels: (N,)."""
    n = len(labels)
    z = np.asarray(oof_logits, dtype=np.float64)
    oof_probs = np.exp(z - z.max(axis=1, keepdims=True))
    oof_probs /= oof_probs.sum(axis=1, keepdims=True)
    correct = oof_probs.argmax(axis=1) == labels
    p_label = oof_probs[np.arange(n), labels]
    x = unit_rows(oof_logits)
    groups: list[ShortcutGroup] = []
    members_of: list[np.ndarray] = []
    gap = np.zeros(n, np.float32)
    for c in range(len(classes)):
        members = np.flatnonzero(labels == c)
        k = min(clusters_per_class, len(members) // max(min_group_size, 1))
        if k < 2:
            continue
        class_acc = float(correct[members].mean())
        assignment = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(x[members])
        for g in range(k):
            rows = members[assignment == g]
            acc = float(correct[rows].mean())
            gap[rows] = max(class_acc - acc, 0.0)
            if len(rows) >= min_group_size and class_acc - acc >= accuracy_gap:
                missed = rows[~correct[rows]]
                worst = missed[np.argsort(p_label[missed])][:20]
                groups.append(ShortcutGroup(classes[c], g, len(rows), acc, class_acc, [ids[i] for i in worst]))
                members_of.append(rows)
    order = sorted(range(len(groups)), key=lambda j: groups[j].heldout_accuracy - groups[j].class_heldout_accuracy)
    group_index = np.full(n, -1, np.int64)
    for rank, j in enumerate(order):
        group_index[members_of[j]] = rank
    is_spurious = (group_index >= 0) & ~correct
    score = ((1.0 - p_label) * gap).astype(np.float32)
    return Shortcuts([groups[j] for j in order], is_spurious, score, group_index)


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
