"""Scores -> issues: per issue a probability that the example has it (0..1, the queue's one urgency),
a flag, a suggested label and the reasons.

Every column a scorer declares for an issue feeds that issue's decision; how much it counts comes
from the run's own data, never from a constant.

- mislabeled (``curator.mislabel``): how many labels are wrong per (given, true) class pair is
  estimated from the held-out probabilities by scoring *virtual flips* (images of class j as if they
  were labelled i: the held-out model never saw them, so they look exactly like real flips); a
  two-group Gaussian model over the held-out evidence and every mislabel column, weighted by that
  anchor, turns them into ``mislabeled_score`` = P(label wrong). Flagged where it is at least 0.5.
  ``suggested_label``: the most likely other class under ½ (held-out + early-learning target).
- outlier (``curator.tails``): per column (every outlier column, plus two held-out measures of
  atypicality: far from every class centre, likely under no class for both fold models) the
  probability of lying beyond the column's ordinary exponential tail; ``outlier_score`` is the
  largest, or for members of a *foreign batch* (``curator.foreign``) at least 1 - p_heldout(label).
  Flagged where it is at least 0.5.
- spurious (``curator.spurious``): the held-out misses inside suspected shortcut groups (clusters of
  one class the held-out model fails on while the rest of the class is easy), found after the
  mislabel, foreign-batch and outlier decisions so that neither a cluster of flipped labels nor a batch
  of foreign images nor a few atypical ones is taken for a shortcut; ``spurious_score`` =
  1 - p_heldout(label) there, and the tail probability of any column that declares ``spurious``.

Every flag is capped by ``max_flag_rate`` (the most probable kept). ``reasons`` names the scorers that
carried each decision.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import ConfigError
from .foreign import ForeignBatch, foreign_batches
from .blocks import row_slices
from .mislabel import MislabelEvidence, mislabel_evidence
from .spurious import ShortcutGroup, attribute_warnings, shortcut_groups
from .tails import heldout_hardness, heldout_isolation, tail_probability

ISSUES = ("mislabeled", "outlier", "spurious")
#: Log-odds change (nats) for a mislabel column to be named as carrying the decision.
CARRY_NATS = 0.5


@dataclass(frozen=True)
class FlagConfig:
    """Thresholds, settable in ``[flags]`` of curator.toml (``max_flag_rate`` also by --max-flag-rate)."""

    max_flag_rate: float = 0.5
    clusters_per_class: int = 4
    min_group_size: int = 10
    accuracy_gap: float = 0.3
    shortcut_alpha: float = 0.05
    foreign_alpha: float = 0.05
    foreign_margin: float = 0.05
    attribute_margin: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.max_flag_rate <= 1.0:
            raise ConfigError(f"--max-flag-rate {self.max_flag_rate}: must be in (0, 1]")
        if not 0.0 < self.accuracy_gap <= 1.0:
            raise ConfigError(f"[flags] accuracy_gap = {self.accuracy_gap}: must be in (0, 1]")
        if not 0.0 < self.shortcut_alpha < 1.0:
            raise ConfigError(f"[flags] shortcut_alpha = {self.shortcut_alpha}: must be in (0, 1)")
        if not 0.0 <= self.foreign_alpha < 1.0:
            raise ConfigError(f"[flags] foreign_alpha = {self.foreign_alpha}: must be in [0, 1)")


@dataclass
class Flags:
    """The flagger's output: ``table`` has N rows (the issue columns of scores.parquet)."""

    table: pd.DataFrame
    spurious_groups: list[ShortcutGroup] = field(default_factory=list)
    spurious_attributes: list[dict] = field(default_factory=list)
    foreign_batches: list[ForeignBatch] = field(default_factory=list)


def _cap(flagged: np.ndarray, score: np.ndarray, cap: int) -> np.ndarray:
    """``flagged`` with at most ``cap`` entries, the highest ``score`` kept."""
    if flagged.sum() <= cap:
        return flagged
    keep = np.flatnonzero(flagged)[np.argsort(-score[flagged], kind="stable")[:cap]]
    out = np.zeros_like(flagged)
    out[keep] = True
    return out


