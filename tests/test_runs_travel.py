"""A run is read from any folder: the dataset is recorded by absolute path, a moved dataset is one
clear error (or found again through --dataset-root), and --resume on a finished run has nothing to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner

import curator
from curator.cli import main
from datasets import digits_images, flip_labels, write_image_folder

QUICK = ["--epochs", "2", "--scorers", "learning_speed,early_learning", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run scored from the folder that holds the dataset, with the dataset given as a relative path.
    Returns (that folder, the run directory)."""
    home = tmp_path_factory.mktemp("home")
    images, labels = digits_images()
    noisy, _ = flip_labels(labels[:300], 0.15, 10, seed=0)
    write_image_folder(home / "digits", images[:300], noisy, [str(i) for i in range(10)])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        result = CliRunner().invoke(main, ["score", "digits", "--out", "run", *QUICK])
    assert result.exit_code == 0, result.output
    return home, home / "run"


def test_the_manifest_records_the_dataset_by_absolute_path(relative_run):
    home, run = relative_run
    dataset = json.loads((run / "manifest.json").read_text())["dataset"]
    assert dataset["path"] == dataset["root"] == str((home / "digits").resolve())


def test_label_studio_links_keep_the_dataset_folder_name_from_any_folder(relative_run, tmp_path, monkeypatch):
    home, run = relative_run
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["export", str(run), "--to", "labelstudio", "--out", "ls.json"])
    assert result.exit_code == 0, result.output
    tasks = json.loads((tmp_path / "ls.json").read_text())
    assert tasks
    for task in tasks:
        (d,) = parse_qs(urlparse(task["data"]["image"]).query)["d"]
        assert d.startswith("digits/") and (home / d).is_file(), d


def test_a_report_written_from_another_folder_has_every_thumbnail(relative_run, tmp_path, monkeypatch):
    _, run = relative_run
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report", str(run), "--out", "report.html", "--per-issue", "1000"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    flagged = curator.Run(run).review_queue["id"].nunique()
    assert html.count('<img src="data:image/png') >= flagged > 0
    assert "no image" not in html


@pytest.fixture
def moved_run(relative_run, tmp_path) -> tuple[Path, Path]:
    """A copy of the run whose dataset was moved after scoring: (the run, the dataset's new folder)."""
    home, run = relative_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    gone = tmp_path / "gone" / "digits"
    manifest["dataset"]["path"] = manifest["dataset"]["root"] = str(gone)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    moved = tmp_path / "new-place" / "digits"
    shutil.copytree(home / "digits", moved)
    return copy, moved


@pytest.mark.parametrize("command", [["report"], ["export", "--to", "labelstudio"], ["export", "--to", "cvat"]])
def test_a_moved_dataset_is_one_line_naming_the_folder_and_writes_nothing(moved_run, command):
    run, _ = moved_run
    before = sorted(p.name for p in run.iterdir())
    result = CliRunner().invoke(main, [command[0], str(run), *command[1:]])
    message = result.output.strip()
    assert result.exit_code == 2 and message.startswith("Error:") and "\n" not in message, message
    assert str(run.parent / "gone" / "digits") in message and "--dataset-root" in message
    assert sorted(p.name for p in run.iterdir()) == before


def test_dataset_root_finds_a_moved_dataset_again(moved_run, tmp_path):
    run, moved = moved_run
    result = CliRunner().invoke(main, ["report", str(run), "--dataset-root", str(moved), "--per-issue", "1000"])
    assert result.exit_code == 0, result.output
    assert "no image" not in (run / "report.html").read_text()
    result = CliRunner().invoke(main, ["export", str(run), "--to", "cvat", "--dataset-root", str(moved)])
    assert result.exit_code == 0, result.output


def test_a_missing_image_file_is_an_error_not_a_dead_link(moved_run):
    run, moved = moved_run
    first = curator.Run(run).review_queue["path"].iloc[0]
    (moved / first).unlink()
    result = CliRunner().invoke(main, ["export", str(run), "--to", "labelstudio", "--dataset-root", str(moved)])
    assert result.exit_code == 2 and str(moved / first) in result.output and "missing" in result.output


def test_resume_on_a_finished_run_exits_0_and_says_it_is_complete(relative_run, monkeypatch):
    home, run = relative_run
    before = (run / "scores.parquet").stat().st_mtime_ns
    monkeypatch.chdir(home)
    result = CliRunner().invoke(main, ["score", "digits", "--out", "run", "--resume", *QUICK[:-1]])
    assert result.exit_code == 0, result.output
    assert "already complete" in result.stderr and result.stdout.strip().splitlines()[-1] == "run"
    assert (run / "scores.parquet").stat().st_mtime_ns == before


def test_resume_on_a_finished_run_with_other_settings_is_refused(relative_run, monkeypatch):
    home, run = relative_run
    monkeypatch.chdir(home)
    result = CliRunner().invoke(main, ["score", "digits", "--out", "run", "--resume", "--seed", "7", *QUICK])
    assert result.exit_code == 2 and "other settings (train.seed: 0, now 7)" in result.output and "--out" in result.output
