"""Interrupted, concurrent and faulty runs: nothing half-written, resumable, reported by name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import curator
from curator import store
from curator.engine import folds


def test_interrupted_training_resumes_with_only_the_unfinished_fold(noisy_digits, noisy_digits_run, tmp_path,
                                                                    monkeypatch):
    root, _ = noisy_digits
    out = tmp_path / "run"
    original = folds.train_fold
    trained_folds = []

    def interrupted_after_first_fold(k, *args, **kwargs):
        if k == 1:
            raise KeyboardInterrupt
        trained_folds.append(k)
        return original(k, *args, **kwargs)

    monkeypatch.setattr(folds, "train_fold", interrupted_after_first_fold)
    with pytest.raises(KeyboardInterrupt):
        curator.score(root, out=out, seed=0, scorers="learning_speed,early_learning", progress=False)
    partial = store.partial_dir(out)
    assert not out.exists() and (partial / "artifacts" / "fold0.json").exists()
    assert json.loads((partial / "manifest.json").read_text())["status"] == "partial"

    def counting(k, *args, **kwargs):
        trained_folds.append(k)
        return original(k, *args, **kwargs)

    monkeypatch.setattr(folds, "train_fold", counting)
    run = curator.score(root, out=out, seed=0, scorers="learning_speed,early_learning", resume=True, progress=False)
    assert trained_folds == [0, 1]                           # fold 0 was not trained again
    assert run.manifest["resumed"] is True and run.manifest["status"] == "complete"
    for column in ("score_learning_speed", "score_early_learning"):
        np.testing.assert_allclose(run.scores[column], noisy_digits_run.scores[column], atol=1e-5)


KILLER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import curator

    class Killer:
        @curator.hookimpl
        def register_scorers(self, register):
            def die(ctx):
                os.kill(os.getpid(), signal.SIGKILL)
            register(curator.Scorer(name="zz_killer", issue="outlier", requires=(), score=die))

    curator.score(sys.argv[1], out=sys.argv[2], seed=0, scorers="learning_speed,zz_killer",
                  plugins=[Killer()], progress=False)
""")


def test_sigkill_mid_run_leaves_a_resumable_partial_and_no_run(noisy_digits, noisy_digits_run, tmp_path):
    root, _ = noisy_digits
    out = tmp_path / "run"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run([sys.executable, str(script), str(root), str(out)], capture_output=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    partial = json.loads((store.partial_dir(out) / "manifest.json").read_text())
    assert partial["status"] == "partial"
    assert {"load", "train", "scorer learning_speed"} <= set(partial["stages"])

    run = curator.score(root, out=out, seed=0, scorers="learning_speed", resume=True, progress=False)
    assert run.manifest["resumed"] is True
    assert run.manifest["scorers"]["learning_speed"]["seconds"] == partial["stages"]["scorer learning_speed"]["seconds"]
    np.testing.assert_allclose(run.scores["score_learning_speed"], noisy_digits_run.scores["score_learning_speed"],
                               atol=1e-5)
    assert not store.partial_dir(out).exists()
    assert not {"columns", "run_key.json", ".lock"} & {p.name for p in out.iterdir()}


def test_resume_refuses_a_partial_made_with_other_settings(noisy_digits, tmp_path, monkeypatch):
    root, _ = noisy_digits
    out = tmp_path / "run"
    monkeypatch.setattr(folds, "train_fold", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        curator.score(root, out=out, seed=0, epochs=2, progress=False)
    with pytest.raises(curator.RunError, match="other settings"):
        curator.score(root, out=out, seed=0, epochs=3, resume=True, progress=False)


def test_a_second_concurrent_run_into_the_same_directory_is_refused(noisy_digits, tmp_path):
    root, _ = noisy_digits
    out = tmp_path / "run"
    holder = store.Staging(out, {"someone": "else"}, resume=False)
    try:
        with pytest.raises(curator.RunError, match="another curator run is writing"):
            curator.score(root, out=out, epochs=1, progress=False)
        assert (store.partial_dir(out) / "run_key.json").read_text().strip() == '{\n  "someone": "else"\n}'
    finally:
        holder.discard()


class Faulty:
    @curator.hookimpl
    def register_scorers(self, register):
        register(curator.Scorer(name="hangs", issue="outlier", requires=(), score=lambda ctx: time.sleep(30)))
        register(curator.Scorer(name="nan", issue="outlier", requires=(),
                                score=lambda ctx: np.full(ctx.n_examples, np.nan)))
        register(curator.Scorer(name="raises", issue="outlier", requires=(),
                                score=lambda ctx: 1 / 0))


def test_hanging_nan_and_raising_scorers_are_reported_by_name_and_left_out(noisy_digits, tmp_path):
    root, _ = noisy_digits
    started = time.perf_counter()
    run = curator.score(root, out=tmp_path / "run", epochs=1, scorers="hangs,nan,raises,learning_speed",
                        scorer_timeout=2, plugins=[Faulty()], progress=False)
    assert time.perf_counter() - started < 30               # the hung scorer was not waited for
    log = run.manifest["scorers"]
    assert log["hangs"]["status"] == "failed" and "timed out after 2s" in log["hangs"]["error"]
    assert log["nan"]["status"] == "failed" and "NaN" in log["nan"]["error"]
    assert log["raises"]["status"] == "failed" and "ZeroDivisionError" in log["raises"]["error"]
    assert log["learning_speed"]["status"] == "done"
    assert [c for c in run.scores.columns if c.startswith("score_")][0] == "score_learning_speed"


@pytest.mark.parametrize("delay", [1.5, 3.5, 6.0])
def test_sigkill_at_any_point_leaves_a_complete_run_or_a_resumable_partial(noisy_digits, tmp_path, delay):
    root, _ = noisy_digits
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "curator", "score", str(root), "--out", str(out), "--epochs", "2",
           "--scorers", "learning_speed,early_learning,kernel_density", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = store.partial_dir(out)
    if out.exists():                                        # finished before the kill: complete
        assert curator.Run(out).manifest["status"] == "complete" and not partial.exists()
        return
    assert not out.exists()
    if (partial / "manifest.json").exists():
        assert json.loads((partial / "manifest.json").read_text())["status"] == "partial"
        assert not (partial / "scores.parquet").exists()
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    run = curator.Run(out)
    assert run.manifest["status"] == "complete" and len(run.scores) == 1797
    assert not partial.exists()


def test_a_timed_out_scorer_is_stopped_with_its_process(noisy_digits, tmp_path):
    """A scorer that can travel runs under --scorer-timeout in a worker process, killed at the deadline:
    its memory (and GPU, where it had one) go with it."""
    import slow_scorers

    root, _ = noisy_digits
    pid_file = tmp_path / "pid"
    config = tmp_path / "curator.toml"
    config.write_text(f"[scorers.hangs_in_worker]\npid_file = {str(pid_file)!r}\n")
    run = curator.score(root, out=tmp_path / "run", epochs=1, scorers="hangs_in_worker,learning_speed",
                        scorer_timeout=8, config=config, plugins=[slow_scorers], progress=False)
    log = run.manifest["scorers"]
    assert log["hangs_in_worker"]["error"] == "TimeoutError: timed out after 8s; its worker process was stopped"
    assert log["learning_speed"]["status"] == "done"
    pid = int(pid_file.read_text())
    assert pid != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
