"""`--backend ray`: the fold proxies train as Ray tasks, the shardable scorers run as Ray tasks over
shards of the rows, and the driver writes the same run directory.

One real Ray instance (2 CPUs) serves the whole module. The local backend on 2 cores gives its folds
and shards the task shapes Ray does (each fold 2 // 2 = 1 thread, one single-thread shard per core),
so with the same float arithmetic the two runs must agree bit for bit (tolerance 0), every file but
manifest.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits

import curator
from curator.cli import main

ray = pytest.importorskip("ray")

from curator.backends.ray import STALE_SHARD_DIR_S, shard_dir  # noqa: E402  (needs ray)

SCORERS = "learning_speed,early_learning,self_influence,adversarial_distance"   # the last two shard
EPOCHS = 3


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(noisy_digits, tmp_path_factory) -> curator.Run:
    """The reference: the local backend with as many cores as the Ray instance has CPUs."""
    root, _ = noisy_digits
    return curator.score(root, out=tmp_path_factory.mktemp("ray") / "local", scorers=SCORERS, epochs=EPOCHS,
                         seed=0, progress=False, threads=2)


@pytest.fixture(scope="module")
def ray_run(ray_instance, noisy_digits, tmp_path_factory) -> curator.Run:
    root, _ = noisy_digits
    return curator.score(root, out=tmp_path_factory.mktemp("ray") / "ray", scorers=SCORERS, epochs=EPOCHS,
                         seed=0, progress=False, backend="ray")


def test_ray_scores_equal_the_local_scores(local_run, ray_run):
    local, remote = local_run.scores, ray_run.scores
    assert list(remote.columns) == list(local.columns)
    assert (remote["id"] == local["id"]).all()
    for column in [c for c in local.columns if c.startswith("score_")] + ["mislabeled_score"]:
        np.testing.assert_array_equal(remote[column].to_numpy(), local[column].to_numpy(), err_msg=column)
    assert (remote["is_mislabeled"] == local["is_mislabeled"]).all()
    assert local["is_mislabeled"].sum() > 50          # 10% of 1,797 labels are flipped: a real comparison
    np.testing.assert_array_equal(ray_run.oof_probs, local_run.oof_probs)


def test_ray_run_directory_is_the_local_one_file_for_file(local_run, ray_run):
    """Dynamics, embeddings, out-of-fold logits, fold logs and every checkpoint: the same bytes."""
    files = sorted(p.relative_to(local_run.path) for p in local_run.path.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(ray_run.path) for p in ray_run.path.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".pt"]) == 2 * EPOCHS
    differ = [str(f) for f in files if (local_run.path / f).read_bytes() != (ray_run.path / f).read_bytes()]
    assert differ == ["manifest.json"]


def test_manifest_records_where_the_folds_trained(local_run, ray_run):
    local = local_run.manifest["config"]["backend"]
    assert (local["name"], local["cores"], local["fold_threads"]) == ("local", 2, 1)
    assert {name: s["shards"] for name, s in local["scorer_shards"].items()} == {"self_influence": 2,
                                                                                  "adversarial_distance": 2}
    backend = ray_run.manifest["config"]["backend"]
    assert backend["name"] == "ray" and backend["address"] is None
    assert backend["fold_resources"] == {"num_cpus": 1}          # 2 CPUs shared by 2 folds
    assert sorted(backend["fold_nodes"]) == ["0", "1"]
    assert ray_run.manifest["proxy"] == local_run.manifest["proxy"]


def test_manifest_records_the_scorer_shards(ray_run):
    shards = ray_run.manifest["config"]["backend"]["scorer_shards"]
    assert sorted(shards) == ["adversarial_distance", "self_influence"]      # the shardable ones only
    for record in shards.values():
        assert record["shards"] == 2 and record["task_resources"] == {"num_cpus": 1}   # one per CPU
        assert len(record["nodes"]) == 1


def test_shard_tasks_leave_no_unpacked_artifacts_behind(ray_run):
    """This run's directory only: $TMPDIR is shared with other processes and runs stopped mid-way."""
    key = ray_run.manifest["config"]["backend"]["shard_key"]
    assert len(key) == 16
    assert not shard_dir(key).exists()


