"""Foreign batches: clusters of the held-out representation whose labels mean nothing for them."""

from __future__ import annotations

import numpy as np

from conftest import truth_for
from curator.foreign import foreign_batches, mix_pvalue


def _embeddings(rng, centers: np.ndarray, assign: np.ndarray) -> np.ndarray:
    return (centers[assign] + 0.05 * rng.normal(size=(len(assign), centers.shape[1]))).astype(np.float32)


def test_a_cluster_with_random_labels_and_chance_predictions_is_foreign_and_the_others_are_not():
    rng = np.random.default_rng(0)
    n_classes, per = 10, 60
    centers = rng.normal(size=(13, 16))
    # Blobs 0-9: clean classes. Blob 10: a confusable region of classes 0-2 that the held-out model gets
    # right. Blob 11: class-2 images, 30% of them labelled 3 (label errors). Blob 12: a foreign batch,
    # arbitrary labels and predictions unrelated to them.
    assign = np.repeat(np.arange(13), per)
    labels = np.r_[np.repeat(np.arange(10), per), rng.integers(0, 3, per), np.full(per, 2),
                   rng.integers(0, n_classes, per)]
    predicted = labels.copy()
    labels[11 * per:11 * per + 18] = 3                                       # held-out still says 2 there
    predicted[12 * per:] = rng.integers(0, n_classes, per)
    x = _embeddings(rng, centers, assign)
    ids = [str(i) for i in range(len(labels))]
    found = foreign_batches(x, np.zeros(len(labels), np.int64), labels, predicted, n_classes, ids,
                            clusters_per_class=2)
    foreign_rows = set(range(12 * per, 13 * per))
    assert found and set(np.concatenate([b.rows for b in found])) == foreign_rows
    for batch in found:
        assert batch.label_mix_p >= 0.05 and batch.heldout_accuracy <= batch.chance_accuracy + 0.05
        record = batch.to_dict()
        assert record["kind"] == "foreign" and record["size"] == len(batch.rows) == len(record["ids"])


def test_two_classes_never_give_a_foreign_batch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    labels = rng.integers(0, 2, 200)
    assert foreign_batches(x, np.zeros(200, np.int64), labels, rng.integers(0, 2, 200), 2,
                           [str(i) for i in range(200)]) == []


def test_photo_patches_among_digits_form_a_foreign_batch_of_patches(ood_digits, ood_digits_run):
    is_ood = truth_for(ood_digits_run, ood_digits[1])
    batches = ood_digits_run.manifest["foreign_batches"]
    assert batches, "no foreign batch found"
    members = ood_digits_run.scores["id"].isin({i for b in batches for i in b["ids"]}).to_numpy()
    assert (members & is_ood).sum() / members.sum() >= 0.9          # the batch is patches, not digits
    assert ood_digits_run.scores["is_outlier"].to_numpy()[members].all()
    assert ood_digits_run.scores.loc[members, "reasons"].str.contains("foreign batch #").all()


def test_label_noise_alone_gives_no_foreign_batch(noisy_digits_run):
    assert noisy_digits_run.manifest["foreign_batches"] == []


def test_foreign_batch_members_are_outliers_never_mislabels(ood_digits_run):
    # Their labels mean nothing, so there is no right label to suggest: the queue shows them as outliers.
    batches = ood_digits_run.manifest["foreign_batches"]
    scores = ood_digits_run.scores
    members = scores["id"].isin({i for b in batches for i in b["ids"]}).to_numpy()
    assert members.any()
    assert not scores["is_mislabeled"].to_numpy()[members].any()
    assert (scores["outlier_score"].to_numpy()[members] >= 0.5).all()


def test_with_a_thousand_classes_arbitrary_labels_pass_the_mix_test_and_a_few_classes_fail_it():
    # 390 members over 1,000 classes expect 0.39 per class: the chi-square approximation is void there,
    # the collision test is not. Calibrated: arbitrary labels are rejected about alpha of the time.
    rng = np.random.default_rng(0)
    frequency = np.full(1000, 1e-3)
    arbitrary = [mix_pvalue(np.bincount(rng.integers(0, 1000, 390), minlength=1000), frequency) for _ in range(400)]
    assert 0.01 <= np.mean(np.array(arbitrary) < 0.05) <= 0.10
    few = np.bincount(rng.integers(0, 20, 390), minlength=1000)            # one cluster of 20 classes
    assert mix_pvalue(few, frequency) < 1e-6
    # Ten classes and enough members: the chi-square test, as before.
    counts = np.array([40, 38, 41, 39, 42, 37, 40, 43, 40, 40])
    assert mix_pvalue(counts, np.full(10, 0.1)) > 0.5


def test_a_foreign_batch_is_found_among_a_thousand_classes():
    rng = np.random.default_rng(3)
    n_classes, per_class = 1000, 12
    labels = np.repeat(np.arange(n_classes), per_class)
    centers = rng.normal(size=(n_classes + 1, 32))
    foreign = 400
    x = np.concatenate([_embeddings(rng, centers, labels), _embeddings(rng, centers, np.full(foreign, n_classes))])
    all_labels = np.r_[labels, rng.integers(0, n_classes, foreign)]
    predicted = np.r_[labels, rng.integers(0, n_classes, foreign)]
    ids = [str(i) for i in range(len(all_labels))]
    found = foreign_batches(x, np.zeros(len(all_labels), np.int64), all_labels, predicted, n_classes, ids)
    rows = set(np.concatenate([b.rows for b in found]).tolist()) if found else set()
    foreign_rows = set(range(len(labels), len(all_labels)))
    assert len(rows & foreign_rows) >= 0.75 * foreign and len(rows - foreign_rows) <= 0.05 * foreign
