"""Nothing let in: paths stay inside the dataset, nothing is unpickled, and only the plugins asked for load.

Faulty plugins are left out and recorded; a broken one never stops the tool.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import curator
import curator.plugins
from curator.cli import main
from datasets import digits_images

REPO = Path(__file__).resolve().parents[1]
BUILTINS = {"adversarial_distance", "early_learning", "kernel_density", "learning_speed", "self_influence"}
DIGITS, LABELS = digits_images()


def digit_folder(root: Path, per_class: int = 12) -> Path:
    """Real digits 0 and 1 as ``root/<digit>/<i>.png``."""
    for digit in (0, 1):
        (root / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(LABELS == digit)[:per_class]:
            Image.fromarray(DIGITS[i]).save(root / str(digit) / f"{i}.png")
    return root


# --- paths that escape the dataset -------------------------------------------------------------------

@pytest.mark.parametrize("path", ["../outside.png", "/etc/passwd", "C:\\x.png", "C:x.png", "img/../../outside.png",
                                  "img\\..\\..\\outside.png", "\\\\server\\share\\x.png"])
def test_a_manifest_path_escaping_the_dataset_is_refused(tmp_path, path):
    Image.fromarray(DIGITS[0]).save(tmp_path / "outside.png")          # the target exists and is an image
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    Image.fromarray(DIGITS[1]).save(root / "img" / "a.png")
    pd.DataFrame({"path": ["img/a.png", path], "label": ["x", "y"]}).to_csv(root / "manifest.csv", index=False)
    with pytest.raises(curator.DatasetError) as err:
        curator.load_dataset(root)
    assert str(err.value) == (f"{root / 'manifest.csv'}: path {path!r} escapes the dataset folder; "
                              "use paths relative to it")


def test_an_escaping_path_from_the_command_line_exits_non_zero_with_no_run(tmp_path):
    root = digit_folder(tmp_path / "data")
    pd.DataFrame({"path": ["0/0.png", "/etc/passwd"], "label": ["0", "1"]}).to_csv(root / "manifest.csv", index=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(root), "--out", str(out), "--epochs", "1", "--quiet"])
    assert result.exit_code != 0
    assert result.output.strip() == (f"Error: {root / 'manifest.csv'}: path '/etc/passwd' escapes the dataset folder; "
                                     "use paths relative to it")
    assert not out.exists() and not out.with_name("run.partial").exists()


# --- nothing is unpickled ----------------------------------------------------------------------------

def _calls(tree: ast.AST, module: str, function: str):
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == function
                and isinstance(node.func.value, ast.Name) and node.func.value.id in module.split("|")):
            yield node


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<not a constant>"
    return None


# The one module that may pickle: the local backend's pipes to the worker processes it started itself.
# Nothing it pickles is ever written to disk or read from anywhere but those pipes.
PICKLES_OWN_PIPES = REPO / "curator" / "backends" / "workers.py"


def test_the_code_never_loads_pickles():
    """Every torch.load passes weights_only=True, no np.load allows pickles, nothing imports pickle
    (but the worker pipes of the local backend)."""
    sources = sorted((REPO / "curator").rglob("*.py")) + sorted((REPO / "plugins").rglob("*.py"))
    assert len(sources) > 20
    torch_loads = 0
    for source in sources:
        tree = ast.parse(source.read_text(), filename=str(source))
        where = source.relative_to(REPO)
        for call in _calls(tree, "torch", "load"):
            torch_loads += 1
            assert _keyword(call, "weights_only") is True, f"{where}:{call.lineno}: torch.load without weights_only"
        for call in _calls(tree, "np|numpy", "load"):
            assert _keyword(call, "allow_pickle") in (None, False), f"{where}:{call.lineno}: np.load allows pickles"
        for call in _calls(tree, "pd|pandas", "read_pickle"):
            pytest.fail(f"{where}:{call.lineno}: pd.read_pickle")
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert source == PICKLES_OWN_PIPES or not {n.split(".")[0] for n in names} & {
                "pickle", "dill", "cloudpickle", "joblib", "shelve"}, f"{where}:{node.lineno}: imports {names}"
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "numpy"):
                assert "load" not in [a.name for a in node.names], f"{where}:{node.lineno}: bare load import"
    assert torch_loads >= 2                                   # the checkpoint readers were found


class Payload:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@dataclass
class FakeDist:
    name: str
    version: str = "1.0"

    @property
    def metadata(self) -> dict:
        return {"Name": self.name}


@dataclass
class FakeEntryPoint:
    """What ``importlib.metadata.entry_points`` yields: a name, a distribution and ``load()``."""

    name: str
    package: str
    loader: Callable[[], object]
    loads: int = 0

    @property
    def dist(self) -> FakeDist:
        return FakeDist(self.package)

    def load(self):
        self.loads += 1
        return self.loader()


def _plugin(*scorers: curator.Scorer):
    class Plugin:
        @curator.hookimpl
        def register_scorers(self, register):
            for scorer in scorers:
                register(scorer)
    return Plugin()


def _column(name: str, values: Callable[[int], np.ndarray], issue: str = "outlier") -> curator.Scorer:
    return curator.Scorer(name=name, issue=issue, requires=(), score=lambda ctx: values(ctx.n_examples))


def _missing_dependency():
    raise ModuleNotFoundError("No module named 'missing_dep'")


BROKEN = dict(name="broken", package="broken-pkg", loader=_missing_dependency)


def _use_entry_points(monkeypatch, *eps: FakeEntryPoint) -> None:
    """Only ``eps`` are installed, beside curator's own dataset formats and exporters."""
    core = [ep for ep in curator.plugins.entry_points(group="curator") if ep.name in curator.plugins.CORE_PLUGINS]
    monkeypatch.setattr(curator.plugins, "entry_points", lambda group: [*core, *eps])


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory) -> curator.Run:
    """A one-epoch run where one plugin fails to import and four scorers misbehave."""
    root = digit_folder(tmp_path_factory.mktemp("digits"))
    good = FakeEntryPoint("good", "good-pkg", lambda: _plugin(
        _column("constant", lambda n: np.linspace(0, 1, n)),
        _column("wrong_shape", lambda n: np.zeros(n + 1)),
        _column("has_inf", lambda n: np.r_[np.zeros(n - 1), np.inf]),
        _column("raises", lambda n: np.zeros(n) / None)))
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _use_entry_points(mp, FakeEntryPoint(**BROKEN), good)
        return curator.score(root, out=tmp_path_factory.mktemp("runs") / "faulty", epochs=1, progress=False)


