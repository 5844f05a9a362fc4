"""kernel_density scorer and the shared kNN graph it reads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import truth_for
from sklearn.metrics import roc_auc_score

import curator
from curator.engine import knn as knn_module
from curator.engine.knn import knn_graph
from curator_plugins.kernel_density import score_kernel_density


def _context(run: curator.Run, artifacts, options=None) -> curator.ScoreContext:
    n = len(run.scores)
    labels = run.scores["label"].map({c: i for i, c in enumerate(run.classes)}).to_numpy(np.int64)
    return curator.ScoreContext(artifacts=artifacts, labels=labels, classes=run.classes,
                                ids=list(run.scores["id"]), inputs_array=np.zeros((n, 1), np.float32),
                                device=torch.device("cpu"), options=options or {})


def _copy_embeddings(run: curator.Run, tmp_path):
    """A fresh artifacts folder holding only what the kNN graph is built from."""
    for name in ("embeddings.npy", "folds.npy"):
        shutil.copy(run.path / "artifacts" / name, tmp_path / name)
    return tmp_path


def test_plain_density_ranks_photo_patches_as_outliers(ood_digits_run, ood_digits):
    is_ood = truth_for(ood_digits_run, ood_digits[1])
    auroc = roc_auc_score(is_ood, ood_digits_run.scores["score_kernel_density"])
    assert auroc >= 0.90, auroc          # measured 0.963


def test_label_aware_density_ranks_flipped_labels(noisy_digits_run, noisy_digits):
    flipped = truth_for(noisy_digits_run, noisy_digits[1])
    scores = noisy_digits_run.scores
    assert roc_auc_score(flipped, scores["score_kernel_density_label"]) >= 0.95      # measured 0.998
    # The plain density never reads labels: it has no mislabel signal, hence issue=("outlier",).
    assert abs(roc_auc_score(flipped, scores["score_kernel_density"]) - 0.5) < 0.1


def test_scorer_declares_outlier_issue_and_knn_requirement():
    registry = curator.load_plugins()
    scorer = registry["kernel_density"].scorer
    assert scorer.issue == ("outlier",)
    assert set(scorer.requires) == {"embeddings", "knn"}
    assert scorer.direction == "higher"


def test_knn_graph_excludes_self_stays_in_fold_and_is_built_once(noisy_digits_run, tmp_path, monkeypatch):
    ctx = _context(noisy_digits_run, _copy_embeddings(noisy_digits_run, tmp_path))
    indices, sims = ctx.knn(15)
    n = ctx.n_examples
    assert indices.shape == sims.shape == (n, 15)
    assert not (indices == np.arange(n)[:, None]).any()
    assert (ctx.folds[indices] == ctx.folds[:, None]).all()
    assert (np.diff(sims, axis=1) <= 1e-6).all()                 # most similar first
    stored = np.load(tmp_path / "knn_indices.npy")
    np.testing.assert_array_equal(stored, indices)

    def no_search(*args, **kwargs):
        raise AssertionError("kNN graph rebuilt instead of read from artifacts")

    monkeypatch.setattr(knn_module, "_flat_ip_index", no_search)
    again, again_sims = ctx.knn(15)
    fewer, _ = ctx.knn(5)
    np.testing.assert_array_equal(again, indices)
    np.testing.assert_array_equal(again_sims, sims)
    np.testing.assert_array_equal(fewer, indices[:, :5])


def test_knn_graph_matches_brute_force_cosine(tmp_path):
    x = np.random.default_rng(0).normal(size=(300, 12)).astype(np.float32) * 3.0
    indices, sims = knn_graph(x, 8, tmp_path, torch.device("cpu"))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = unit @ unit.T
    np.fill_diagonal(cos, -np.inf)
    expected = np.argsort(-cos, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(cos, expected, 1), atol=1e-5)


def test_knn_graph_drops_self_among_duplicates_and_caps_k(tmp_path):
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    x = np.concatenate([x, x[:3], x[:3]])                          # rows 0-2 appear three times
    indices, sims = knn_graph(x, 50, tmp_path, torch.device("cpu"))
    assert indices.shape == (12, 11)                               # k capped at N - 1
    for i, row in enumerate(indices):
        assert i not in row and len(set(row)) == 11
    copies = {0: {6, 9}, 6: {0, 9}, 9: {0, 6}}
    for i, others in copies.items():
        assert set(indices[i, :2]) == others
        np.testing.assert_allclose(sims[i, :2], 1.0, atol=1e-5)


def test_knn_graph_searches_within_groups(tmp_path):
    x = np.random.default_rng(2).normal(size=(100, 5)).astype(np.float32)
    groups = np.arange(100) % 3
    indices, _ = knn_graph(x, 10, tmp_path, torch.device("cpu"), groups=groups)
    assert (groups[indices] == groups[:, None]).all()


@pytest.mark.parametrize("options", [{"k": 0}, {"k": 2.5}, {"bandwidth": 0}, {"bandwidth": "wide"},
                                     {"exact_max": -1}, {"exact_max": "all"}])
def test_bad_options_name_the_option(noisy_digits_run, tmp_path, options):
    ctx = _context(noisy_digits_run, tmp_path, options)
    with pytest.raises(curator.ConfigError, match=r"\[scorers.kernel_density\]"):
        score_kernel_density(ctx)


def test_large_groups_are_searched_with_ivf_and_keep_nearly_every_true_neighbour(tmp_path, monkeypatch):
    ivf_index = knn_module._ivf_ip_index
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(20, 16))
    x = (centers[rng.integers(0, 20, 6000)] + 0.5 * rng.normal(size=(6000, 16))).astype(np.float32)
    groups = np.arange(6000) % 2
    (tmp_path / "exact").mkdir()
    (tmp_path / "ivf").mkdir()
    exact, _ = knn_graph(x, 10, tmp_path / "exact", torch.device("cpu"), groups=groups)
    built = []
    monkeypatch.setattr(knn_module, "_ivf_ip_index", lambda *a: built.append(a) or ivf_index(*a))
    approx, sims = knn_graph(x, 10, tmp_path / "ivf", torch.device("cpu"), groups=groups, exact_max=1000)
    assert len(built) == 2                            # one IVF index per group of 3,000 > exact_max
    assert approx.shape == (6000, 10)
    assert not (approx == np.arange(6000)[:, None]).any()
    assert (groups[approx] == groups[:, None]).all()
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95, recall


def test_exact_max_option_reaches_the_knn_search(noisy_digits_run, tmp_path, monkeypatch):
    ctx = _context(noisy_digits_run, _copy_embeddings(noisy_digits_run, tmp_path), {"exact_max": 100})
    built = []
    ivf_index = knn_module._ivf_ip_index
    monkeypatch.setattr(knn_module, "_ivf_ip_index", lambda *a: built.append(a) or ivf_index(*a))
    out = score_kernel_density(ctx)
    assert len(built) == len(np.unique(ctx.folds))       # every fold is larger than 100: IVF for each
    assert out["kernel_density"].shape == (ctx.n_examples,)
