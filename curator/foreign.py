"""Foreign batches: examples from another source, mixed in with labels that mean nothing for them.

A batch of foreign images (scans from another device, a folder of digits among clothes) is dense among
itself, so no density tail singles it out, and its labels are arbitrary, so it is no shortcut of one
class either. What gives it away is the held-out representation: it forms clusters whose given labels
are mixed like the dataset's labels as a whole and which the held-out model predicts no better than
chance.

Per fold (the out-of-fold embeddings of one fold come from one network), the L2-normalised embeddings
are clustered with k-means (``clusters_per_class`` x C clusters, at most one per 39 examples and at
most :data:`MAX_CLUSTERS`: a batch from another source has a size of its own, not one that shrinks as
the classes grow; FAISS, seeded). A cluster is a **foreign batch** when

- it has at least ``min_size`` members;
- its labels are mixed like the fold's labels: a goodness-of-fit test of its label counts against the
  fold's class frequencies does not reject them (p >= ``alpha``, 0.05). Where every class expects at
  least 5 members this is the chi-square test; with many classes, where most expected counts are far
  below 1 and the chi-square approximation fails, it is the *collision* test: the number of pairs of
  members sharing a label, against its mean and variance under labels drawn from the frequencies (a
  cluster of one or a few classes has far more such pairs); and
- the held-out model predicts its labels no better than chance: its held-out accuracy is at most
  ``chance_margin`` (0.05) above the accuracy that labels independent of the predictions would give,
  sum_j P(predicted j) P(labelled j) within the cluster.

A cluster of one class, of label errors, or of a few confusable classes (shirts, T-shirts, pullovers,
noisy labels among them) fails the second test; a confusable region the held-out model gets right
fails the third. Measured: the 1,200 MNIST digits among 60,000 Fashion-MNIST images form two such
clusters (1,120 examples, 1,115 of them digits); 20% symmetric and 30% pair label noise give none, on
Fashion-MNIST at 60k and 10k and on MNIST (``benchmarks/detection.py``, ``benchmarks/foreign.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chisquare, norm

from .engine.knn import spherical_kmeans, unit_rows

#: Fewest examples per k-means cluster (FAISS asks for 39 per centroid).
POINTS_PER_CLUSTER = 39
#: Most k-means clusters per fold, whatever the number of classes.
MAX_CLUSTERS = 256
#: Smallest expected count per class for the chi-square test; below it, the collision test.
CHI_SQUARE_MIN_EXPECTED = 5.0


@dataclass
class ForeignBatch:
    """One cluster of one fold judged foreign; ``rows`` index the dataset."""

    fold: int
    cluster: int
    rows: np.ndarray
    largest_label_share: float
    label_mix_p: float              # p of its labels against the fold's class frequencies (mix_pvalue)
    heldout_accuracy: float
    chance_accuracy: float
    ids: list[str]

    def to_dict(self) -> dict:
        return {"kind": "foreign", "fold": self.fold, "cluster": self.cluster, "size": len(self.rows),
                "largest_label_share": round(self.largest_label_share, 4), "label_mix_p": round(self.label_mix_p, 4),
                "heldout_accuracy": round(self.heldout_accuracy, 4),
                "chance_accuracy": round(self.chance_accuracy, 4), "ids": self.ids}


def mix_pvalue(counts: np.ndarray, frequency: np.ndarray) -> float:
    """p-value of "these label counts (C,) were drawn from ``frequency`` (C,)", one-sided against
    labels more concentrated than that: chi-square when every class present expects at least
    :data:`CHI_SQUARE_MIN_EXPECTED` members, else the collision test (same-label pairs S against
    E = C(m,2) sum f^2 and Var = C(m,2)(p2 - p2^2) + 6 C(m,3)(p3 - p2^2), normal approximation)."""
    present = frequency > 0
    m = float(counts.sum())
    if (frequency[present] * m).min() >= CHI_SQUARE_MIN_EXPECTED:
        return float(chisquare(counts[present], frequency[present] * m).pvalue)
    pairs = m * (m - 1) / 2
    p2, p3 = float((frequency ** 2).sum()), float((frequency ** 3).sum())
    observed = float((counts * (counts - 1)).sum() / 2)
    variance = pairs * (p2 - p2 ** 2) + m * (m - 1) * (m - 2) * (p3 - p2 ** 2)
    if variance <= 0:
        return 1.0 if observed <= pairs * p2 else 0.0
    return float(norm.sf((observed - pairs * p2) / np.sqrt(variance)))


def foreign_batches(embeddings: np.ndarray, folds: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                    n_classes: int, ids: list[str], *, clusters_per_class: int = 4, min_size: int = 10,
                    alpha: float = 0.05, chance_margin: float = 0.05, seed: int = 0) -> list[ForeignBatch]:
    """Foreign batches, largest first. embeddings: (N, D) out-of-fold; folds, labels, predicted: (N,)
    (``predicted`` is the held-out model's class). Needs at least 3 classes: with 2, a cluster's labels
    say too little to tell arbitrary from confusable."""
    if n_classes < 3:
        return []
    found = []
    for fold in np.unique(folds):
        rows = np.flatnonzero(folds == fold)
        k = min(clusters_per_class * n_classes, len(rows) // POINTS_PER_CLUSTER, MAX_CLUSTERS)
        if k < 2:
            continue
        frequency = np.bincount(labels[rows], minlength=n_classes) / len(rows)
        assigned = spherical_kmeans(unit_rows(embeddings[rows]), k, seed)
        for cluster in range(k):
            members = rows[assigned == cluster]
            m = len(members)
            if m < min_size:
                continue
            counts = np.bincount(labels[members], minlength=n_classes)
            mix_p = mix_pvalue(counts, frequency)
            if mix_p < alpha:
                continue
            label_share = counts / m
            chance = float(np.bincount(predicted[members], minlength=n_classes) / m @ label_share)
            accuracy = float((predicted[members] == labels[members]).mean())
            if accuracy <= chance + chance_margin:
                found.append(ForeignBatch(int(fold), cluster, members, float(label_share.max()), mix_p, accuracy,
                                          chance, [ids[i] for i in members]))
    return sorted(found, key=lambda batch: -len(batch.rows))
