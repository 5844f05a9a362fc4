"""Scores -> issues: combined per-issue scores (0..1, higher = worse), flags, suggested labels, reasons.

- mislabeled: ``mislabeled_score`` is the mean percentile rank of the mislabel scorers. Which examples
  to flag is decided by confident learning (Northcutt et al. 2021) on a *cross-fitted* estimate of the
  true class, p̂ = ½ (out-of-fold probabilities + in-sample early-learning targets): the held-out
  model and the early, pre-memorisation phase of the model that trained on the example are two
  estimates of the true class, and their average is better calibrated than either from a cheap proxy.
  From p̂: the calibrated confident joint Q, then an example is flagged when both rules pick it —
  prune-by-noise-rate (for each cell i→j, the Q_ij examples labelled i with the largest p̂_j − p̂_i)
  and prune-by-class (for each class i, the Σ_{j≠i} Q_ij examples labelled i with the lowest p̂_i) —
  capped by ``max_flag_rate``. The suggested label is the most likely other class under p̂.
- outlier: ``outlier_score`` is the mean percentile rank of the outlier scorers; an example is flagged
  when any outlier column puts it more than ``outlier_z`` (3.0) robust standard deviations
  (median/MAD) into its tail, capped by ``max_flag_rate``. Columns that are already ranks (bounded,
  no tail) inform the score and the order but never fire the flag on their own.
- spurious: the held-out misses inside suspected shortcut groups (see ``curator.spurious``). A group
  whose members sit in the outlier tail (median ``outlier_score`` >= ``outlier_group_percentile``) is
  an out-of-distribution group instead — a batch of foreign images that look alike, which no density
  tail singles out because they are dense among themselves — and its misses are flagged as outliers.
  A group whose misses are mostly flagged mislabeled is a cluster of label errors, not a shortcut;
  and no example flagged mislabeled is also flagged spurious.
- outlier, too: every member of a *foreign batch* (see ``curator.foreign``): a cluster of the held-out
  representation whose labels are mixed like the dataset's and which the held-out model predicts no
  better than chance — images from another source with labels that mean nothing for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import ConfigError
from .foreign import ForeignBatch, foreign_batches
from .spurious import ShortcutGroup, attribute_warnings, shortcut_groups


@dataclass(frozen=True)
class FlagConfig:
    """Thresholds, settable in ``[flags]`` of curator.toml (``max_flag_rate`` also by --max-flag-rate)."""

    max_flag_rate: float = 0.5
    outlier_z: float = 3.0
    reason_percentile: float = 90.0
    clusters_per_class: int = 4
    min_group_size: int = 10
    accuracy_gap: float = 0.3
    outlier_group_percentile: float = 0.9
    foreign_alpha: float = 0.05
    foreign_margin: float = 0.05
    attribute_margin: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.max_flag_rate <= 1.0:
            raise ConfigError(f"--max-flag-rate {self.max_flag_rate}: must be in (0, 1]")
        if self.outlier_z <= 0:
            raise ConfigError(f"[flags] outlier_z = {self.outlier_z}: must be positive")
        if not 0.0 < self.accuracy_gap <= 1.0:
            raise ConfigError(f"[flags] accuracy_gap = {self.accuracy_gap}: must be in (0, 1]")
        if not 0.0 <= self.foreign_alpha < 1.0:
            raise ConfigError(f"[flags] foreign_alpha = {self.foreign_alpha}: must be in [0, 1)")


@dataclass
class Flags:
    """The flagger's output: ``table`` has N rows (the issue columns of scores.parquet)."""

    table: pd.DataFrame
    spurious_groups: list[ShortcutGroup] = field(default_factory=list)
    spurious_attributes: list[dict] = field(default_factory=list)
    foreign_batches: list[ForeignBatch] = field(default_factory=list)


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """(N,) -> (N,) in (0, 1]: the fraction of examples scoring at most this one (ties averaged)."""
    return (pd.Series(values).rank(method="average").to_numpy() / len(values)).astype(np.float32)


def robust_z(values: np.ndarray) -> np.ndarray:
    med = np.median(values)
    mad = np.median(np.abs(values - med)) * 1.4826
    if mad <= 0:
        mad = values.std() or 1.0
    return ((values - med) / mad).astype(np.float32)


