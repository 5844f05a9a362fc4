"""Memorization-Aware Training: the p(y | ŷ_ho) estimate, the detached logit adjustment, prediction with f(x)
alone, and the paper's synthetic experiment (Bayat et al. 2024): ERM's minority accuracy collapses, MAT's
does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from curator.errors import ConfigError
from curator.retrain.holdout import cross_fitted_logits, xrm_holdout_logits
from curator.retrain.mat import adjusted_cross_entropy, holdout_label_probs, label_given_holdout, log_prior
from curator.retrain import Hyper, TensorBank, fit, predict_logits
from curator.testing import linear_shortcut_data

HARD = 0.01   # a temperature that turns logits of ±10 into hard predictions


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny linear models: extra threads only add synchronisation cost (and stall on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hard_logits(predicted: list[int], n_classes: int) -> np.ndarray:
    return np.where(np.eye(n_classes)[predicted] > 0, 10.0, -10.0).astype(np.float32)


def test_p_y_given_holdout_counts_labels_per_holdout_prediction():
    # held-out predicts 0,0,1,1,1 for labels 0,1,1,1,0
    table = label_given_holdout(hard_logits([0, 0, 1, 1, 1], 2), np.array([0, 1, 1, 1, 0]), tau=HARD)
    np.testing.assert_allclose(table, [[1 / 2, 1 / 2], [1 / 3, 2 / 3]], atol=1e-6)


def test_p_y_given_holdout_rows_sum_to_one_over_labels():
    rng = np.random.default_rng(0)
    table = label_given_holdout(rng.normal(size=(500, 4)) * 3, rng.integers(0, 4, 500), tau=0.7)
    assert table.shape == (4, 4)
    np.testing.assert_allclose(table.sum(1), 1.0, atol=1e-6)
    assert (table >= 0).all()


def test_p_y_given_holdout_soft_mass_is_the_label_frequency_at_high_temperature():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 60)
    table = label_given_holdout(np.random.default_rng(1).normal(size=(100, 3)), labels, tau=1e6)
    np.testing.assert_allclose(table, np.tile([0.3, 0.1, 0.6], (3, 1)), atol=1e-4)


def test_a_holdout_class_never_predicted_gets_a_uniform_row():
    table = label_given_holdout(hard_logits([0, 0, 1], 3), np.array([0, 1, 1]), tau=HARD)
    np.testing.assert_allclose(table[2], [1 / 3] * 3, atol=1e-6)


def test_holdout_label_probs_mix_the_table_by_the_soft_prediction():
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(50, 3)), rng.integers(0, 3, 50)
    p_ho = holdout_label_probs(logits, labels, tau=2.0)
    soft = torch.softmax(torch.tensor(logits, dtype=torch.float32) / 2.0, 1).numpy()
    np.testing.assert_allclose(p_ho, soft @ label_given_holdout(logits, labels, 2.0), atol=1e-6)
    np.testing.assert_allclose(p_ho.sum(1), 1.0, atol=1e-6)


def test_log_prior_is_floored():
    # every example labelled 0 -> p_ho(y=1|x) = 0 everywhere
    prior = log_prior(hard_logits([0, 1, 1], 2), np.array([0, 0, 0]), tau=HARD, floor=0.01)
    np.testing.assert_allclose(prior[:, 1], np.log(0.01), rtol=1e-6)
    np.testing.assert_allclose(prior[:, 0], 0.0, atol=1e-6)


@pytest.mark.parametrize("kwargs, option", [({"tau": 0.0}, "--tau"), ({"floor": 0.0}, "--floor"),
                                            ({"floor": 1.0}, "--floor")])
def test_bad_temperature_or_floor_names_the_option(kwargs, option):
    with pytest.raises(ConfigError, match=option):
        log_prior(np.zeros((2, 2)), np.array([0, 1]), **kwargs)


def test_the_adjustment_is_detached_and_shifts_the_softmax():
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    prior = torch.log(torch.tensor([[0.9, 0.1], [0.5, 0.5]])).requires_grad_()
    labels = torch.tensor([1, 0])
    adjusted_cross_entropy(logits, prior, labels, reduction="sum").backward()
    assert prior.grad is None
    expected = torch.softmax(logits.detach() + prior.detach(), 1) - torch.eye(2)[labels]
    torch.testing.assert_close(logits.grad, expected)


def test_predictions_use_the_model_alone():
    """MAT changes the loss only: predict_logits is f(x), whatever prior trained it."""
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    model = nn.Linear(5, 3)
    prior = np.log(np.full((64, 3), [0.98, 0.01, 0.01], dtype=np.float32))
    fit(model, TensorBank(x), np.arange(64), np.zeros(64, int), Hyper(epochs=3, batch_size=16, lr=0.1),
        log_prior=prior)
    with torch.no_grad():
        np.testing.assert_allclose(predict_logits(model, TensorBank(x), np.arange(64)), model(x).numpy(), atol=1e-6)


# --- the paper's synthetic experiment ---------------------------------------------------------------

LINEAR = Hyper(epochs=50, batch_size=100, lr=0.1, weight_decay=0.0)


def minority_majority_accuracy(model, x, y, majority):
    right = predict_logits(model, TensorBank(x), np.arange(len(y))).argmax(1) == y
    return right[~majority].mean(), right[majority].mean()


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    train, test = linear_shortcut_data(1000, 0.9, rng), linear_shortcut_data(2000, 0.5, rng)
    torch.manual_seed(0)
    erm = nn.Linear(1800, 2)
    fit(erm, TensorBank(train[0]), np.arange(1000), train[1], LINEAR)
    return train, test, erm


def test_erm_memorises_the_minority_and_fails_it_at_test(synthetic):
    (x, y, majority), test, erm = synthetic
    train_minority, _ = minority_majority_accuracy(erm, x, y, majority)
    test_minority, test_majority = minority_majority_accuracy(erm, *test)
    assert train_minority == 1.0                  # memorised
    assert test_majority > 0.98 and test_minority < 0.4


def test_mat_with_cross_fitted_holdout_keeps_the_minority(synthetic):
    (x, y, majority), test, erm = synthetic
    holdout = cross_fitted_logits(lambda: nn.Linear(1800, 2), TensorBank(x), y, LINEAR, folds=2, seed=0)
    assert (holdout.argmax(1) == y)[~majority].mean() < 0.3   # the held-out model gets the minority wrong
    torch.manual_seed(0)
    mat = nn.Linear(1800, 2)
    fit(mat, TensorBank(x), np.arange(1000), y, LINEAR, log_prior=log_prior(holdout, y, tau=1.0))
    mat_minority, mat_majority = minority_majority_accuracy(mat, *test)
    erm_minority, _ = minority_majority_accuracy(erm, *test)
    assert mat_majority > 0.98
    assert mat_minority > 0.6 and mat_minority > erm_minority + 0.3


def test_xrm_twins_hold_out_every_example_and_mark_the_minority(synthetic):
    (x, y, majority), _, _ = synthetic
    holdout, twins = xrm_holdout_logits(lambda: nn.Linear(1800, 2), TensorBank(x), y, 2,
                                        Hyper(epochs=30, batch_size=100, lr=0.1, weight_decay=0.0), seed=0)
    assert holdout.shape == (1000, 2) and len(twins) == 2
    right = holdout.argmax(1) == y
    assert right[majority].mean() > 0.95 and right[~majority].mean() < 0.3


def test_the_shift_of_three_examples_matches_the_hand_computation():
    """Held-out softmax (τ = 1): x1 [3/4, 1/4], x2 [1/2, 1/2], x3 [1/4, 3/4]; labels 0, 0, 1.
    Soft counts per held-out prediction j (rows) and label i (columns): [[5/4, 1/4], [3/4, 3/4]], so
    p(y | ŷ=0) = [5/6, 1/6], p(y | ŷ=1) = [1/2, 1/2]; p_ho(y|x) = softmax · table:
    x1 [3/4, 1/4], x2 [2/3, 1/3], x3 [7/12, 5/12]; the floor 0.3 lifts x1's 1/4 to 0.3."""
    logits = np.log(np.array([[3, 1], [1, 1], [1, 3]], dtype=np.float32))
    labels = np.array([0, 0, 1])
    np.testing.assert_allclose(label_given_holdout(logits, labels, tau=1.0), [[5 / 6, 1 / 6], [1 / 2, 1 / 2]],
                               rtol=1e-6)
    expected = np.log([[3 / 4, 0.3], [2 / 3, 1 / 3], [7 / 12, 5 / 12]])
    np.testing.assert_allclose(log_prior(logits, labels, tau=1.0, floor=0.3), expected, rtol=1e-6)


