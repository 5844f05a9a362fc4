"""self_influence: TracIn at the training steps (the default), TracIn-CP with the closed-form last layer,
and full per-sample gradients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

import curator
from curator_plugins.self_influence import SCORER, full_sq_norms, last_layer_sq_norms
from conftest import score_context, truth_for


@pytest.fixture(scope="module")
def ctx(noisy_digits, noisy_digits_run) -> curator.ScoreContext:
    return score_context(noisy_digits[0], noisy_digits_run)


def with_options(ctx: curator.ScoreContext, **options) -> curator.ScoreContext:
    return dataclasses.replace(ctx, options=options)


def test_self_influence_ranks_flipped_labels_far_above_chance(noisy_digits, noisy_digits_run):
    _, truth = noisy_digits
    flipped = truth_for(noisy_digits_run, truth)
    # Measured 0.976 on this run (TracIn at the steps; its checkpoint form 0.898, the `all` mode 0.939).
    assert roc_auc_score(flipped, noisy_digits_run.scores["score_self_influence"]) >= 0.95


def test_closed_form_equals_autograd_norm_of_last_layer_gradient(ctx):
    fold = 0
    model = ctx.load_model(fold, epoch=1)
    index = np.flatnonzero(ctx.trained_by == fold)[:8]
    x, y = ctx.inputs(index), torch.as_tensor(ctx.labels[index])
    expected = []
    for i in range(len(index)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        expected.append(model.head.weight.grad.pow(2).sum() + model.head.bias.grad.pow(2).sum())
    expected = torch.stack(expected)
    assert expected.min() > 1e-6                       # a real gradient, not a vacuous match
    torch.testing.assert_close(last_layer_sq_norms(model, x, y), expected, rtol=1e-4, atol=0)


def test_all_mode_on_a_model_with_only_the_head_trainable_equals_the_closed_form(ctx):
    def head_only(fold, epoch=None):
        model = ctx.load_model(fold, epoch)
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("head."))
        return model

    frozen = dataclasses.replace(ctx, options={"mode": "all"})
    frozen.load_model = head_only
    closed = SCORER.score(with_options(ctx, mode="last_layer"))["self_influence"]
    np.testing.assert_allclose(SCORER.score(frozen)["self_influence"], closed, rtol=1e-4)


def test_all_mode_adds_the_other_layers_to_the_last_layer_norm(ctx):
    model = ctx.load_model(1)
    index = np.flatnonzero(ctx.trained_by == 1)[:64]
    x, y = ctx.inputs(index), torch.as_tensor(ctx.labels[index])
    full = full_sq_norms(model, x, y)
    assert torch.all(full >= last_layer_sq_norms(model, x, y) * (1 - 1e-4))
    # Chunks sum the same float32 products in another order: equal up to float32 rounding.
    torch.testing.assert_close(full_sq_norms(model, x, y, chunk=5), full, rtol=1e-4, atol=0)


@pytest.mark.parametrize("options, option", [({"mode": "full"}, "mode"), ({"batch_size": 0}, "batch_size")])
def test_bad_option_is_a_config_error_naming_it(options, option):
    with pytest.raises(curator.ConfigError, match=rf"\[scorers\.self_influence\] {option}"):
        SCORER.check_options({**SCORER.options, **options})


def test_steps_mode_sums_lr_times_the_head_gradient_recorded_at_every_step(ctx, noisy_digits, noisy_digits_run):
    dynamics = ctx.dynamics
    expected = (np.asarray(dynamics.step_lr, np.float64) * dynamics.head_grad_sq).sum(axis=0)
    assert expected.min() > 0
    steps = SCORER.score(ctx)["self_influence"]
    np.testing.assert_allclose(steps, expected, rtol=1e-6)
    # TracIn at the steps and its checkpoint approximation rank the flipped labels alike.
    flipped = truth_for(noisy_digits_run, noisy_digits[1])
    checkpoints = SCORER.score(with_options(ctx, mode="last_layer"))["self_influence"]
    assert roc_auc_score(flipped, steps) >= roc_auc_score(flipped, checkpoints) - 0.03