def _label_and_predicted(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probs[i, labels[i]], argmax_c probs[i, c]): (N,) each, read in row blocks (``probs`` may be a
    large memory map)."""
    p_label = np.empty(len(labels), np.float64)
    predicted = np.empty(len(labels), np.int64)
    for rows in row_slices(len(labels), probs.shape[1]):
        block = np.asarray(probs[rows])
        p_label[rows] = block[np.arange(len(block)), labels[rows]]
        predicted[rows] = block.argmax(axis=1)
    return p_label, predicted


def _suggestions(oof_probs: np.ndarray, insample_probs: np.ndarray | None, labels: np.ndarray) -> np.ndarray:
    """(N,) the most likely class other than the label under ½ (held-out + in-sample) probabilities."""
    out = np.empty(len(labels), np.int64)
    for rows in row_slices(len(labels), oof_probs.shape[1]):
        p = np.array(oof_probs[rows], dtype=np.float32)
        if insample_probs is not None:
            p += np.asarray(insample_probs[rows], dtype=np.float32)       # the argmax of the sum is that of the mean
        p[np.arange(len(p)), labels[rows]] = -1.0
        out[rows] = p.argmax(axis=1)
    return out


def _foreign(embeddings: np.ndarray, folds: np.ndarray, labels: np.ndarray, predicted: np.ndarray, n_classes: int,
             ids: list[str], config: FlagConfig) -> list[ForeignBatch]:
    """:func:`curator.foreign.foreign_batches`, run in a thread beside the flagger's own: FAISS leaves it
    one core (its thread count is per calling thread)."""
    import faiss

    faiss.omp_set_num_threads(max(1, faiss.omp_get_max_threads() - 1))
    return foreign_batches(embeddings, folds, labels, predicted, n_classes, ids,
                           clusters_per_class=config.clusters_per_class, min_size=config.min_group_size,
                           alpha=config.foreign_alpha, chance_margin=config.foreign_margin)


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _mislabel_reason(i: int, evidence: MislabelEvidence, p_label: float, suggested: str,
                     p_suggested: float) -> str:
    carried = sorted(((name, float(v[i])) for name, v in evidence.contributions.items() if v[i] >= CARRY_NATS),
                     key=lambda t: -t[1])
    by = ", ".join(f"{name} +{value:.1f}" for name, value in carried) or "held-out evidence"
    return (f"mislabeled {evidence.posterior[i]:.2f}: held-out p(label) {p_label:.2f}, p({suggested}) "
            f"{p_suggested:.2f}; carried by {by}")


def flag(columns: dict[str, np.ndarray], issues: dict[str, tuple[str, ...]], oof_probs: np.ndarray,
         labels: np.ndarray, classes: list[str], ids: list[str], config: FlagConfig = FlagConfig(), *,
         insample_probs: np.ndarray | None = None, oof_logits: np.ndarray | None = None,
         embeddings: np.ndarray | None = None, folds: np.ndarray | None = None,
         metadata: pd.DataFrame | None = None) -> Flags:
    """Combine scorer columns into per-issue probabilities and flags.

    columns: scorer column name -> (N,) score, higher = worse
    issues:  scorer column name -> issue types it informs
    oof_probs: (N, C) out-of-fold probabilities (may be a memory map); insample_probs: (N, C)
    early-learning targets or None; oof_logits: (N, C) out-of-fold logits, for shortcut groups;
    embeddings: (N, D) out-of-fold and folds: (N,), for foreign batches and held-out isolation;
    metadata: N rows of extra columns.
    Returns Flags whose table has N rows: is_mislabeled, is_outlier, is_spurious, mislabeled_score,
    outlier_score, spurious_score (each P(issue), 0..1), suggested_label, reasons.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n, c = len(labels), len(classes)
    cap = int(np.floor(config.max_flag_rate * n))
    declared = {kind: [name for name, kinds in issues.items() if kind in kinds and name in columns] for kind in ISSUES}
    p_label, predicted = _label_and_predicted(oof_probs, labels)

    # Foreign batches, found by clustering (FAISS) in a second thread while this one computes the mislabel
    # evidence and the outlier tails: their labels mean nothing, so they are neither mislabeled nor shortcuts.
    with ThreadPoolExecutor(max_workers=1) as pool:
        finding = (pool.submit(_foreign, embeddings, folds, labels, predicted, c, ids, config)
                   if embeddings is not None and folds is not None else None)
        evidence = mislabel_evidence(oof_probs, labels, {m: columns[m] for m in declared["mislabeled"]})
        # Outlier: robust tails of every outlier column and of the held-out atypicality measures.
        tails = {name: tail_probability(columns[name]) for name in declared["outlier"]}
        if embeddings is not None and folds is not None:
            tails["heldout_isolation"] = tail_probability(heldout_isolation(embeddings, folds, labels, predicted, c))
        tails["heldout_hardness"] = tail_probability(heldout_hardness(oof_probs, insample_probs))
        foreign: list[ForeignBatch] = finding.result() if finding is not None else []
    in_batch = np.zeros(n, bool)
    for batch in foreign:
        in_batch[batch.rows] = True

    # Mislabeled.
    mis_score = np.where(in_batch, 0.0, evidence.posterior).astype(np.float32)
    is_mis = _cap(mis_score >= 0.5, mis_score, cap)

    out_score = np.max(list(tails.values()), axis=0)
    out_score = np.where(in_batch, np.maximum(out_score, 1.0 - p_label), out_score).astype(np.float32)

    # Spurious: shortcut groups among the examples no other decision explains.
    groups: list[ShortcutGroup] = []
    spur_score = np.zeros(n, np.float32)
    is_spur = np.zeros(n, bool)
    group_index = np.full(n, -1, np.int64)
    if oof_logits is not None:
        shortcuts = shortcut_groups(oof_logits, labels, classes, ids, insample_probs=insample_probs,
                                    exclude=is_mis | in_batch, atypical=out_score >= 0.5,
                                    clusters_per_class=config.clusters_per_class,
                                    min_group_size=config.min_group_size, accuracy_gap=config.accuracy_gap,
                                    alpha=config.shortcut_alpha)
        groups, group_index = shortcuts.groups, shortcuts.group_index
        is_spur = shortcuts.is_spurious
        spur_score = np.where(group_index >= 0, 1.0 - p_label, 0.0).astype(np.float32)
    spurious_tails = {name: tail_probability(columns[name]) for name in declared["spurious"]}
    if spurious_tails:
        spur_score = np.maximum(spur_score, np.max(list(spurious_tails.values()), axis=0)).astype(np.float32)
        is_spur |= (spur_score >= 0.5) & ~is_mis & ~in_batch
    is_spur = _cap(is_spur, spur_score, cap)
    # A held-out miss inside a shortcut group is explained by the shortcut, not by being atypical.
    is_out = _cap((out_score >= 0.5) & ~(is_spur & (group_index >= 0)), out_score, cap)

    # Suggested label and reasons.
    suggested = _suggestions(oof_probs, insample_probs, labels)
    suggested = np.where(is_mis, suggested, labels)
    reasons = [""] * n
    for i in np.flatnonzero(is_mis):
        p_sug = float(np.asarray(oof_probs[i])[suggested[i]])
        reasons[i] = _mislabel_reason(i, evidence, float(p_label[i]), classes[suggested[i]], p_sug)
    for i in np.flatnonzero(is_out):
        fired = sorted(((name, float(p[i])) for name, p in tails.items() if p[i] >= 0.5), key=lambda t: -t[1])
        parts = [f"{name} tail {p:.2f}" for name, p in fired]
        reasons[i] = _join(reasons[i], f"outlier {out_score[i]:.2f}: " + (", ".join(parts) or "foreign batch"))
    for number, batch in enumerate(foreign):
        tag = (f"outlier: foreign batch #{number} ({len(batch.rows)} similar examples whose labels are mixed like "
               f"the whole dataset's; held-out accuracy {batch.heldout_accuracy:.0%}, "
               f"chance {batch.chance_accuracy:.0%})")
        for i in batch.rows:
            if is_out[i]:
                reasons[i] = _join(reasons[i], tag)
    for i in np.flatnonzero(is_spur):
        if group_index[i] >= 0:
            group = groups[group_index[i]]
            tag = (f"spurious {spur_score[i]:.2f}: held-out predicts {classes[predicted[i]]}; shortcut group "
                   f"{group.label}#{group.cluster} ({group.size} examples, held-out accuracy "
                   f"{group.heldout_accuracy:.0%} vs {group.class_heldout_accuracy:.0%} for the rest of the class)")
        else:
            fired = [f"{name} tail {p[i]:.2f}" for name, p in spurious_tails.items() if p[i] >= 0.5]
            tag = f"spurious {spur_score[i]:.2f}: " + ", ".join(fired)
        reasons[i] = _join(reasons[i], tag)

    table = pd.DataFrame({
        "is_mislabeled": is_mis, "is_outlier": is_out, "is_spurious": is_spur,
        "mislabeled_score": mis_score, "outlier_score": out_score, "spurious_score": spur_score,
        "suggested_label": [classes[j] for j in suggested], "reasons": reasons,
    })
    attributes = (attribute_warnings(metadata, labels, margin=config.attribute_margin)
                  if metadata is not None and len(metadata.columns) else [])
    return Flags(table, groups, attributes, foreign)
