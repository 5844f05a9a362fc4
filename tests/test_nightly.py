"""Nightly increments: three nights of the example job (examples/nightly/nightly_job.py) on a growing
dataset of real digit images. New examples are marked, the team's reviews are carried from night to
night and keep reviewed examples out of the queue, relabels reach the next night, and `curator diff`
agrees with what the runs recorded."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import curator
from conftest import assert_clean_failure
from curator.cli import main
from datasets import digits_images, flip_labels

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "[score]\nepochs = 2\nscorers = 'learning_speed,early_learning,kernel_density'\ndevice = 'cpu'\n"
FIRST, LATER = 600, 60        # images on night 1, images added before night 2


def _load_job():
    spec = importlib.util.spec_from_file_location("nightly_job", ROOT / "examples" / "nightly" / "nightly_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


job = _load_job()


def _write_images(dataset: Path, start: int, stop: int, images, labels) -> pd.DataFrame:
    rows = []
    for i in range(start, stop):
        rel = f"img/{i:05d}.png"
        (dataset / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(dataset / rel)
        rows.append({"path": rel, "label": str(labels[i])})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Three nights: night 1 on 600 images; the team reviews 12 flagged ones (relabels, keeps, one
    removal); 60 images arrive; night 2 with those reviews and --update-manifest; night 3 with no news.
    Returns a namespace of paths, runs, reviews and the job's log lines."""
    work = tmp_path_factory.mktemp("nightly")
    dataset, runs = work / "dataset", work / "runs"
    images, truth = digits_images()
    noisy, _ = flip_labels(truth, 0.10, 10, seed=0)
    _write_images(dataset, 0, FIRST, images, noisy).to_csv(dataset / "manifest.csv", index=False)
    (work / "curator.toml").write_text(CONFIG)
    argv = [str(dataset), "--runs", str(runs), "--config", str(work / "curator.toml")]

    logs = []
    def run_night(extra=()):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("builtins.print", lambda line, **kw: logs.append(line))
            assert job.main([*argv, *extra]) == 0, logs
        return job.last_finished_run(runs)

    night1 = run_night()
    sheet = pd.read_csv(night1.path / "review.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    true_label = {f"img/{i:05d}.png": str(truth[i]) for i in range(len(truth))}
    reviewed = sheet.head(12).copy()
    reviewed["decision"] = ["relabel" if true_label[i] != g else "keep" for i, g in zip(reviewed["id"], reviewed["given_label"])]
    reviewed["label"] = reviewed["id"].map(true_label)
    reviewed.iloc[-1, reviewed.columns.get_loc("decision")] = "remove"
    reviewed.to_csv(work / "answers.csv", index=False)

    manifest = pd.read_csv(dataset / "manifest.csv", dtype=str)
    added = _write_images(dataset, FIRST, FIRST + LATER, images, noisy)
    pd.concat([manifest, added]).to_csv(dataset / "manifest.csv", index=False)
    night2 = run_night(["--reviews", str(work / "answers.csv"), "--update-manifest"])
    night3 = run_night()
    return type("Nights", (), dict(dataset=dataset, runs=runs, night1=night1, night2=night2, night3=night3,
                                   answers=reviewed.set_index("id"), added=set(added["path"]), logs=logs))


def test_is_new_marks_exactly_the_images_added_since_the_night_before(nights):
    scores = nights.night2.scores
    assert set(scores.loc[scores["is_new"], "id"]) == nights.added
    assert not nights.night3.scores["is_new"].any()


def test_reviewed_examples_are_marked_and_kept_out_of_the_queue_and_the_export(nights):
    answers = nights.answers[nights.answers["decision"] != "remove"]
    scores = nights.night2.scores.set_index("id")
    assert scores.loc[answers.index, "reviewed"].all()
    assert (scores.loc[answers.index, "review_decision"] == answers["decision"]).all()
    assert int(scores["reviewed"].sum()) == len(answers)
    queue = nights.night2.review_queue
    assert not set(queue["id"]) & set(answers.index)
    sheet = pd.read_csv(nights.night2.path / "review.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert not set(sheet["id"]) & set(answers.index) and len(sheet) == queue["id"].nunique()


def test_a_relabel_is_scored_under_its_new_label_the_next_night(nights):
    relabelled = nights.answers[nights.answers["decision"] == "relabel"]
    assert len(relabelled) > 0
    scores = nights.night2.scores.set_index("id")
    assert (scores.loc[relabelled.index, "label"] == relabelled["label"]).all()


def test_reviews_are_carried_over_several_nights(nights):
    answers = nights.answers[nights.answers["decision"] != "remove"]
    scores = nights.night3.scores.set_index("id")
    assert (scores.loc[answers.index, "review_decision"] == answers["decision"]).all()
    carried = pd.read_csv(nights.night3.path / "reviews.csv", dtype=str, keep_default_na=False)
    assert set(carried["id"]) == set(nights.answers.index)
    assert not set(nights.night3.review_queue["id"]) & set(answers.index)


def test_the_manifest_counts_and_curator_diff_agree(nights):
    counts = nights.night2.manifest["previous"]
    assert counts["run_id"] == nights.night1.manifest["run_id"]
    assert counts["path"] == str(nights.night1.path.resolve())
    assert (counts["new"], counts["removed"]) == (LATER, 1)
    assert counts["reviewed"] == int((nights.answers["decision"] != "remove").sum())
    result = CliRunner().invoke(main, ["diff", str(nights.night1.path), str(nights.night2.path), "--json"])
    assert result.exit_code == 0, result.output
    diff = json.loads(result.stdout)
    assert diff["counts"]["new_examples"] == counts["new"] and diff["counts"]["removed_examples"] == counts["removed"]
    assert diff["counts"]["newly_flagged"] == counts["newly_flagged"]
    assert diff["counts"]["no_longer_flagged"] == counts["no_longer_flagged"]
    removed = nights.answers.index[nights.answers["decision"] == "remove"]
    assert diff["removed_examples"] == list(removed) and set(diff["new_examples"]) == nights.added
    table = CliRunner().invoke(main, ["diff", str(nights.night1.path), str(nights.night2.path)])
    assert table.exit_code == 0 and "new examples" in table.stdout and f"{LATER}" in table.stdout


def test_the_job_logs_one_line_per_stage(nights):
    stages = [line.split()[1] for line in nights.logs if line.startswith("curator-nightly")]
    assert stages[:6] == ["stage=last", "stage=reviews", "stage=score", "stage=handoff", "stage=night", "stage=last"]
    assert "stage=dataset" in stages and all("status=" in line for line in nights.logs)


def test_the_job_exits_2_with_one_line_on_bad_input(tmp_path, capsys):
    assert job.main([str(tmp_path / "missing"), "--runs", str(tmp_path / "runs")]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("curator-nightly stage=night status=failed error=") and "does not exist" in lines[-1]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_review_again_above_brings_strong_new_evidence_back_into_the_queue(nights, tmp_path):
    # The same images with the labels of night 1, as if the relabels had not reached the dataset.
    dataset = tmp_path / "dataset"
    shutil.copytree(nights.dataset, dataset)
    relabelled = nights.answers.index[nights.answers["decision"] == "relabel"]
    manifest = pd.read_csv(dataset / "manifest.csv", dtype=str).set_index("path")
    given = nights.night1.scores.set_index("id")["label"]
    manifest.loc[relabelled, "label"] = given[relabelled]
    manifest.reset_index().to_csv(dataset / "manifest.csv", index=False)
    config = nights.dataset.parent / "curator.toml"
    quiet = curator.score(dataset, out=tmp_path / "quiet", previous=nights.night2.path, progress=False, config=config)
    again = curator.score(dataset, out=tmp_path / "again", previous=nights.night2.path, progress=False, config=config,
                          review_again_above=0.0)
    assert not set(quiet.review_queue["id"]) & set(relabelled)
    flagged = again.scores.set_index("id").loc[relabelled, ["is_mislabeled", "is_outlier", "is_spurious"]].any(axis=1)
    back = again.review_queue[again.review_queue["id"].isin(relabelled)]
    assert set(back["id"]) == set(flagged.index[flagged]) and len(back) > 0
    assert back["reasons"].str.contains(r"reviewed before \(relabel\), asked again").all()


def test_previous_refuses_an_npz_numbered_by_row(tmp_path):
    images, labels = digits_images()
    np.savez(tmp_path / "d.npz", X=images[:200], y=labels[:200])
    first = curator.score(tmp_path / "d.npz", out=tmp_path / "one", epochs=1, scorers="learning_speed", progress=False)
    out = tmp_path / "two"
    result = CliRunner().invoke(main, ["score", str(tmp_path / "d.npz"), "--previous", str(first.path), "--out",
                                       str(out), "--epochs", "1", "--quiet"])
    assert_clean_failure(result, out, "--previous", "no ids", "add an 'ids' array")


def test_previous_must_be_a_finished_run(tmp_path, nights):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(nights.dataset), "--previous", str(tmp_path), "--out", str(out)])
    assert_clean_failure(result, out, "--previous", "not a complete curator run")
