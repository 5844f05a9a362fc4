"""The local backend: folds side by side and scorer shards in worker processes, with the thread shapes
of the Ray backend, so the numbers are the same whether a job runs in workers or in this process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import curator
from curator.backends import local
from curator.backends.workers import WorkerError, WorkerPool

SCORERS = "learning_speed,early_learning,self_influence"


def _square(x, report):
    report(x)
    return x * x


def _fails(x, report):
    raise ValueError(f"bad {x}")


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    """3,000 rows in 10 overlapping classes with 10% flipped labels."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.0, (10, 16)).astype(np.float32)
    y = rng.integers(0, 10, 3_000)
    x = centers[y] + rng.normal(0, 1.5, (3_000, 16)).astype(np.float32)
    flip = rng.random(3_000) < 0.1
    y[flip] = (y[flip] + rng.integers(1, 10, int(flip.sum()))) % 10
    path = tmp_path_factory.mktemp("vectors") / "blobs.npz"
    np.savez(path, X=x, y=y, ids=np.array([f"r{i}" for i in range(len(y))]))
    return path


def test_a_worker_pool_returns_results_reports_progress_and_names_errors():
    pool = WorkerPool(2)
    seen = []
    try:
        futures = [pool.submit(_square, i, on_progress=seen.append) for i in range(4)]
        assert [f.result(timeout=120) for f in futures] == [0, 1, 4, 9]
        assert sorted(seen) == [0, 1, 2, 3]
        with pytest.raises(WorkerError, match=r"(?s)_fails failed in worker \d+.*ValueError: bad 7"):
            pool.submit(_fails, 7).result(timeout=120)
    finally:
        pool.shutdown()


def test_workers_and_this_process_give_the_same_run(vectors, tmp_path, monkeypatch):
    here = curator.score(vectors, out=tmp_path / "here", scorers=SCORERS, threads=2, epochs=3, progress=False)
    monkeypatch.setattr(local, "WORKERS_FROM_EXAMPLE_EPOCHS", 0)      # this small job in workers too
    monkeypatch.setattr(local, "WORKERS_FROM_ROWS", 0)
    in_workers = curator.score(vectors, out=tmp_path / "workers", scorers=SCORERS, threads=2, epochs=3,
                               progress=False)
    assert in_workers.manifest["config"]["backend"]["folds"] == "workers"
    assert in_workers.manifest["config"]["backend"]["scorer_shards"]["self_influence"]["where"] == "workers"
    assert here.manifest["config"]["backend"]["scorer_shards"]["self_influence"]["where"] == "this process"
    for column in [c for c in here.scores.columns if c.startswith("score_")]:
        np.testing.assert_array_equal(in_workers.scores[column], here.scores[column], err_msg=column)
    assert (in_workers.scores["is_mislabeled"] == here.scores["is_mislabeled"]).all()
    np.testing.assert_array_equal(in_workers.oof_probs, here.oof_probs)


def test_a_script_without_a_main_guard_runs_its_folds_in_workers(vectors, tmp_path):
    """Worker processes are fresh interpreters: they never re-run the caller's script."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import curator
        import curator.backends.local
        curator.backends.local.WORKERS_FROM_EXAMPLE_EPOCHS = 0      # this small job in workers too
        run = curator.score({str(vectors)!r}, out={str(tmp_path / 'run')!r}, scorers="learning_speed",
                            epochs=2, threads=2, progress=False)
        print("done", run.path)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("done") == 1
    backend = json.loads((tmp_path / "run" / "manifest.json").read_text())["config"]["backend"]
    assert (backend["cores"], backend["folds"], backend["fold_threads"]) == (2, "workers", 1)