def test_every_checkpoint_of_a_run_loads_with_weights_only(faulty_run):
    records = json.loads((faulty_run.path / "artifacts" / "checkpoints.json").read_text())
    assert len(records) >= 2                                           # one per fold at least
    for record in records:
        state = torch.load(faulty_run.path / "artifacts" / record["file"], map_location="cpu", weights_only=True)
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())


def test_a_checkpoint_replaced_by_a_pickle_is_refused_and_never_run(faulty_run, tmp_path):
    artifacts = tmp_path / "artifacts"
    shutil.copytree(faulty_run.path / "artifacts", artifacts)
    record = json.loads((artifacts / "checkpoints.json").read_text())[-1]
    marker = tmp_path / "unpickled"
    torch.save(Payload(marker), artifacts / record["file"])
    ctx = curator.ScoreContext(artifacts=artifacts, labels=np.zeros(24, np.int64), classes=["0", "1"],
                               ids=[str(i) for i in range(24)], inputs_array=np.zeros((24, 1, 8, 8), np.uint8),
                               device=torch.device("cpu"))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        ctx.load_model(record["fold"], record["epoch"])
    assert not marker.exists()


def test_a_run_array_replaced_by_a_pickle_is_refused_and_never_run(faulty_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(faulty_run.path, run_dir)
    marker = tmp_path / "unpickled"
    np.save(run_dir / "oof_probs.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        curator.Run(run_dir).oof_probs
    assert not marker.exists()


def test_a_dataset_array_holding_python_objects_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "unpickled"
    np.savez(tmp_path / "data.npz", X=np.array([Payload(marker)] * 4, dtype=object), y=np.array([0, 1, 0, 1]))
    with pytest.raises(curator.DatasetError) as err:
        curator.load_dataset(tmp_path / "data.npz")
    assert str(err.value) == (f"{tmp_path / 'data.npz'}: array 'X' holds Python objects; curator never unpickles "
                              "files, save it as a numeric or string array")
    with open(tmp_path / "pickled.npz", "wb") as f:
        pickle.dump({"X": Payload(marker)}, f)
    with pytest.raises(curator.DatasetError, match="pickled.npz: holds pickled Python objects, not an .npz archive; "
                                                   "curator never unpickles files$"):
        curator.load_dataset(tmp_path / "pickled.npz")
    assert not marker.exists()


# --- which plugins load ------------------------------------------------------------------------------

def test_the_allow_list_loads_only_the_plugins_named(monkeypatch):
    monkeypatch.delenv("CURATOR_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("CURATOR_PLUGINS", "learning_speed, kernel_density")
    assert sorted(curator.load_plugins().names()) == ["kernel_density", "learning_speed"]


def test_the_deny_list_drops_the_plugins_named(monkeypatch):
    monkeypatch.delenv("CURATOR_PLUGINS", raising=False)
    monkeypatch.setenv("CURATOR_DISABLE_PLUGINS", "learning_speed,self_influence")
    names = set(curator.load_plugins().names())
    assert BUILTINS - {"learning_speed", "self_influence"} <= names
    assert not names & {"learning_speed", "self_influence"}


def test_a_plugin_left_out_by_the_lists_is_never_imported(monkeypatch):
    broken = FakeEntryPoint(**BROKEN)
    good = FakeEntryPoint("good", "good-pkg", lambda: _plugin(_column("good", np.zeros)))
    _use_entry_points(monkeypatch, broken, good)
    monkeypatch.setenv("CURATOR_PLUGINS", "good")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no import-failure warning either
        allowed = curator.load_plugins()
    monkeypatch.delenv("CURATOR_PLUGINS")
    monkeypatch.setenv("CURATOR_DISABLE_PLUGINS", "broken")
    denied = curator.load_plugins()
    assert allowed.names() == denied.names() == ["good"]
    assert allowed.errors == denied.errors == [] and broken.loads == 0


def test_a_plugin_that_fails_to_import_is_skipped_with_a_warning_and_recorded(monkeypatch):
    monkeypatch.delenv("CURATOR_PLUGINS", raising=False)
    monkeypatch.delenv("CURATOR_DISABLE_PLUGINS", raising=False)
    good = FakeEntryPoint("good", "good-pkg", lambda: _plugin(_column("good", np.zeros)))
    _use_entry_points(monkeypatch, FakeEntryPoint(**BROKEN), good)
    with pytest.warns(UserWarning, match=r"^plugin 'broken' from broken-pkg failed to import and is skipped: "
                                         r"ModuleNotFoundError: No module named 'missing_dep'$"):
        registry = curator.load_plugins()
    assert registry.names() == ["good"]
    assert registry.errors == [{"plugin": "broken", "package": "broken-pkg", "hook": None,
                                "error": "ModuleNotFoundError: No module named 'missing_dep'"}]
    with pytest.warns(UserWarning, match="'broken'"):
        listing = CliRunner().invoke(main, ["plugins", "--json"])
    assert listing.exit_code == 0 and json.loads(listing.stdout)["errors"] == registry.errors


def test_two_plugins_claiming_one_scorer_name_is_an_error_naming_both_packages(monkeypatch, tmp_path):
    _use_entry_points(monkeypatch, FakeEntryPoint("one", "pkg-one", lambda: _plugin(_column("dup", np.zeros))),
                      FakeEntryPoint("two", "pkg-two", lambda: _plugin(_column("dup", np.ones))))
    expected = "scorer name 'dup' is registered twice: by pkg-one (plugin 'one') and by pkg-two (plugin 'two')"
    with pytest.raises(curator.PluginError) as err:
        curator.load_plugins()
    assert str(err.value) == expected
    result = CliRunner().invoke(main, ["score", str(tmp_path), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code != 0 and result.output.strip() == f"Error: {expected}"


# --- scorers that misbehave --------------------------------------------------------------------------

def test_the_import_failure_is_recorded_in_the_run_manifest(faulty_run):
    assert faulty_run.manifest["plugin_errors"] == [
        {"plugin": "broken", "package": "broken-pkg", "hook": None,
         "error": "ModuleNotFoundError: No module named 'missing_dep'"}]


def test_a_wrong_shape_an_inf_and_a_raising_scorer_are_left_out_and_recorded(faulty_run):
    log = faulty_run.manifest["scorers"]
    assert log["wrong_shape"]["error"] == ("PluginError: scorer 'wrong_shape': column 'wrong_shape' has shape (25,), "
                                           "expected (24,)")
    assert log["has_inf"]["error"] == "PluginError: scorer 'has_inf': column 'has_inf' has 1 NaN/inf values"
    assert log["raises"]["error"].startswith("TypeError: unsupported operand type(s) for /")
    assert {name for name, entry in log.items() if entry["status"] == "failed"} == {"wrong_shape", "has_inf", "raises"}
    assert log["constant"]["status"] == "done" and log["constant"]["package"] == "good-pkg"
    columns = set(faulty_run.scores.columns)
    assert "score_constant" in columns and not {"score_wrong_shape", "score_has_inf", "score_raises"} & columns


def test_strict_mode_makes_a_failing_scorer_fatal_with_no_run(monkeypatch, tmp_path):
    root = digit_folder(tmp_path / "data")
    _use_entry_points(monkeypatch, FakeEntryPoint("good", "good-pkg", lambda: _plugin(
        _column("has_inf", lambda n: np.full(n, np.inf)))))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(root), "--out", str(out), "--epochs", "1", "--quiet", "--strict"])
    assert result.exit_code != 0
    assert result.output.strip() == ("Error: scorer 'has_inf' failed: PluginError: scorer 'has_inf': column 'has_inf' "
                                     "has 24 NaN/inf values")
    assert not out.exists() and not out.with_name("run.partial").exists()


def test_a_plugin_whose_register_hook_raises_is_skipped_and_recorded():
    class Crashing:
        @curator.hookimpl
        def register_scorers(self, register):
            raise RuntimeError("boom")

    with pytest.warns(UserWarning, match="failed in register_scorers"):
        registry = curator.load_plugins([Crashing()])
    assert "learning_speed" in registry
    assert any("boom" in e["error"] for e in registry.errors)
