"""The built-in scorers pass the same contract check a third-party plugin author runs
(``curator.testing.check_scorer``), and the check fails, with a message that says why, when a scorer
breaks the contract. All checks share one proxy run, trained once per process."""

from __future__ import annotations

import numpy as np
import pytest

import curator
from curator.testing import bench, check_scorer

# Lowest accepted AUROC per (scorer, column, issue) on the check's dataset (digits, 10% flipped labels,
# 3% photo patches; 4 epochs, seed 0, CPU). Measured: learning_speed 0.999, early_learning 0.999,
# self_influence 0.996, kernel_density 0.952 (outliers) and kernel_density_label 1.000 (mislabels),
# adversarial_distance 0.932 (outliers).
BUILTINS = {
    "learning_speed": {"learning_speed": {"mislabeled": 0.97}},
    "early_learning": {"early_learning": {"mislabeled": 0.97}},
    "self_influence": {"self_influence": {"mislabeled": 0.97}},
    "kernel_density": {"kernel_density": {"outlier": 0.9}, "kernel_density_label": {"mislabeled": 0.97}},
    "adversarial_distance": {"adversarial_distance": {"outlier": 0.88}, "adversarial_distance_log": {"outlier": 0.88}},
}


@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_scorer_meets_the_plugin_contract(name):
    expected = BUILTINS[name]
    result = check_scorer(name, min_auroc=0.85)  # found through the entry points, like any plugin
    assert {col: set(issues) for col, issues in result.aurocs.items()} == \
        {col: set(issues) for col, issues in expected.items()}
    for col, issues in expected.items():
        for issue, floor in issues.items():
            assert result.aurocs[col][issue] >= floor, (col, issue, result.aurocs[col][issue])


def test_the_check_dataset_has_real_digits_flipped_labels_and_photo_outliers():
    b = bench()
    assert len(b.examples) == 1797 + 53
    assert b.truth["mislabeled"].sum() == 180 and b.truth["outlier"].sum() == 53
    assert not (b.truth["mislabeled"] & b.truth["outlier"]).any()
    assert b.examples.inputs.shape == (1850, 1, 8, 8) and b.examples.inputs.dtype == np.uint8


def _plugin(scorer: curator.Scorer):
    class Plugin:
        @curator.hookimpl
        def register_scorers(self, register):
            register(scorer)
    return Plugin()


def _loss(ctx):
    return np.asarray(ctx.dynamics.loss[0], dtype=np.float32)


def test_a_plugin_is_checked_the_same_as_its_scorer_and_reports_the_auroc():
    scorer = curator.Scorer(name="first_loss", issue="mislabeled", requires="dynamics", score=_loss)
    by_plugin, by_scorer = check_scorer(_plugin(scorer)), check_scorer(scorer)
    assert by_plugin.auroc == by_scorer.auroc > 0.85
    assert list(by_plugin.columns) == ["score_first_loss"]
    assert by_plugin.columns["score_first_loss"].dtype == np.float32


def test_a_scorer_with_the_wrong_direction_fails_and_the_message_says_so():
    scorer = curator.Scorer(name="first_loss", issue="mislabeled", requires="dynamics", score=_loss,
                            direction="lower")
    with pytest.raises(AssertionError, match=r"AUROC 0\.[01]\d* < min_auroc 0.6; the reversed column reaches "
                                             r"0\.[89]\d*: is direction='lower' right\?"):
        check_scorer(scorer)


def test_an_outlier_scorer_is_ranked_against_the_photo_patches():
    scorer = curator.Scorer(name="first_loss", issue="outlier", requires="dynamics", score=_loss)
    result = check_scorer(scorer, min_auroc=0.5)
    assert set(result.aurocs["first_loss"]) == {"outlier"}
    assert result.auroc > 0.75  # photo patches carry random labels, so their loss is high too


def test_a_spurious_scorer_gets_the_contract_checks_but_no_auroc():
    scorer = curator.Scorer(name="first_loss", issue="spurious", requires="dynamics", score=_loss)
    assert check_scorer(scorer).auroc is None


@pytest.mark.parametrize("values, message", [
    (lambda n: np.full(n, np.nan, np.float32), r"column 'bad' has 1850 NaN/inf values"),
    (lambda n: np.zeros((n, 2), np.float32), r"column 'bad' has shape \(1850, 2\), expected \(1850,\)"),
    (lambda n: np.random.default_rng().random(n), r"score_bad differs between two calls with the same seed"),
])
def test_a_scorer_breaking_the_contract_fails_with_a_message_naming_it(values, message):
    scorer = curator.Scorer(name="bad", issue="spurious", requires=(), score=lambda ctx: values(ctx.n_examples))
    with pytest.raises(AssertionError, match=rf"scorer 'bad'.*{message}"):
        check_scorer(scorer)


def test_a_plugin_that_registers_no_scorer_is_told_how_to():
    class Empty:
        pass

    with pytest.raises(AssertionError, match=r"registers no scorer: does it define a @curator.hookimpl"):
        check_scorer(Empty())


def test_a_name_that_is_not_installed_lists_what_is():
    with pytest.raises(AssertionError, match=r"no scorer named 'nope' \(found: .*learning_speed"):
        check_scorer("nope")


def test_a_min_auroc_outside_zero_to_one_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"min_auroc=1.5: must be in \[0, 1\]"):
        check_scorer("learning_speed", min_auroc=1.5)


def _first_loss_rows(ctx, rows):
    return {"first_loss": np.asarray(ctx.dynamics.loss[0])[rows]}


def test_a_shardable_scorer_is_checked_in_shards_too():
    scorer = curator.Scorer(name="first_loss", issue="mislabeled", requires="dynamics", score_rows=_first_loss_rows)
    result = check_scorer(scorer)
    assert result.auroc > 0.85
    np.testing.assert_array_equal(result.columns["score_first_loss"], check_scorer(
        curator.Scorer(name="first_loss", issue="mislabeled", requires="dynamics", score=_loss)).columns["score_first_loss"])


def test_a_shard_whose_rows_depend_on_the_other_rows_fails_the_check():
    def rank_within_rows(ctx, rows):              # a rank among the rows asked for: not shardable
        loss = np.asarray(ctx.dynamics.loss[0])[rows]
        return {"first_loss": loss.argsort().argsort().astype(np.float32)}

    scorer = curator.Scorer(name="first_loss", issue="mislabeled", requires="dynamics", score_rows=rank_within_rows)
    with pytest.raises(AssertionError, match=r"scorer 'first_loss': score_first_loss scored in 3 shards of rows "
                                             r"differs from one call on every row"):
        check_scorer(scorer)


def test_a_rank_belongs_in_finish_and_then_shards_agree():
    def rank(ctx, parts):
        return {"first_loss": parts["loss"].argsort().argsort().astype(np.float32)}

    scorer = curator.Scorer(name="first_loss", issue="mislabeled", requires="dynamics",
                            score_rows=lambda ctx, rows: {"loss": np.asarray(ctx.dynamics.loss[0])[rows]}, finish=rank)
    assert check_scorer(scorer).auroc > 0.85


@pytest.mark.parametrize("fields, message", [
    ({}, r"scorer 'bad': score must be callable \(or give score_rows\)"),
    ({"score": _loss, "finish": lambda ctx, parts: parts}, r"scorer 'bad': finish needs score_rows"),
    ({"score_rows": "not a function"}, r"scorer 'bad': score_rows must be callable"),
])
def test_a_scorer_record_without_a_callable_way_to_score_is_refused(fields, message):
    with pytest.raises(curator.PluginError, match=message):
        curator.Scorer(name="bad", issue="outlier", requires=(), **fields)