def test_a_shard_that_raises_leaves_the_scorer_out_and_names_it(ray_instance, noisy_digits, tmp_path):
    def broken_rows(ctx, rows):
        if rows[0] > 0:                                  # the second shard only
            raise ValueError("shard broke")
        return {"broken": np.zeros(len(rows), np.float32)}

    class Plugin:
        @curator.hookimpl
        def register_scorers(self, register):
            register(curator.Scorer(name="broken", issue="outlier", requires=(), score_rows=broken_rows))

    run = curator.score(noisy_digits[0], out=tmp_path / "run", scorers="broken,learning_speed", epochs=1,
                        progress=False, backend="ray", plugins=[Plugin()])
    record = run.manifest["scorers"]["broken"]
    assert record["status"] == "failed" and "shard broke" in record["error"]
    assert "score_broken" not in run.scores and "score_learning_speed" in run.scores
    assert not shard_dir(run.manifest["config"]["backend"]["shard_key"]).exists()   # the other shard cancelled


def test_a_run_removes_shard_directories_stale_for_a_day_and_keeps_fresh_ones(ray_instance, noisy_digits, tmp_path):
    """A run killed before its end (SIGKILL) leaves its directory; the next run's end sweeps it."""
    stale, fresh = shard_dir("killed-run-stale"), shard_dir("live-run-fresh")
    for folder in (stale, fresh):
        (folder / "folds").mkdir(parents=True, exist_ok=True)
        (folder / "folds" / "oof_logits.npy").write_bytes(b"x")
    day_ago = time.time() - STALE_SHARD_DIR_S - 60
    os.utime(stale, (day_ago, day_ago))

    class Plugin:
        @curator.hookimpl
        def register_scorers(self, register):
            register(curator.Scorer(name="zeros", issue="outlier", requires=(),
                                    score_rows=lambda ctx, rows: {"zeros": np.zeros(len(rows), np.float32)}))

    run = curator.score(noisy_digits[0], out=tmp_path / "run", scorers="zeros", epochs=1, progress=False,
                        backend="ray", plugins=[Plugin()])
    assert run.manifest["scorers"]["zeros"]["status"] == "done"
    assert not stale.exists() and (fresh / "folds" / "oof_logits.npy").is_file()
    shutil.rmtree(fresh)


def test_ray_backend_leaves_a_running_ray_instance_running(ray_run):
    assert ray.is_initialized()                                 # it was the caller's: not shut down


def _digits_npz(path: Path) -> Path:
    digits = load_digits()
    np.savez(path, X=digits.data.astype(np.float32), y=digits.target)
    return path


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_local_backend_imports_no_ray(tmp_path):
    data = _digits_npz(tmp_path / "digits.npz")
    done = _python(f"""
import sys, json, curator
curator.score({str(data)!r}, out={str(tmp_path / 'run')!r}, epochs=1, scorers="learning_speed", progress=False)
print(json.dumps(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))))
""")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
    assert (tmp_path / "run" / "scores.parquet").exists()


def test_unknown_backend_names_the_option(noisy_digits):
    with pytest.raises(curator.ConfigError, match=r"^--backend 'spark': expected one of local, ray$"):
        curator.score(noisy_digits[0], backend="spark", progress=False)


def test_cluster_address_without_ray_backend_names_the_option(noisy_digits):
    with pytest.raises(curator.ConfigError, match=r"^--address auto: a cluster address needs --backend ray$"):
        curator.score(noisy_digits[0], address="auto", progress=False)


def test_no_cluster_at_address_is_a_one_line_cli_error(tmp_path, monkeypatch):
    # What ray.init raises when `auto` finds no running instance (a real unreachable host takes
    # minutes to time out, and `auto` would find this module's own instance).
    def no_cluster(**kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(_digits_npz(tmp_path / "digits.npz")), "--out", str(out),
                                       "--quiet", "--epochs", "1", "--scorers", "learning_speed",
                                       "--backend", "ray", "--address", "auto"])
    assert result.exit_code != 0
    assert result.output.strip() == ("Error: --address auto: cannot connect to a Ray cluster "
                                     "(ConnectionError: Could not find any running Ray instance. "
                                     "Please specify the one to connect to.)")
    assert not out.exists() and not out.with_name("run.partial").exists()