def calibrated_confident_joint(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(C, C) estimate of the counts of (given label i, true label j).

    probs: (N, C), labels: (N,). Per-class threshold t_j = mean p_j over examples labelled j; an
    example is counted at (y, argmax_{j: p_j >= t_j} p_j); each row is rescaled to its class count.
    """
    n, c = probs.shape
    counts = np.bincount(labels, minlength=c).astype(np.float64)
    thresholds = np.array([probs[labels == j, j].mean() if counts[j] else 1.0 for j in range(c)])
    above = probs >= thresholds[None, :] - 1e-6
    confident = above.any(axis=1)
    guess = np.where(above, probs, -1.0).argmax(axis=1)
    joint = np.zeros((c, c))
    np.add.at(joint, (labels[confident], guess[confident]), 1.0)
    row_sums = joint.sum(axis=1, keepdims=True)
    return np.divide(joint, row_sums, out=np.zeros_like(joint), where=row_sums > 0) * counts[:, None]


def confident_learning_issues(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) bool: label issues picked by both prune-by-noise-rate and prune-by-class on ``probs`` (N, C)."""
    n, c = probs.shape
    joint = calibrated_confident_joint(probs, labels)
    by_noise_rate = np.zeros(n, bool)
    by_class = np.zeros(n, bool)
    for i in range(c):
        members = np.flatnonzero(labels == i)
        if not len(members):
            continue
        for j in range(c):
            count = int(round(joint[i, j]))
            if j != i and count > 0:
                margin = probs[members, j] - probs[members, i]
                by_noise_rate[members[np.argsort(-margin, kind="stable")[:count]]] = True
        count = int(round(joint[i].sum() - joint[i, i]))
        by_class[members[np.argsort(probs[members, i], kind="stable")[:count]]] = True
    return by_noise_rate & by_class


def _reasons(percentiles: dict[str, np.ndarray], rows: np.ndarray, cut: float) -> list[str]:
    out = []
    for i in rows:
        fired = sorted(((name, p[i]) for name, p in percentiles.items() if p[i] * 100 >= cut), key=lambda t: -t[1])
        out.append(", ".join(f"{name} p{int(p * 100)}" for name, p in fired))
    return out


def flag(columns: dict[str, np.ndarray], issues: dict[str, tuple[str, ...]], oof_probs: np.ndarray,
         labels: np.ndarray, classes: list[str], ids: list[str], config: FlagConfig = FlagConfig(), *,
         insample_probs: np.ndarray | None = None, oof_logits: np.ndarray | None = None,
         embeddings: np.ndarray | None = None, folds: np.ndarray | None = None,
         metadata: pd.DataFrame | None = None) -> Flags:
    """Combine scorer columns into per-issue scores and flags.

    columns: scorer column name -> (N,) score, higher = worse
    issues:  scorer column name -> issue types it informs
    oof_probs: (N, C) out-of-fold probabilities; insample_probs: (N, C) early-learning targets or None
    oof_logits: (N, C) out-of-fold logits, for shortcut groups; embeddings: (N, D) out-of-fold and
    folds: (N,), for foreign batches; metadata: N rows of extra columns
    Returns Flags whose table has N rows: is_mislabeled, is_outlier, is_spurious, mislabeled_score,
    outlier_score, spurious_score, suggested_label, reasons.
    """
    n = len(labels)
    cap = int(np.floor(config.max_flag_rate * n))
    by_issue = {kind: [name for name, kinds in issues.items() if kind in kinds] for kind in ("mislabeled", "outlier")}
    percentiles = {name: percentile_rank(values) for name, values in columns.items()}
    predicted = oof_probs.argmax(axis=1)

    # Mislabeled.
    true_class = oof_probs if insample_probs is None else (oof_probs + insample_probs) / 2.0
    mis_names = by_issue["mislabeled"]
    if mis_names:
        mis_score = np.mean([percentiles[m] for m in mis_names], axis=0)
    else:
        mis_score = percentile_rank(1.0 - true_class[np.arange(n), labels])
    is_mis = confident_learning_issues(true_class, labels)
    if is_mis.sum() > cap:
        keep = np.flatnonzero(is_mis)[np.argsort(-mis_score[is_mis], kind="stable")[:cap]]
        is_mis[:] = False
        is_mis[keep] = True

    # Outlier.
    out_names = by_issue["outlier"]
    is_out = np.zeros(n, bool)
    out_score = np.zeros(n, np.float32)
    if out_names:
        out_score = np.mean([percentiles[m] for m in out_names], axis=0).astype(np.float32)
        z = np.max([robust_z(columns[m]) for m in out_names], axis=0)
        candidates = np.flatnonzero(z > config.outlier_z)
        is_out[candidates[np.argsort(-z[candidates])][:cap]] = True

    # Spurious: held-out misses inside suspected shortcut groups.
    shortcuts = None
    is_spur, spur_score = np.zeros(n, bool), np.zeros(n, np.float32)
    if oof_logits is not None:
        shortcuts = shortcut_groups(oof_logits, labels, classes, ids,
                                    clusters_per_class=config.clusters_per_class,
                                    min_group_size=config.min_group_size, accuracy_gap=config.accuracy_gap)
        is_spur, spur_score = shortcuts.is_spurious.copy(), shortcuts.score
        for index, group in enumerate(shortcuts.groups):
            members = shortcuts.group_index == index
            misses = members & shortcuts.is_spurious
            if is_mis[misses].mean() >= 0.5:
                # Mostly label errors that look like their true class: a mislabel cluster, not a shortcut.
                group.kind = "mislabeled"
                is_spur &= ~members
            elif out_names and np.median(out_score[members]) >= config.outlier_group_percentile:
                group.kind = "outlier"
                moved = members & is_spur
                is_out |= moved
                is_spur &= ~moved
        is_spur &= ~is_mis

    # Outlier, too: foreign batches.
    foreign = []
    if embeddings is not None and folds is not None:
        foreign = foreign_batches(embeddings, folds, labels, predicted, len(classes), ids,
                                  clusters_per_class=config.clusters_per_class, min_size=config.min_group_size,
                                  alpha=config.foreign_alpha, chance_margin=config.foreign_margin)
        for batch in foreign:
            is_out[batch.rows] = True
            is_spur[batch.rows] = False          # foreign, not a shortcut
    if is_out.sum() > cap:
        keep = np.flatnonzero(is_out)[np.argsort(-out_score[is_out], kind="stable")[:cap]]
        is_out[:] = False
        is_out[keep] = True

    # Suggested label: the most likely other class where the label is doubted.
    others = true_class.copy()
    others[np.arange(n), labels] = -1.0
    suggested = np.where(is_mis, others.argmax(axis=1), labels)

    reasons = [""] * n
    for kind, names, mask in (("mislabeled", mis_names, is_mis), ("outlier", out_names, is_out)):
        rows = np.flatnonzero(mask)
        texts = _reasons({m: percentiles[m] for m in names}, rows, config.reason_percentile)
        for i, text in zip(rows, texts):
            tag = f"{kind}: {text or 'combined score'}"
            reasons[i] = f"{reasons[i]}; {tag}" if reasons[i] else tag
    in_groups = np.flatnonzero(shortcuts.group_index >= 0) if shortcuts else []
    for i in in_groups:
        group = shortcuts.groups[shortcuts.group_index[i]]
        if not (is_spur[i] or (is_out[i] and group.kind == "outlier")) or group.kind == "mislabeled":
            continue
        what = "shortcut group" if group.kind == "shortcut" else "out-of-distribution group"
        tag = (f"{'spurious' if group.kind == 'shortcut' else 'outlier'}: held-out predicts {classes[predicted[i]]}; "
               f"{what} {group.label}#{group.cluster} ({group.size} examples, held-out accuracy "
               f"{group.heldout_accuracy:.0%} vs {group.class_heldout_accuracy:.0%} for the class)")
        reasons[i] = f"{reasons[i]}; {tag}" if reasons[i] else tag
    for number, batch in enumerate(foreign):
        tag = (f"outlier: foreign batch #{number} ({len(batch.rows)} similar examples whose labels are mixed like "
               f"the whole dataset's; held-out accuracy {batch.heldout_accuracy:.0%}, "
               f"chance {batch.chance_accuracy:.0%})")
        for i in batch.rows:
            if is_out[i]:
                reasons[i] = f"{reasons[i]}; {tag}" if reasons[i] else tag

    table = pd.DataFrame({
        "is_mislabeled": is_mis, "is_outlier": is_out, "is_spurious": is_spur,
        "mislabeled_score": mis_score.astype(np.float32), "outlier_score": out_score,
        "spurious_score": spur_score, "suggested_label": [classes[j] for j in suggested], "reasons": reasons,
    })
    attributes = (attribute_warnings(metadata, labels, margin=config.attribute_margin)
                  if metadata is not None and len(metadata.columns) else [])
    return Flags(table, shortcuts.groups if shortcuts else [], attributes, foreign)
