"""curator as a user installs it: the wheel built from this tree, installed (not editable) into a fresh
venv, run from a folder outside the source tree. Offline: the fresh venv sees this environment's
installed dependencies (torch and the rest, never curator itself) through a .pth file, and pip
installs the wheel with --no-index, so a dependency the wheel declares but nothing provides fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from datasets import digits_images, flip_labels, write_image_folder

ROOT = Path(__file__).resolve().parents[1]
SOURCE_PARTS = ("curator", "plugins", "pyproject.toml", "README.md")
# This environment's own curator (editable) must not leak into the fresh venv.
OWN = ("curator", "curator_plugins", "__editable__", "_curator", "curator-", "curator.egg-info")


def _run(cmd: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source tree (build files stay out of the repository)."""
    work = tmp_path_factory.mktemp("wheel")
    (work / "src").mkdir()
    for part in SOURCE_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, work / "src" / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, work / "src" / part)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", work / "dist", work / "src"], cwd=work)
    (built,) = (work / "dist").glob("curator-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel pip-installed, dependencies resolved offline; returns its bin/."""
    work = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", work / "venv"], cwd=work)
    deps = work / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(OWN) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    python = work / "venv" / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work).stdout.strip()
    (Path(site) / "curator-test-deps.pth").write_text(f"{deps}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CURATOR_PLUGINS", "CURATOR_DISABLE_PLUGINS")}
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index", wheel], cwd=work, env=env)
    _run([sys.executable, "-m", "pip", "--python", python, "check"], cwd=work, env=env)
    return work / "venv" / "bin"


@pytest.fixture
def elsewhere(tmp_path) -> tuple[Path, dict]:
    """A working folder outside the source tree and an environment without this repository on it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CURATOR_PLUGINS", "CURATOR_DISABLE_PLUGINS")}
    return tmp_path, env


def test_the_wheel_holds_every_package_of_the_source_tree(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    for init in [*(ROOT / "curator").rglob("__init__.py"), *(ROOT / "plugins").rglob("__init__.py")]:
        package = init.relative_to(ROOT / "plugins" if init.is_relative_to(ROOT / "plugins") else ROOT)
        assert package.as_posix() in names, f"{package} is missing from {wheel.name}"


def test_the_wheel_states_python_311_and_lower_bounds_for_torch(wheel):
    with zipfile.ZipFile(wheel) as whl:
        meta_name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(whl.read(meta_name).decode())
    assert meta["Requires-Python"] == ">=3.11"
    requires = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    torch_req = next(r for r in requires if r.startswith("torch"))
    assert "==" not in torch_req and ">=" in torch_req, torch_req


def test_the_installed_curator_lists_its_scorers_from_its_own_site_packages(venv, elsewhere):
    cwd, env = elsewhere
    where = _run([venv / "python", "-c", "import curator, curator_plugins; print(curator.__file__); "
                  "print(curator_plugins.__file__)"], cwd, env).stdout.split()
    assert all(Path(p).is_relative_to(venv.parent) for p in where), where
    listing = json.loads(_run([venv / "curator", "plugins", "--json"], cwd, env).stdout)
    assert listing["errors"] == []
    assert {s["name"]: s["package"] for s in listing["scorers"]} == {
        name: "curator" for name in ("adversarial_distance", "early_learning", "kernel_density", "learning_speed",
                                     "self_influence")}


def test_the_installed_curator_scores_real_images_and_its_retrain_command_answers(venv, elsewhere):
    cwd, env = elsewhere
    images, labels = digits_images()
    noisy, _ = flip_labels(labels[:400], 0.10, 10, seed=0)
    write_image_folder(cwd / "digits", images[:400], noisy, [str(i) for i in range(10)])
    done = _run([venv / "curator", "score", "digits", "--out", "run", "--epochs", "2", "--device", "cpu",
                 "--scorers", "learning_speed,early_learning,kernel_density", "--quiet"], cwd, env)
    assert done.stdout.strip().splitlines()[-1] == "run"
    manifest = json.loads((cwd / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["dataset"]["n_examples"] == 400
    assert manifest["dataset"]["path"] == str((cwd / "digits").resolve())
    help_text = _run([venv / "curator", "retrain", "--help"], cwd, env).stdout
    assert "metrics.json" in help_text and "--method" in help_text
