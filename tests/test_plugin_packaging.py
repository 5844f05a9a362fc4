"""Third-party plugins end to end, through the real entry-point path: the example package in
examples/curator-plugin-example (a scorer, a dataset format and an exporter) is pip-installed
(offline, a real wheel build) into a temporary folder put on PYTHONPATH of subprocesses; `curator
plugins` lists all three, `curator score` runs the scorer on data read by the plugin's format,
`curator export --to markdown` writes with the plugin's exporter, and the package's own tests pass.
Also: every hook spec is documented in docs/plugins.md."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

import curator
import curator.hookspecs
from curator.testing import noisy_digits

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "curator-plugin-example"
CLI = Path(sys.executable).with_name("curator")


def _run(cmd: list, env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(source copy, env whose PYTHONPATH holds the installed package). Nothing is installed into the
    project's environment, so nothing needs uninstalling; the copy keeps build files out of the repo."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "curator-plugin-example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    env = {k: v for k, v in os.environ.items() if k not in ("CURATOR_PLUGINS", "CURATOR_DISABLE_PLUGINS")}
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          "--target", work / "site", source], env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work / "site"), env.get("PYTHONPATH")]))
    return source, env


def _listing(env: dict) -> dict:
    listing = json.loads(_run([CLI, "plugins", "--json"], env).stdout)
    assert listing["errors"] == []
    return listing


def _listed(env: dict) -> dict:
    return {s["name"]: s for s in _listing(env)["scorers"]}


def test_curator_plugins_lists_the_installed_scorer_with_its_package_and_version(installed):
    _, env = installed
    el2n = _listed(env)["el2n"]
    assert el2n == {"name": "el2n", "issue": ["mislabeled"], "requires": ["dynamics"], "direction": "higher",
                    "description": "EL2N (Paul et al. 2021): ||softmax - one-hot label||, mean over the early epochs",
                    "options": {"early_fraction": 0.5}, "plugin": "el2n", "package": "curator-plugin-example",
                    "version": "0.1.0"}


def test_the_allow_and_deny_lists_select_installed_plugins_by_entry_point_name(installed, monkeypatch):
    _, env = installed
    monkeypatch.syspath_prepend(env["PYTHONPATH"].split(os.pathsep)[0])  # entry points are read from sys.path
    monkeypatch.setenv("CURATOR_PLUGINS", "el2n")
    assert curator.load_plugins().names() == ["el2n"]
    monkeypatch.delenv("CURATOR_PLUGINS")
    monkeypatch.setenv("CURATOR_DISABLE_PLUGINS", "el2n,self_influence")
    names = curator.load_plugins().names()
    assert "el2n" not in names and "self_influence" not in names and "learning_speed" in names


def test_curator_score_runs_the_installed_scorer_with_its_options_from_the_config(installed, tmp_path):
    _, env = installed
    examples, mislabeled, _ = noisy_digits(outlier_fraction=0.0)
    np.savez(tmp_path / "digits.npz", X=examples.inputs, y=examples.labels, ids=np.array(examples.ids))
    (tmp_path / "curator.toml").write_text("[scorers.el2n]\nearly_fraction = 1.0\n")
    out = tmp_path / "run"
    done = _run([CLI, "score", tmp_path / "digits.npz", "--out", out, "--scorers", "el2n", "--epochs", "2",
                 "--device", "cpu", "--config", tmp_path / "curator.toml", "--quiet"], env)
    assert done.stdout.strip().splitlines()[-1] == str(out)
    scores = pd.read_parquet(out / "scores.parquet")
    assert scores["score_el2n"].dtype == np.float32 and np.isfinite(scores["score_el2n"]).all()
    truth = scores["id"].map(dict(zip(examples.ids, mislabeled))).to_numpy(bool)
    assert roc_auc_score(truth, scores["score_el2n"]) > 0.95  # both epochs averaged; the first alone gives ~0.90
    manifest = json.loads((out / "manifest.json").read_text())
    el2n = manifest["scorers"]["el2n"]
    assert (el2n["status"], el2n["package"], el2n["version"]) == ("done", "curator-plugin-example", "0.1.0")
    assert manifest["config"]["scorer_options"] == {"el2n": {"early_fraction": 1.0}}


def test_curator_plugins_lists_the_installed_format_and_exporter(installed):
    _, env = installed
    listing = _listing(env)
    jsonl = next(a for a in listing["adapters"] if a["name"] == "jsonl")
    markdown = next(e for e in listing["exporters"] if e["name"] == "markdown")
    assert (jsonl["package"], jsonl["plugin"], jsonl["priority"]) == ("curator-plugin-example", "jsonl", 50)
    assert (markdown["package"], markdown["default_file"], markdown["options"]) == (
        "curator-plugin-example", "review.md", {"title": "curator review"})


@pytest.fixture(scope="module")
def jsonl_run(installed, tmp_path_factory) -> tuple[Path, Path]:
    """Real digit images listed in a JSON Lines file, 10% of labels flipped, scored through the
    installed `jsonl` format with `--format jsonl`. Returns (the .jsonl file, the run)."""
    _, env = installed
    root = tmp_path_factory.mktemp("jsonl")
    examples, mislabeled, _ = noisy_digits(outlier_fraction=0.0)
    lines = []
    for i, (chw, label) in enumerate(zip(examples.inputs[:300], examples.labels[:300])):
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(np.asarray(chw[0])).save(root / "images" / f"{i:04d}.png")
        lines.append(json.dumps({"path": f"images/{i:04d}.png", "label": examples.classes[label],
                                 "id": f"digit-{i}"}))
    (root / "digits.jsonl").write_text("\n".join(lines) + "\n")
    out = root / "run"
    _run([CLI, "score", root / "digits.jsonl", "--format", "jsonl", "--out", out, "--epochs", "1",
          "--scorers", "el2n", "--device", "cpu", "--quiet"], env)
    return root / "digits.jsonl", out


def test_curator_score_reads_a_dataset_through_the_installed_format(jsonl_run):
    source, out = jsonl_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["format"] == "jsonl" and manifest["dataset"]["n_examples"] == 300
    assert manifest["dataset"]["path"] == str(source.resolve())
    scores = pd.read_parquet(out / "scores.parquet")
    assert list(scores["id"][:3]) == ["digit-0", "digit-1", "digit-2"] and scores["path"][0] == "images/0000.png"


def test_format_auto_finds_the_installed_format_by_its_detect(installed, jsonl_run, tmp_path):
    _, env = installed
    source, _ = jsonl_run
    _run([CLI, "score", source, "--out", tmp_path / "run", "--epochs", "1", "--scorers", "el2n", "--quiet"], env)
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["dataset"]["format"] == "jsonl"


def test_curator_export_writes_with_the_installed_exporter_and_its_option(installed, jsonl_run):
    _, env = installed
    source, out = jsonl_run
    done = _run([CLI, "export", out, "--to", "markdown", "--option", "title=Night 1"], env)
    assert done.stdout.split() == [str(out / "review.md")]
    text = (out / "review.md").read_text().splitlines()
    flagged = pd.read_parquet(out / "scores.parquet")
    n_flagged = int(flagged[["is_mislabeled", "is_outlier", "is_spurious"]].any(axis=1).sum())
    assert text[0] == "# Night 1" and sum(line.startswith("- [ ] `digit-") for line in text) == n_flagged > 0
    assert (source.parent / "images").as_uri() in text[4]
    bad = subprocess.run([str(CLI), "export", str(out), "--to", "markdown", "--option", "titel=x"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no option 'titel'; did you mean 'title'?" in bad.stderr


def test_the_example_packages_own_tests_pass_against_the_installed_package(installed):
    source, env = installed
    # Run from outside the source copy, so `import curator_el2n` finds the installed module.
    done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", source / "tests"], env, cwd=source.parent)
    assert re.search(r"^5 passed", done.stdout, re.MULTILINE), done.stdout


def _hookspecs() -> dict:
    return {name: fn for name, fn in vars(curator.hookspecs).items()
            if callable(fn) and hasattr(fn, "curator_spec")}


def test_every_hookspec_is_documented_in_docs_plugins_md():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    specs = _hookspecs()
    assert "register_scorers" in specs
    for name, fn in specs.items():
        docstring = inspect.getdoc(fn)
        assert docstring, f"hook spec {name} has no docstring"
        assert f"`{name}(" in doc, f"hook {name} is not documented in docs/plugins.md"
        assert docstring.splitlines()[0] in doc, f"docs/plugins.md lacks the first line of {name}'s docstring"
