"""curator retrain: what each method trains on, the files it writes, and clean failures naming the option."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import curator
from curator.cli import main
from conftest import assert_clean_failure  # noqa: E402
from curator.data import load_dataset
from curator.errors import ConfigError
from curator.engine.inputs import InputBank
from curator.retrain import RetrainConfig, Retrainer, accuracy_report, load_model, predict_logits
from curator.retrain.models import FinalModelSpec, build_final_model

NO_VAL = RetrainConfig(selection="last", epochs=1)


@pytest.fixture(scope="module")
def grouped_digits(noisy_digits, tmp_path_factory):
    """400 of the digits as a manifest with a ``group`` column (digit < 5 x even/odd row)."""
    root, _ = noisy_digits
    out = tmp_path_factory.mktemp("grouped_digits")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))[::4][:400]
    rows = []
    for i, rel in enumerate(files):
        label = rel.split("/")[0]
        (out / label).mkdir(exist_ok=True)
        Image.open(root / rel).save(out / rel)
        rows.append({"path": rel, "label": label, "group": f"{'low' if int(label) < 5 else 'high'}-{i % 2}"})
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    return out


@pytest.fixture(scope="module")
def trainer(noisy_digits, noisy_digits_run):
    root, _ = noisy_digits
    return Retrainer(root, run=noisy_digits_run, config=NO_VAL, device="cpu")


def test_clean_drops_exactly_the_flagged_rows(trainer, noisy_digits_run):
    rows, labels, _, info = trainer.plan("clean")
    scores = noisy_digits_run.scores
    flagged = set(scores["id"][scores["is_mislabeled"] | scores["is_outlier"]])
    assert len(flagged) > 50
    kept = {trainer.data.ids[r] for r in rows}
    assert kept == set(trainer.data.ids) - flagged
    assert info["dropped"] == len(flagged)
    np.testing.assert_array_equal(labels, trainer.data.labels[rows])


def test_clean_with_applied_reviews_trains_on_the_corrected_manifest(trainer, tmp_path):
    ids = trainer.data.ids
    keep = ids[100:]                                          # the first 100 were removed in review
    labels = [trainer.classes[y] for y in trainer.data.labels[100:]]
    labels[:5] = [trainer.classes[(trainer.data.labels[100 + i] + 1) % 10] for i in range(5)]   # relabelled
    csv = tmp_path / "corrected_manifest.csv"
    pd.DataFrame({"id": keep, "path": keep, "label": labels}).to_csv(csv, index=False)
    reviewed = Retrainer(trainer.data, run=trainer.run, applied_reviews=csv, config=NO_VAL, device="cpu")
    rows, new_labels, _, info = reviewed.plan("clean")
    assert [ids[r] for r in rows] == keep
    assert [trainer.classes[y] for y in new_labels] == labels
    assert info["dropped"] == 100 and info["relabelled"] == 5


def test_reweight_down_weights_suspects_and_balances_each_class_spurious_minority(noisy_digits, noisy_digits_run):
    run = curator.Run(noisy_digits_run.path)
    scores = run.scores.copy()
    # a known spurious minority: every 7th example of class 3 that is not a mislabel suspect
    in_class = (scores["label"] == "3") & ~scores["is_mislabeled"]
    scores["is_spurious"] = in_class & (np.arange(len(scores)) % 7 == 0)
    run.__dict__["scores"] = scores
    trainer = Retrainer(noisy_digits[0], run=run, config=NO_VAL, device="cpu")
    rows, labels, kwargs, info = trainer.plan("reweight")
    weights = kwargs["weights"]
    scores = scores.iloc[trainer.run_rows()[rows]]
    flagged = scores["is_mislabeled"].to_numpy(bool)
    spurious = scores["is_spurious"].to_numpy(bool)
    np.testing.assert_allclose(weights[flagged], 1.0 - scores["mislabeled_score"][flagged], rtol=1e-6)
    assert (weights[~flagged & ~spurious] == 1.0).all()
    three = labels == trainer.classes.index("3")
    assert weights[three & spurious].sum() == pytest.approx(weights[three & ~spurious].sum())
    assert info["spurious_up_weighted"] == spurious.sum() > 10


class RecordedFits:
    """Every call of ``curator.retrain.methods.fit``: its model, rows, labels, hyper and keyword arguments."""

    def __init__(self, monkeypatch):
        import curator.retrain.methods as methods

        self.calls = []
        real = methods.fit

        def recording(model, bank, rows, labels, hyper, **kwargs):
            fitted = real(model, bank, rows, labels, hyper, **kwargs)
            self.calls.append({"model": model, "rows": np.array(rows), "labels": np.array(labels), "hyper": hyper,
                               **kwargs})
            return fitted
        monkeypatch.setattr(methods, "fit", recording)


def test_jtt_upweights_exactly_the_rows_its_early_model_misclassifies(trainer, monkeypatch):
    fits = RecordedFits(monkeypatch)
    config = RetrainConfig(selection="last", epochs=2, jtt_epochs=1, upweights=(7.0,), augment="none")
    jtt = Retrainer(trainer.data, config=config, device="cpu")
    result = jtt.train("jtt")
    early, final = fits.calls
    assert early["hyper"].epochs == 1 and early.get("weights") is None
    predicted = predict_logits(early["model"], jtt.bank, early["rows"]).argmax(1)
    wrong = predicted != early["labels"]
    assert 0 < wrong.sum() < len(wrong)
    np.testing.assert_array_equal(final["rows"], early["rows"])
    np.testing.assert_array_equal(final["weights"], np.where(wrong, 7.0, 1.0))
    assert result.info["error_set"] == wrong.sum()


def test_relabel_trains_on_the_suggested_labels_of_confident_suspects(noisy_digits, noisy_digits_run, monkeypatch):
    run = curator.Run(noisy_digits_run.path)
    scores = run.scores.copy()
    n = len(scores)
    given = scores["label"].astype(int).to_numpy()
    suggested = (given + 3) % 10
    confident, doubtful, outlier = np.arange(0, 40), np.arange(40, 60), np.arange(60, 70)
    probs = np.full((n, 10), 0.05, np.float32)
    probs[confident, suggested[confident]] = 0.8
    probs[doubtful, suggested[doubtful]] = 0.2
    scores["is_mislabeled"] = np.isin(np.arange(n), np.r_[confident, doubtful])
    scores["is_outlier"] = np.isin(np.arange(n), outlier)
    scores["suggested_label"] = np.where(scores["is_mislabeled"], suggested.astype(str), scores["label"])
    run.__dict__["scores"], run.__dict__["oof_probs"] = scores, probs
    fits = RecordedFits(monkeypatch)
    relabel = Retrainer(noisy_digits[0], run=run, config=RetrainConfig(selection="last", epochs=1, relabel_confidence=0.5),
                        device="cpu")
    result = relabel.train("relabel")
    (call,) = fits.calls
    trained = {relabel.data.ids[r]: relabel.classes[y] for r, y in zip(call["rows"], call["labels"])}
    ids = scores["id"].to_numpy()
    assert {ids[i]: str(suggested[i]) for i in confident}.items() <= trained.items()
    assert not set(ids[np.r_[doubtful, outlier]]) & set(trained)
    rest = np.arange(70, n)
    assert {ids[i]: str(given[i]) for i in rest} == {i: trained[i] for i in ids[rest]}
    assert result.info["relabelled"] == 40 and result.info["dropped"] == 30


def test_groupdro_reports_the_most_weight_on_its_worst_training_group(grouped_digits):
    data = load_dataset(grouped_digits)
    hard = (data.metadata["group"] == "high-1").to_numpy()    # shuffled labels: the group no model can fit
    labels = data.labels.copy()
    labels[hard] = np.random.default_rng(0).permutation(labels[hard])
    trainer = Retrainer(replace(data, labels=labels), config=RetrainConfig(epochs=3, dro_step=0.3, val_fraction=0.25),
                        device="cpu")
    weights = trainer.train("groupdro").info["group_weights"]
    assert set(weights) == {"low-0", "low-1", "high-0", "high-1"}
    assert max(weights, key=weights.get) == "high-1" and weights["high-1"] > 0.4      # from 0.25 each


def test_mat_reports_selection_on_true_and_on_inferred_validation_groups(grouped_digits):
    trainer = Retrainer(grouped_digits, config=RetrainConfig(epochs=2, val_fraction=0.25, holdout="xrm",
                                                            floors=(0.01, 0.1)), device="cpu")
    result = trainer.train("mat")
    assert set(result.selections) == {"worst-group", "worst-group-inferred", "accuracy"}
    assert result.selections["worst-group"]["val"]["groups"] == "true"
    inferred = result.selections["worst-group-inferred"]
    assert inferred["val"]["groups"] == "inferred"
    assert set(inferred["selected"]) == {"lr", "weight_decay", "tau", "floor", "epoch"}
    assert inferred["selected"]["tau"] == 1.0 and inferred["selected"]["floor"] in (0.01, 0.1)
    assert set(inferred["per_group"]) == {"low-0", "low-1", "high-0", "high-1"}     # evaluated on true groups
    assert result.selected == result.selections["worst-group"]["selected"]


@pytest.mark.parametrize("method, options", [("jtt", {}), ("mat", {"holdout": "xrm"}), ("groupdro", {})])
def test_methods_without_a_run_train_and_report_on_true_groups(method, options, grouped_digits):
    trainer = Retrainer(grouped_digits, config=RetrainConfig(epochs=2, val_fraction=0.25, **options), device="cpu")
    result = trainer.train(method)
    assert result.eval["n"] == 100 and 0 <= result.eval["worst_group_accuracy"] <= result.eval["accuracy"]
    assert set(result.eval["per_group"]) == {"low-0", "low-1", "high-0", "high-1"}
    assert result.val["groups"] == "true"


@pytest.fixture(scope="module")
def mat_out(noisy_digits, noisy_digits_run, grouped_digits, tmp_path_factory):
    root, _ = noisy_digits
    out = tmp_path_factory.mktemp("retrain") / "mat"
    result = CliRunner().invoke(main, ["retrain", str(root), "--run", str(noisy_digits_run.path), "--method", "mat",
                                       "--eval", str(grouped_digits), "--epochs", "2", "--tau", "0.5,1",
                                       "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_retrain_prints_a_table_of_the_method_and_erm(mat_out):
    out, output = mat_out
    lines = output.strip().splitlines()
    assert lines[-1] == str(out)
    header = next(i for i, line in enumerate(lines) if line.startswith("method"))
    assert [line.split()[0] for line in lines[header + 1: header + 4]] == ["mat", "erm", "gain"]


def test_metrics_json_reports_both_methods_on_the_eval_set(mat_out):
    out, _ = mat_out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "mat" and set(metrics["results"]) == {"mat", "erm"}
    assert metrics["eval"] == {"source": metrics["eval"]["source"], "n": 400, "groups": "true"}
    for name, r in metrics["results"].items():
        assert set(r["per_class"]) == {str(i) for i in range(10)}
        assert set(r["per_group"]) == {"low-0", "low-1", "high-0", "high-1"}
        assert r["worst_group_accuracy"] == min(g["accuracy"] for g in r["per_group"].values())
        assert r["worst_group"] in r["per_group"] and sum(g["n"] for g in r["per_group"].values()) == 400
        assert r["val"]["groups"] == "inferred"           # 10% of DATASET, class x held-out-correct
    mat = metrics["results"]["mat"]
    assert mat["selected"]["tau"] in (0.5, 1.0) and mat["selected"]["floor"] == 0.01
    assert mat["training"]["holdout"] == "proxies"
    table = np.array(mat["training"]["p_y_given_holdout"])
    np.testing.assert_allclose(table.sum(1), 1.0, atol=1e-3)
    assert metrics["gain"]["worst_group_accuracy"] == pytest.approx(
        mat["worst_group_accuracy"] - metrics["results"]["erm"]["worst_group_accuracy"], abs=1e-4)


def test_model_pt_is_a_state_dict_that_reproduces_the_reported_accuracy(mat_out, grouped_digits):
    out, _ = mat_out
    state = torch.load(out / "model.pt", weights_only=True)
    info = json.loads((out / "model.json").read_text())
    model = build_final_model(FinalModelSpec.from_dict(info["spec"]))
    model.load_state_dict(state)
    loaded, normalizer, classes = load_model(out)
    data = load_dataset(grouped_digits)
    labels = np.array([classes.index(data.classes[y]) for y in data.labels])
    logits = predict_logits(loaded, InputBank(data.inputs, normalizer, torch.device("cpu")), np.arange(len(data)))
    report = accuracy_report(logits.argmax(1), labels, classes, data.metadata["group"].to_numpy())
    metrics = json.loads((out / "metrics.json").read_text())["results"]["mat"]
    assert report["accuracy"] == pytest.approx(metrics["accuracy"])
    assert report["worst_group_accuracy"] == pytest.approx(metrics["worst_group_accuracy"])


def _retrain(tmp_path, *args):
    out = tmp_path / "out"
    return CliRunner().invoke(main, ["retrain", *map(str, args), "--out", str(out), "--quiet"]), out


def test_unknown_method_names_the_option(tmp_path, noisy_digits):
    result, out = _retrain(tmp_path, noisy_digits[0], "--method", "foo")
    assert_clean_failure(result, out, "--method", "foo")


@pytest.mark.parametrize("method", ["mat", "clean", "reweight"])
def test_a_method_that_needs_a_run_says_so(tmp_path, noisy_digits, method):
    result, out = _retrain(tmp_path, noisy_digits[0], "--method", method)
    assert_clean_failure(result, out, f"--method {method}", "--run")


def test_groupdro_without_true_groups_names_the_column(tmp_path, noisy_digits):
    result, out = _retrain(tmp_path, noisy_digits[0], "--method", "groupdro", "--epochs", "1")
    assert_clean_failure(result, out, "groupdro", "'group'")


def test_bad_tau_names_the_option(tmp_path, noisy_digits, noisy_digits_run):
    result, out = _retrain(tmp_path, noisy_digits[0], "--run", noisy_digits_run.path, "--tau", "0")
    assert_clean_failure(result, out, "--tau")


def test_an_eval_set_of_another_shape_is_refused(tmp_path, noisy_digits, noisy_digits_run):
    other = tmp_path / "big"
    for c in ("0", "1"):
        (other / c).mkdir(parents=True)
        Image.new("L", (16, 16), 200).save(other / c / "a.png")
    result, out = _retrain(tmp_path, noisy_digits[0], "--method", "erm", "--eval", other)
    assert_clean_failure(result, out, "--eval", "(1, 16, 16)")


def test_proxies_reloaded_for_validation_reproduce_the_runs_held_out_logits(trainer, noisy_digits_run):
    """Inferred groups of an outside validation set come from the run's fold models, fed this retrain's
    normalisation; on their own held-out fold they must give back the run's oof_logits."""
    artifacts = noisy_digits_run.path / "artifacts"
    folds, oof = np.load(artifacts / "folds.npy"), np.load(artifacts / "oof_logits.npy")
    for k, model in enumerate(trainer.holdout_models()):
        rows = np.flatnonzero(folds[trainer.run_rows()] == k)
        logits = predict_logits(model, trainer.bank, rows)
        np.testing.assert_allclose(logits, oof[trainer.run_rows()[rows]], atol=1e-3)


