"""curator score end to end on real digits with injected label noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

import curator
from curator.cli import main
from conftest import truth_for

BUILTIN_MISLABEL_COLUMNS = ["score_learning_speed", "score_learning_speed_aum", "score_early_learning"]


@pytest.mark.parametrize("column", BUILTIN_MISLABEL_COLUMNS)
def test_builtin_scorers_rank_flipped_labels_far_above_chance(noisy_digits, noisy_digits_run, column):
    _, truth = noisy_digits
    flipped = truth_for(noisy_digits_run, truth)
    assert roc_auc_score(flipped, noisy_digits_run.scores[column]) >= 0.85


def test_forgetting_events_count_transitions_and_never_learned(noisy_digits_run):
    correct = np.load(noisy_digits_run.path / "artifacts" / "dynamics_correct.npy")
    expected = (correct[:-1] & ~correct[1:]).sum(0).astype(float)
    expected[~correct.any(0)] = correct.shape[0]
    np.testing.assert_array_equal(noisy_digits_run.scores["score_learning_speed_forgetting"], expected)


def test_run_directory_holds_exactly_the_documented_files(noisy_digits_run):
    names = {p.name for p in noisy_digits_run.path.iterdir()}
    assert names == {"manifest.json", "scores.parquet", "oof_probs.npy", "classes.json", "review_queue.csv",
                     "review_queue.parquet",
                     "artifacts"}
    artifacts = {p.name for p in (noisy_digits_run.path / "artifacts").iterdir()}
    assert {"dynamics_logits.npy", "dynamics_p_label.npy", "dynamics_margin.npy", "dynamics_correct.npy",
            "dynamics_loss.npy", "oof_logits.npy", "embeddings.npy", "folds.npy", "checkpoints.json",
            "model.json", "checkpoints"} <= artifacts
    assert not noisy_digits_run.path.with_name(noisy_digits_run.path.name + ".partial").exists()


def test_scores_parquet_has_the_documented_columns_and_shapes(noisy_digits_run):
    scores = noisy_digits_run.scores
    n = len(scores)
    assert n == 1797
    assert list(scores.columns[:4]) == ["id", "path", "label", "fold"]
    for column in ["is_mislabeled", "is_outlier", "is_spurious", "mislabeled_score", "outlier_score",
                   "spurious_score", "suggested_label", "reasons", *BUILTIN_MISLABEL_COLUMNS]:
        assert column in scores.columns, column
    for column in ("mislabeled_score", "outlier_score", "spurious_score"):
        assert scores[column].between(0, 1).all()
    assert set(scores["fold"]) == {0, 1}
    probs = noisy_digits_run.oof_probs
    assert probs.shape == (n, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert noisy_digits_run.classes == [str(i) for i in range(10)]
    epochs = noisy_digits_run.manifest["config"]["train"]["epochs"]
    assert np.load(noisy_digits_run.path / "artifacts" / "dynamics_logits.npy", mmap_mode="r").shape == (epochs, n, 10)


def test_ids_are_the_image_paths_on_disk(noisy_digits, noisy_digits_run):
    root, _ = noisy_digits
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert sorted(noisy_digits_run.scores["id"]) == on_disk
    row = noisy_digits_run.scores.iloc[5]
    assert row["path"] == row["id"] and row["path"].split("/")[0] == row["label"]


def test_every_example_gets_dynamics_from_a_model_that_trained_on_it(noisy_digits_run):
    artifacts = noisy_digits_run.path / "artifacts"
    folds = np.load(artifacts / "folds.npy")
    logits = np.load(artifacts / "dynamics_logits.npy", mmap_mode="r")
    assert (np.abs(logits).sum(axis=(0, 2)) > 0).all()        # every row was recorded
    assert np.array_equal(noisy_digits_run.scores["fold"].to_numpy(), folds)
    assert np.bincount(folds).min() >= 898                   # stratified halves


def test_manifest_records_stages_scorers_and_versions(noisy_digits_run):
    m = noisy_digits_run.manifest
    assert set(m["stages"]) == {"load", "train", "score", "flag"}
    assert m["scorers"]["learning_speed"]["status"] == "done"
    assert m["dataset"]["n_examples"] == 1797 and len(m["dataset"]["fingerprint"]) == 16
    assert m["proxy"]["oof_accuracy"] > 0.7
    assert m["versions"]["torch"].startswith("2.14")


def test_flagged_mislabels_and_review_queue(noisy_digits, noisy_digits_run):
    _, truth = noisy_digits
    flipped = truth_for(noisy_digits_run, truth)
    flagged = noisy_digits_run.scores["is_mislabeled"].to_numpy()
    precision = (flipped & flagged).sum() / flagged.sum()
    recall = (flipped & flagged).sum() / flipped.sum()
    assert precision >= 0.6 and recall >= 0.7, (precision, recall)
    queue = noisy_digits_run.review_queue
    assert list(queue.columns) == ["id", "path", "label", "suggested_label", "issue", "score", "reasons"]
    assert (queue["score"].diff().dropna() <= 0).all()
    assert (queue["issue"] == "mislabeled").sum() == flagged.sum()


def test_same_seed_gives_the_same_scores(noisy_digits, noisy_digits_run, tmp_path):
    root, _ = noisy_digits
    again = curator.score(root, out=tmp_path / "again", seed=0, scorers="learning_speed", progress=False)
    np.testing.assert_allclose(again.scores["score_learning_speed"], noisy_digits_run.scores["score_learning_speed"],
                               atol=1e-5)


def test_plugins_json_lists_the_builtins():
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0
    listed = {s["name"]: s for s in json.loads(result.output)["scorers"]}
    assert {"learning_speed", "early_learning"} <= set(listed)
    assert listed["learning_speed"]["package"] == "curator"
    assert listed["learning_speed"]["requires"] == ["dynamics"]
    assert listed["early_learning"]["issue"] == ["mislabeled"]


class LossPlugin:
    """A throw-away third-party scorer: the last-epoch training loss."""

    @curator.hookimpl
    def register_scorers(self, register):
        register(curator.Scorer(name="last_loss", issue=("mislabeled",), requires=("dynamics",),
                                score=lambda ctx: np.asarray(ctx.dynamics.loss[-1])))


def test_a_throwaway_plugin_becomes_a_score_column(noisy_digits, tmp_path):
    root, truth = noisy_digits
    run = curator.score(root, out=tmp_path / "run", scorers="last_loss", epochs=2, plugins=[LossPlugin()],
                        progress=False)
    assert "score_last_loss" in run.scores.columns
    assert run.manifest["scorers"]["last_loss"]["status"] == "done"
    assert roc_auc_score(truth_for(run, truth), run.scores["score_last_loss"]) > 0.8


class BrokenPlugin:
    @curator.hookimpl
    def register_scorers(self, register):
        register(curator.Scorer(name="broken", issue="outlier", requires=(), score=lambda ctx: np.zeros(3)))


def test_a_scorer_with_the_wrong_shape_is_left_out_and_recorded(noisy_digits, tmp_path):
    root, _ = noisy_digits
    run = curator.score(root, out=tmp_path / "run", scorers="broken,learning_speed", epochs=1,
                        plugins=[BrokenPlugin()], progress=False)
    assert "score_broken" not in run.scores.columns
    assert run.manifest["scorers"]["broken"]["status"] == "failed"
    assert "shape (3,)" in run.manifest["scorers"]["broken"]["error"]


def test_strict_mode_makes_a_failing_scorer_fatal_and_leaves_no_run(noisy_digits, tmp_path):
    root, _ = noisy_digits
    with pytest.raises(curator.PluginError, match="broken"):
        curator.score(root, out=tmp_path / "run", scorers="broken", epochs=1, plugins=[BrokenPlugin()],
                      strict=True, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_duplicate_scorer_names_are_an_error_naming_both():
    class Twin:
        @curator.hookimpl
        def register_scorers(self, register):
            register(curator.Scorer(name="learning_speed", issue="mislabeled", requires=(), score=lambda c: 0))

    with pytest.raises(curator.PluginError, match="registered twice.*curator"):
        curator.load_plugins([Twin()])


def test_threads_holds_for_the_run_and_is_restored_after(noisy_digits, tmp_path):
    seen = []

    class Plugin:
        @curator.hookimpl
        def register_scorers(self, register):
            register(curator.Scorer(name="threads_seen", issue="outlier", requires=(),
                                    score=lambda ctx: seen.append(torch.get_num_threads()) or np.zeros(ctx.n_examples)))

    before = torch.get_num_threads()
    run = curator.score(noisy_digits[0], out=tmp_path / "run", scorers="threads_seen", epochs=1, threads=1,
                        plugins=[Plugin()], progress=False)
    assert seen == [1] and run.manifest["config"]["threads"] == 1
    assert torch.get_num_threads() == before
