"""The command line: bad input gets a one-line error naming the problem, a non-zero exit and no run
directory left behind; commands that never train start without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from curator.cli import main
from conftest import assert_clean_failure  # noqa: E402


def _score(tmp_path, dataset, *extra):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(dataset), "--out", str(out), "--quiet", *extra])
    return result, out


def test_missing_dataset_path(tmp_path):
    result, out = _score(tmp_path, tmp_path / "nope")
    assert_clean_failure(result, out, "nope", "does not exist")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result, out = _score(tmp_path, tmp_path / "empty")
    assert_clean_failure(result, out, "empty")


def test_folder_with_one_class(tmp_path):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (8, 8), i * 40).save(tmp_path / "data" / "cat" / f"{i}.png")
    result, out = _score(tmp_path, tmp_path / "data")
    assert_clean_failure(result, out, "only one class", "'cat'")


@pytest.mark.parametrize("option, needles", [
    (["--scorers", "nonsense"], ["--scorers", "nonsense"]),
    (["--folds", "1"], ["--folds"]),
    (["--threads", "0"], ["--threads 0", "at least 1"]),
])
def test_a_bad_option_value_is_named(tmp_path, noisy_digits, option, needles):
    result, out = _score(tmp_path, noisy_digits[0], *option)
    assert_clean_failure(result, out, *needles)


def test_a_bad_choice_is_one_line_naming_the_option_and_the_help(tmp_path, noisy_digits):
    root, _ = noisy_digits
    result, out = _score(tmp_path, root, "--backend", "spark")
    message = assert_clean_failure(result, out, "'--backend'", "'spark'")
    assert result.exit_code == 2 and message.endswith("See 'main score --help'.")


def test_existing_out_directory_is_refused_and_untouched(tmp_path, noisy_digits):
    root, _ = noisy_digits
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["score", str(root), "--out", str(out), "--quiet"])
    assert result.exit_code != 0 and "already exists" in result.output
    assert (out / "keep.txt").read_text() == "mine"


def test_help_says_what_is_produced_where():
    result = CliRunner().invoke(main, ["score", "--help"])
    assert result.exit_code == 0
    for needle in ("scores.parquet", "manifest.json", "review_queue.csv", "--out"):
        assert needle in result.output


def test_an_unknown_flags_setting_in_the_config_is_named(tmp_path, noisy_digits):
    root, _ = noisy_digits
    config = tmp_path / "curator.toml"
    config.write_text("[flags]\nmax_flag_rat = 0.1\n")
    result, out = _score(tmp_path, root, "--config", str(config))
    assert_clean_failure(result, out, "[flags]", "max_flag_rat")


def test_commands_that_never_train_start_without_importing_torch():
    code = ("import sys; from curator.cli import main; from curator.retrain import METHODS; "
            "print(sorted(m for m in ('torch', 'ray', 'faiss') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
