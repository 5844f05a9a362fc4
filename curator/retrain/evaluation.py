"""Accuracy overall, per class and per group, and the groups inferred when none are given."""

from __future__ import annotations

import numpy as np

def accuracy_report(predicted: np.ndarray, labels: np.ndarray, classes: list[str],
                    groups: np.ndarray | None = None) -> dict:
    """Overall, per-class and (with ``groups``, (N,) names) per-group and worst-group accuracy."""
    correct = np.asarray(predicted) == np.asarray(labels)
    report = {"n": int(len(correct)), "accuracy": float(correct.mean()) if len(correct) else None,
              "per_class": {}}
    for j, name in enumerate(classes):
        mask = labels == j
        report["per_class"][name] = float(correct[mask].mean()) if mask.any() else None
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        per_group = {g: {"accuracy": float(correct[groups == g].mean()), "n": int((groups == g).sum())}
                     for g in sorted(set(groups))}
        worst = min(per_group, key=lambda g: (per_group[g]["accuracy"], g))
        report.update(per_group=per_group, worst_group=worst, worst_group_accuracy=per_group[worst]["accuracy"])
    return report


def inferred_groups(labels: np.ndarray, holdout_logits: np.ndarray, classes: list[str]) -> np.ndarray:
    """(N,) group names ``<class>|held-out-right`` / ``<class>|held-out-wrong``."""
    right = np.asarray(holdout_logits).argmax(1) == labels
    return np.array([f"{classes[y]}|held-out-{'right' if r else 'wrong'}" for y, r in zip(labels, right)])
