from types import SimpleNamespace

import numpy as np
import pytest

import curator
import curator_el2n
from curator.testing import check_scorer


def test_el2n_meets_the_scorer_contract_and_ranks_flipped_labels_first():
    result = check_scorer(curator_el2n, min_auroc=0.95)
    assert result.columns["score_el2n"].shape == (1850,)
    assert result.auroc >= 0.95


def _stats(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E, N, C) probabilities -> the (E, N) prob_sq and p_label curator records."""
    return (probs ** 2).sum(axis=2), probs[:, np.arange(len(labels)), labels]


def test_el2n_is_zero_when_confidently_right_and_root_two_when_confidently_wrong():
    probs = np.array([[[1.0, 0.0], [1.0, 0.0]]])              # (E=1, N=2, C=2), both predict class 0
    np.testing.assert_allclose(curator_el2n.el2n(*_stats(probs, np.array([0, 1]))), [0.0, np.sqrt(2)], atol=1e-6)


def test_el2n_averages_over_the_first_early_fraction_of_the_epochs():
    right, wrong = [1.0, 0.0], [0.0, 1.0]
    prob_sq, p_label = _stats(np.array([[right], [wrong], [wrong], [wrong]]), np.array([0]))   # given label 0
    ctx = SimpleNamespace(options={"early_fraction": 0.5}, labels=np.array([0]),
                          dynamics=SimpleNamespace(prob_sq=prob_sq, p_label=p_label, n_epochs=4))
    np.testing.assert_allclose(curator_el2n.score_el2n(ctx), [np.sqrt(2) / 2], atol=1e-6)


def test_a_bad_early_fraction_is_an_error_naming_the_option():
    with pytest.raises(curator.ConfigError, match=r"\[scorers.el2n\] early_fraction = 2"):
        check_scorer(curator_el2n, options={"early_fraction": 2})