def test_the_temperature_sharpens_the_held_out_prediction_before_counting():
    """τ = 1/2 squares the odds: x1 [9/10, 1/10], x2 [1/2, 1/2], x3 [1/10, 9/10]."""
    logits = np.log(np.array([[3, 1], [1, 1], [1, 3]], dtype=np.float32))
    table = label_given_holdout(logits, np.array([0, 0, 1]), tau=0.5)
    # ŷ=0: labels 0 get 0.9 + 0.5, label 1 gets 0.1; ŷ=1: labels 0 get 0.1 + 0.5, label 1 gets 0.9
    np.testing.assert_allclose(table, [[1.4 / 1.5, 0.1 / 1.5], [0.6 / 1.5, 0.9 / 1.5]], rtol=1e-6)


def test_groupdro_moves_its_weight_to_the_group_it_fits_worst():
    """Group 0 is separable, group 1 has random labels: the exponentiated-gradient weights must leave the
    uniform start for the group whose loss stays high."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    groups = np.r_[np.zeros(300, int), np.ones(100, int)]
    labels = np.where(groups == 0, (x[:, 0] > 0).astype(int), rng.integers(0, 2, 400))
    torch.manual_seed(0)
    fitted = fit(nn.Linear(5, 2), TensorBank(x), np.arange(400), labels, Hyper(epochs=5, batch_size=50, lr=0.1),
                 groups=groups, dro_step=0.05)
    assert fitted.group_weights.shape == (2,)
    assert fitted.group_weights.sum() == pytest.approx(1.0)
    assert fitted.group_weights[1] > 0.6             # from 0.5: towards the group of random labels
