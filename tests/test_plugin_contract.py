"""The plugin contract through pluggy: hooks are called through the plugin manager, a plugin with an
unknown or malformed hook is reported by name and skipped, every extension point (scorers, exporters,
dataset formats) is a hook, and every setting is checked before anything is trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import curator
import curator.plugins
from conftest import assert_clean_failure
from curator.cli import main
from curator.engine import folds
from datasets import digits_images, write_image_folder


class MisspeltHook:
    """A plugin whose author wrote ``register_scorer`` for ``register_scorers``."""

    __name__ = "misspelt"

    @curator.hookimpl
    def register_scorer(self, register):
        register(curator.Scorer("never_seen", "mislabeled", "oof", score=lambda ctx: np.zeros(ctx.n_examples)))


class WrongArguments:
    """A plugin whose hook takes an argument the hook does not pass."""

    __name__ = "wrong_arguments"

    @curator.hookimpl
    def register_scorers(self, registry):
        raise AssertionError("never called")


@pytest.fixture
def tiny_digits(tmp_path):
    images, labels = digits_images()
    keep = np.flatnonzero(labels < 3)[:90]
    write_image_folder(tmp_path / "digits", images[keep], labels[keep], ["0", "1", "2"])
    return tmp_path / "digits"


@pytest.fixture
def no_training(monkeypatch):
    """Settings errors must stop the run before a single fold trains."""
    def trained(*args, **kwargs):
        raise AssertionError("a fold was trained")
    monkeypatch.setattr(folds, "train_fold", trained)


def test_a_misspelt_hook_is_reported_by_plugin_and_hook_and_skipped():
    with pytest.warns(UserWarning, match=r"plugin 'misspelt' .* failed in register_scorer and is skipped: "
                                         r"unknown hook 'register_scorer' \(did you mean 'register_scorers'\?\)"):
        registry = curator.load_plugins([MisspeltHook()])
    (error,) = [e for e in registry.errors if e["plugin"] == "misspelt"]
    assert error["hook"] == "register_scorer" and error["package"] == MisspeltHook.__module__
    assert "never_seen" not in registry and "learning_speed" in registry


def test_a_hook_with_the_wrong_arguments_is_reported_by_name_and_skipped():
    with pytest.warns(UserWarning, match="'wrong_arguments'"):
        registry = curator.load_plugins([WrongArguments()])
    (error,) = [e for e in registry.errors if e["plugin"] == "wrong_arguments"]
    assert error["hook"] == "register_scorers" and "registry" in error["error"] and "\n" not in error["error"]


def test_strict_makes_a_skipped_plugin_an_error_naming_it():
    with pytest.raises(curator.PluginError, match=r"^plugin 'misspelt' .* unknown hook 'register_scorer'"):
        curator.load_plugins([MisspeltHook()], strict=True)


def test_curator_plugins_lists_the_misspelt_plugin_under_errors(monkeypatch):
    class Loaded:
        name, value = "misspelt", "misspelt_module"
        dist = type("Dist", (), {"metadata": {"Name": "misspelt-pkg"}, "version": "1.0"})()

        @staticmethod
        def load():
            return MisspeltHook()

    real = curator.plugins.entry_points(group="curator")
    monkeypatch.setattr(curator.plugins, "entry_points", lambda group: [*real, Loaded()])
    with pytest.warns(UserWarning):
        listing = CliRunner().invoke(main, ["plugins", "--json"])
    assert listing.exit_code == 0, listing.output
    described = json.loads(listing.stdout)
    assert described["errors"] == [{"plugin": "misspelt", "package": "misspelt-pkg", "hook": "register_scorer",
                                    "error": "unknown hook 'register_scorer' (did you mean 'register_scorers'?)"}]
    with pytest.warns(UserWarning):
        text = CliRunner().invoke(main, ["plugins"]).stdout
    assert "SKIPPED plugin 'misspelt' (misspelt-pkg) in register_scorer" in text
    strict = CliRunner().invoke(main, ["plugins", "--strict"])
    assert strict.exit_code == 2 and strict.output.startswith("Error: plugin 'misspelt' from misspelt-pkg")


def test_curator_plugins_json_lists_scorers_exporters_and_adapters():
    described = json.loads(CliRunner().invoke(main, ["plugins", "--json"]).stdout)
    assert set(described) == {"scorers", "exporters", "adapters", "errors"}
    assert {a["name"] for a in described["adapters"]} >= {"imagefolder", "manifest", "table", "arrays"}
    assert {e["name"] for e in described["exporters"]} >= {"labelstudio", "cvat", "csv"}
    assert all(entry["package"] == "curator" for kind in ("adapters", "exporters") for entry in described[kind])


def test_a_run_records_skipped_plugins_in_its_manifest(tiny_digits, tmp_path):
    with pytest.warns(UserWarning):
        run = curator.score(tiny_digits, out=tmp_path / "run", epochs=1, scorers="learning_speed",
                            plugins=[MisspeltHook()], progress=False)
    assert [(e["plugin"], e["hook"]) for e in run.manifest["plugin_errors"]] == [("misspelt", "register_scorer")]


@pytest.mark.parametrize("toml, needles", [
    ("[train]\nepoch = 3\n", ["'epoch'", "[train]", "did you mean 'epochs'?"]),
    ("[score]\nscorer = 'learning_speed'\n", ["'scorer'", "[score]", "did you mean 'scorers'?"]),
    ("[flag]\nmax_flag_rate = 0.2\n", ["[flag]", "did you mean 'flags'?"]),
    ("[flags]\nmax_flag_rat = 0.2\n", ["'max_flag_rat'", "did you mean 'max_flag_rate'?"]),
    ("[train]\nepochs = 'six'\n", ["[train] epochs = 'six'", "expected int"]),
    ("[scorers.kernel_density]\nkk = 5\n", ["[scorers.kernel_density]", "'kk'", "did you mean 'k'?"]),
    ("[scorers.kernel_density]\nk = 0\n", ["[scorers.kernel_density] k = 0", "must be an integer >= 1"]),
    ("[scorers.early_learning]\nbeta = 1.5\n", ["[scorers.early_learning] beta = 1.5"]),
    ("[scorers.kernel_densty]\nk = 5\n", ["[scorers.kernel_densty]", "did you mean 'kernel_density'?"]),
])
def test_a_typo_in_curator_toml_stops_before_training_naming_the_key(tiny_digits, tmp_path, no_training, toml, needles):
    config = tmp_path / "curator.toml"
    config.write_text(toml)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(tiny_digits), "--out", str(out), "--config", str(config), "--quiet"])
    assert_clean_failure(result, out, *needles)


def test_an_unknown_format_is_refused_before_the_dataset_is_read(tiny_digits, tmp_path, no_training):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(tiny_digits), "--out", str(out), "--format", "imagefolders"])
    assert_clean_failure(result, out, "--format 'imagefolders'", "did you mean 'imagefolder'?")


def test_an_unknown_argument_of_the_python_api_names_the_nearest(tiny_digits, tmp_path, no_training):
    with pytest.raises(curator.ConfigError, match=r"unknown argument 'epoch'; did you mean 'epochs'\?"):
        curator.score(tiny_digits, out=tmp_path / "run", epoch=3, progress=False)


def test_settings_are_built_once_from_defaults_file_and_arguments(tmp_path):
    config = tmp_path / "curator.toml"
    config.write_text("[score]\nepochs = 4\nscorers = 'learning_speed,early_learning'\n[train]\nfolds = 3\n"
                      "[flags]\nmax_flag_rate = 0.2\n[scorers.early_learning]\nbeta = 0.8\n")
    settings = curator.Settings.build(config, epochs=2, image_size=32)
    assert (settings.train.epochs, settings.train.folds, settings.train.seed) == (2, 3, 0)
    assert settings.score.scorers == ("learning_speed", "early_learning")
    assert (settings.flags.max_flag_rate, settings.dataset.image_size) == (0.2, 32)
    assert settings.scorer_options == {"early_learning": {"beta": 0.8}}
