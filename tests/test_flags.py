"""From scores to decisions: how many to flag, suggested labels, shortcut groups, attribute warnings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import curator
from curator.flags import FlagConfig, calibrated_confident_joint, confident_learning_issues, flag
from curator.spurious import attribute_warnings
from conftest import truth_for
from datasets import digits_images


def test_confident_joint_recovers_known_label_errors():
    rng = np.random.default_rng(0)
    n, c = 3000, 3
    true = rng.integers(0, c, n)
    probs = np.full((n, c), 0.1)
    probs[np.arange(n), true] = 0.8
    given = true.copy()
    wrong = rng.choice(n, 300, replace=False)
    given[wrong] = (true[wrong] + 1) % c
    joint = calibrated_confident_joint(probs, given)
    assert joint.sum() == pytest.approx(n)
    assert joint.sum() - np.trace(joint) == pytest.approx(300, abs=1)
    issues = confident_learning_issues(probs, given)
    assert set(np.flatnonzero(issues)) == set(wrong)


def test_flagged_mislabels_get_the_true_class_as_suggestion(noisy_digits_run, noisy_digits):
    scores = noisy_digits_run.scores
    flagged = scores[scores["is_mislabeled"]]
    # The image folder's file names carry the original index, whose true label digits knows.
    _, true_labels = digits_images()
    index = flagged["id"].str.extract(r"(\d+)\.png$")[0].astype(int)
    truth = truth_for(noisy_digits_run, noisy_digits[1])[scores["is_mislabeled"].to_numpy()]
    right = (flagged["suggested_label"].astype(int).to_numpy() == true_labels[index])[truth]
    assert right.mean() >= 0.8
    assert (scores.loc[~scores["is_mislabeled"], "suggested_label"] == scores.loc[~scores["is_mislabeled"], "label"]).all()


def test_reasons_name_the_scorers_that_fired(noisy_digits_run):
    flagged = noisy_digits_run.scores[noisy_digits_run.scores["is_mislabeled"]]
    assert flagged["reasons"].str.startswith("mislabeled: ").all()
    assert flagged["reasons"].str.contains(r"learning_speed p9\d").mean() > 0.8


def test_max_flag_rate_caps_every_issue(noisy_digits_run):
    run = noisy_digits_run
    cols = {"score_learning_speed": ("mislabeled",)}
    labels = np.array([run.classes.index(c) for c in run.scores["label"]])
    flags = flag({c: run.scores[c].to_numpy() for c in cols}, cols, run.oof_probs, labels, run.classes,
                 list(run.scores["id"]), FlagConfig(max_flag_rate=0.02))
    assert flags.table["is_mislabeled"].sum() == int(0.02 * len(labels))


def test_outlier_flags_find_photo_patches(ood_digits, ood_digits_run):
    truth = truth_for(ood_digits_run, ood_digits[1])
    flagged = ood_digits_run.scores["is_outlier"].to_numpy()
    hits = (truth & flagged).sum()
    assert hits / max(flagged.sum(), 1) >= 0.6 and hits / truth.sum() >= 0.4, (flagged.sum(), hits, truth.sum())


def _shortcut_digits(rng):
    """Digits, dimmed and noisy, with a bright 2x2 patch at a class-specific position on 92% of each
    class: an easier signal than the digit. The other 8% (bias-conflicting) carry the next class's patch,
    a coherent minority like the landbirds photographed on water."""
    images, labels = digits_images()
    positions = [(r, c) for r in (0, 3, 6) for c in (0, 3, 6)] + [(0, 4)]
    conflicting = rng.random(len(labels)) < 0.08
    patch_class = np.where(conflicting, (labels + 1) % 10, labels)
    dim = images.astype(float) * 0.35 + rng.normal(0, 40, images.shape)
    images = np.clip(dim, 0, 255).astype(np.uint8)
    for i, k in enumerate(patch_class):
        r, c = positions[k]
        images[i, r:r + 2, c:c + 2] = 255
    return images, labels, conflicting


def test_shortcut_groups_catch_the_bias_conflicting_minority(tmp_path):
    rng = np.random.default_rng(0)
    images, labels, conflicting = _shortcut_digits(rng)
    np.savez(tmp_path / "shortcut.npz", X=images, y=labels)
    run = curator.score(tmp_path / "shortcut.npz", out=tmp_path / "run", scorers="learning_speed", progress=False)
    spurious = run.scores["is_spurious"].to_numpy()
    hits = (spurious & conflicting).sum()
    assert hits / max(spurious.sum(), 1) >= 0.9 and hits / conflicting.sum() >= 0.3, (spurious.sum(), hits)
    groups = run.manifest["spurious_groups"]
    assert groups and {"class", "size", "heldout_accuracy", "class_heldout_accuracy", "ids"} <= set(groups[0])
    assert all(g["heldout_accuracy"] <= g["class_heldout_accuracy"] - 0.3 for g in groups)
    flagged = run.scores[run.scores["is_spurious"]]
    assert flagged["reasons"].str.contains("shortcut group").all()


def test_a_metadata_column_that_predicts_the_label_is_a_warning():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    scanner = np.where(rng.random(2000) < 0.9, labels, rng.integers(0, 4, 2000))
    metadata = pd.DataFrame({"scanner": [f"S{v}" for v in scanner], "noise": rng.normal(size=2000),
                             "split": "train"})
    found = {w["column"]: w for w in attribute_warnings(metadata, labels)}
    assert set(found) == {"scanner", "noise"}
    assert found["scanner"]["warning"] and found["scanner"]["accuracy"] > 0.85
    assert not found["noise"]["warning"] and found["noise"]["accuracy"] < found["noise"]["baseline"] + 0.1