def test_applied_reviews_with_another_method_is_refused(tmp_path, noisy_digits, noisy_digits_run):
    csv = tmp_path / "corrected_manifest.csv"
    csv.write_text("id,path,label\n")
    result, out = _retrain(tmp_path, noisy_digits[0], "--run", noisy_digits_run.path, "--method", "mat",
                           "--applied-reviews", csv)
    assert_clean_failure(result, out, "--applied-reviews", "--method clean")


def test_applied_reviews_with_an_unknown_label_names_file_and_label(tmp_path, noisy_digits):
    csv = tmp_path / "corrected_manifest.csv"
    first = next(iter(noisy_digits[1]))                       # an id of the dataset
    pd.DataFrame({"id": [first], "path": [first], "label": ["zebra"]}).to_csv(csv, index=False)
    result, out = _retrain(tmp_path, noisy_digits[0], "--method", "clean", "--applied-reviews", csv)
    assert_clean_failure(result, out, "--applied-reviews", "corrected_manifest.csv", "'zebra'")


def test_a_non_empty_out_folder_is_refused_and_untouched(tmp_path, noisy_digits):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["retrain", str(noisy_digits[0]), "--method", "erm", "--out", str(out)])
    assert result.exit_code != 0 and "--out" in result.output.strip().splitlines()[-1]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_mat_shifts_by_held_out_logits_given_from_elsewhere(grouped_digits):
    data = load_dataset(grouped_digits)
    labels, c = data.labels, len(data.classes)
    wrong_half = np.arange(len(labels)) % 2 == 1
    given = 10.0 * np.eye(c, dtype=np.float32)[np.where(wrong_half, (labels + 1) % c, labels)]
    trainer = Retrainer(grouped_digits, config=RetrainConfig(epochs=1, val_fraction=0.25), device="cpu",
                        holdout_logits=given)
    result = trainer.train("mat")
    assert result.info["holdout"] == "given" and result.info["holdout_accuracy"] == 0.5
    assert "worst-group-inferred" in result.selections          # validation groups inferred from the given logits
    with pytest.raises(ConfigError, match=rf"holdout_logits: shape \(400, {c - 1}\)"):
        Retrainer(grouped_digits, config=RetrainConfig(epochs=1), device="cpu", holdout_logits=given[:, 1:])
