"""adversarial_distance: batched DeepFool distance to the out-of-fold decision boundary, and the free
last-layer margin."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import curator
from curator.plugins import Registered
from curator.scoring import check_scorer_options
from curator_plugins.adversarial_distance import SCORER, closeness_rank, deepfool, last_layer_margin
from conftest import score_context, truth_for


@pytest.fixture(scope="module")
def ctx(ood_digits, ood_digits_run) -> curator.ScoreContext:
    return score_context(ood_digits[0], ood_digits_run, seed=0)


def test_photo_patches_lie_close_to_the_boundary(ood_digits, ood_digits_run):
    _, truth = ood_digits
    is_ood = truth_for(ood_digits_run, truth)
    scores = ood_digits_run.scores
    # Measured 0.94 (DeepFool rank) and 0.93 (last-layer margin) on this run.
    assert roc_auc_score(is_ood, scores["score_adversarial_distance"]) >= 0.88
    assert roc_auc_score(is_ood, scores["score_adversarial_distance_margin"]) >= 0.86


def test_deepfool_perturbation_flips_the_out_of_fold_prediction(ctx):
    model = ctx.load_model(0).requires_grad_(False)
    x = ctx.inputs(np.flatnonzero(ctx.folds == 0)[:256])
    attack = deepfool(model, x, max_iter=3, overshoot=0.02, candidates=3)
    with torch.no_grad():
        changed = model(x + attack.perturbation).argmax(1) != model(x).argmax(1)
    assert changed.float().mean() >= 0.95
    # A small step, not a different image: far below the size of the input itself.
    assert attack.distance.median() < 0.5 * x.flatten(1).norm(dim=1).median()


def test_deepfool_on_a_linear_model_finds_the_analytic_distance():
    torch.manual_seed(0)
    model = torch.nn.Linear(20, 5).eval().requires_grad_(False)
    x = 3 * torch.randn(300, 20)
    z = model(x)
    w, pred = model.weight, z.argmax(1)
    gap = z.gather(1, pred[:, None]) - z                                 # (B, C)
    pair_norm = (w[pred][:, None, :] - w[None, :, :]).norm(dim=2)       # (B, C)
    analytic = (gap / pair_norm).masked_fill(gap == 0, float("inf")).min(1).values
    attack = deepfool(model, x, max_iter=3, overshoot=0.02, candidates=5)
    assert attack.flipped.all()
    ratio = attack.distance / analytic
    assert ratio.min() >= 1.0 and ratio.max() <= 1.05                 # the 2% overshoot, nothing more


def test_margin_column_is_minus_the_last_layer_distance_to_the_nearest_boundary(ctx, ood_digits_run):
    logits = np.load(ood_digits_run.path / "artifacts" / "oof_logits.npy").astype(np.float64)
    expected = np.empty(len(logits))
    for fold in np.unique(ctx.folds):
        w = ctx.load_model(int(fold)).head.weight.detach().numpy().astype(np.float64)
        for i in np.flatnonzero(ctx.folds == fold):
            a = logits[i].argmax()
            expected[i] = min((logits[i, a] - logits[i, k]) / np.linalg.norm(w[a] - w[k])
                              for k in range(len(w)) if k != a)
    np.testing.assert_allclose(ood_digits_run.scores["score_adversarial_distance_margin"], -expected,
                               rtol=1e-4, atol=1e-6)


def test_main_column_is_a_rank_with_the_nearest_example_at_one():
    distance = np.array([3.0, 0.5, 2.0, 2.0, np.inf])
    np.testing.assert_allclose(closeness_rank(distance), [0.4, 1.0, 0.7, 0.7, 0.2])


def test_subset_scores_every_example_and_keeps_the_outlier_signal(ctx, ood_digits, ood_digits_run):
    _, truth = ood_digits
    is_ood = truth_for(ood_digits_run, truth)
    out = SCORER.score(dataclasses.replace(ctx, options={"subset": 400}))
    score = out["adversarial_distance"]
    assert score.shape == (ctx.n_examples,) and np.isfinite(score).all()
    assert roc_auc_score(is_ood, score) >= 0.85


@pytest.mark.parametrize("options", [{"max_iter": 0}, {"candidates": 1}, {"overshoot": -0.1}, {"iters": 3}])
def test_bad_options_are_rejected_by_name_before_scoring(options):
    entry = Registered(SCORER, "adversarial_distance", "curator", "test")
    with pytest.raises(curator.ConfigError, match=next(iter(options))):
        check_scorer_options([entry], {"adversarial_distance": options}, ["adversarial_distance"])


def test_the_last_layer_margin_in_row_blocks_equals_the_direct_formula(monkeypatch):
    # min_{k != pred} (z_pred - z_k) / ||w_pred - w_k||, with the pair norms spelled out as a (C, C) table.
    rng = np.random.default_rng(0)
    z, w = rng.normal(size=(3000, 37)).astype(np.float32), rng.normal(size=(37, 16))
    z64, pred = z.astype(np.float64), z.argmax(1)
    direct = (z64[np.arange(3000), pred][:, None] - z64) / np.linalg.norm(w[:, None] - w[None], axis=2)[pred]
    direct[np.arange(3000), pred] = np.inf
    monkeypatch.setattr("curator.blocks.BLOCK_VALUES", 37 * 500)   # 6 blocks
    np.testing.assert_allclose(last_layer_margin(z, w), direct.min(1), rtol=1e-9)
    rows = np.array([5, 2999, 17])
    np.testing.assert_allclose(last_layer_margin(z, w, rows), direct.min(1)[rows], rtol=1e-9)
