"""What training records: per-epoch statistics and the early-learning target computed while the proxies
train, equal to what the full per-epoch logits give; the logits themselves only when small enough;
and the precision the GPU path trains in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import curator
from curator.engine import folds
from curator.engine.config import TrainConfig


@pytest.fixture(scope="module")
def runs(noisy_digits, tmp_path_factory):
    """The same 3-epoch run twice: keeping the per-epoch logits, and not."""
    root, _ = noisy_digits
    out = tmp_path_factory.mktemp("dynamics")
    config = out / "curator.toml"
    config.write_text('[train]\nkeep_logits = "never"\n')
    kept = curator.score(root, out=out / "kept", epochs=3, scorers="learning_speed,early_learning", progress=False)
    lean = curator.score(root, out=out / "lean", epochs=3, scorers="learning_speed,early_learning", config=config,
                         progress=False)
    return kept, lean


def test_the_recorded_statistics_equal_those_of_the_logits(runs):
    kept, _ = runs
    dynamics = curator.Dynamics(kept.path / "artifacts")
    z = torch.from_numpy(np.array(dynamics.logits, dtype=np.float64))          # (E, N, C)
    y = torch.as_tensor(kept.scores["label"].map({c: i for i, c in enumerate(kept.classes)}).to_numpy())
    p = torch.softmax(z, dim=2)
    p_y = p[:, torch.arange(len(y)), y]
    np.testing.assert_allclose(dynamics.p_label, p_y.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dynamics.prob_sq, (p * p).sum(2).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dynamics.loss, -torch.log(p_y).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(dynamics.correct, (z.argmax(2) == y).numpy())
    recorded = dynamics.ema_probs()                      # the beta of the run: 0.7
    for beta, target in ((0.7, recorded), (0.5, dynamics.ema_probs(0.5))):   # 0.5: from the kept logits
        expected = torch.zeros_like(p[0])
        for epoch in p:
            expected = beta * expected + (1 - beta) * epoch
        np.testing.assert_allclose(target, (expected / (1 - beta ** 3)).numpy(), atol=1e-6)


def test_the_early_learning_rows_read_on_demand_equal_the_whole_target(runs):
    kept, _ = runs
    dynamics = curator.Dynamics(kept.path / "artifacts")
    whole, rows = dynamics.ema_probs(), dynamics.ema_rows()
    assert not isinstance(rows, np.ndarray) and rows.shape == whole.shape and len(rows) == len(whole)
    np.testing.assert_array_equal(rows[10:250], whole[10:250])
    index = np.array([3, 0, 77])
    np.testing.assert_array_equal(rows[index], whole[index])
    assert rows[0:5].dtype == np.float32


def test_without_the_logits_the_scores_are_the_same_and_reading_them_names_the_setting(runs):
    kept, lean = runs
    assert (kept.path / "artifacts" / "dynamics_logits.npy").exists()
    assert not (lean.path / "artifacts" / "dynamics_logits.npy").exists()
    for column in ("score_learning_speed", "score_early_learning", "mislabeled_score"):
        np.testing.assert_array_equal(kept.scores[column], lean.scores[column], err_msg=column)
    with pytest.raises(FileNotFoundError, match="keep_logits"):
        curator.Dynamics(lean.path / "artifacts").logits


def test_the_early_learning_beta_is_the_one_the_engine_records(noisy_digits, tmp_path):
    root, _ = noisy_digits
    config = tmp_path / "curator.toml"
    config.write_text("[scorers.early_learning]\nbeta = 0.9\n")
    run = curator.score(root, out=tmp_path / "run", epochs=2, scorers="early_learning", config=config, progress=False)
    assert run.manifest["config"]["train"]["ema_beta"] == 0.9
    assert curator.Dynamics(run.path / "artifacts").ema_beta == 0.9


def test_keep_logits_auto_keeps_them_up_to_a_gibibyte():
    config = TrainConfig(epochs=6)
    assert config.keeps_logits(60_000, 10)                    # 14 MB
    assert not config.keeps_logits(200_000, 1_000)            # 4.8 GB
    assert TrainConfig(keep_logits="always").keeps_logits(10**6, 1000)
    with pytest.raises(curator.ConfigError, match="keep_logits"):
        TrainConfig(keep_logits="sometimes")


@pytest.mark.parametrize("kind, bf16, expected", [("cpu", True, None), ("cuda", True, torch.bfloat16),
                                                  ("cuda", False, None)])
def test_training_uses_bf16_only_on_a_gpu_that_supports_it(monkeypatch, kind, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert folds.autocast_dtype(torch.device(kind)) is expected


def test_deterministic_runs_with_deterministic_kernels_only_and_restores_torch(noisy_digits, tmp_path):
    from click.testing import CliRunner

    from curator.cli import main

    root, _ = noisy_digits
    seen = []
    original = folds._train

    def spy(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(folds, "_train", spy)
        result = CliRunner().invoke(main, ["score", str(root), "--out", str(tmp_path / "run"), "--epochs", "1",
                                           "--scorers", "learning_speed", "--deterministic", "--quiet"])
    assert result.exit_code == 0, result.output
    assert seen == [True, True] and not torch.are_deterministic_algorithms_enabled()
    assert curator.Run(tmp_path / "run").manifest["config"]["train"]["deterministic"] is True


class _Recorder:
    """A sink that keeps what one fold hands over."""

    def __init__(self, n: int, epochs: int):
        self.head_grad_sq, self.step_lr = np.full((epochs, n), np.nan), np.full((epochs, n), np.nan)
        self.states: dict[str, dict] = {}

    def dynamics(self, epoch, rows, logits, features_sq, lrs):
        residual = torch.softmax(torch.from_numpy(logits).double(), 1)
        residual[torch.arange(len(rows)), torch.as_tensor(self.labels[rows])] -= 1.0
        self.head_grad_sq[epoch, rows] = residual.pow(2).sum(1).numpy() * (features_sq + 1.0)
        self.step_lr[epoch, rows] = lrs

    def held_out(self, rows, logits, embeddings):
        pass

    def checkpoint(self, name, state):
        self.states[name] = {key: t.clone() for key, t in state.items()}   # it shares the live weights


def test_the_head_gradient_recorded_at_each_step_is_the_autograd_one_at_that_steps_weights():
    """One full-batch step per epoch on an MLP (no batch norm): the step of epoch e reads the weights
    after epoch e - 1, so the recorded ||grad of the head||^2 equals autograd's at that checkpoint,
    and the recorded learning rate is the schedule's."""
    from curator.engine.inputs import InputBank, Normalizer
    from curator.engine.models import ModelSpec, build_model
    from curator.engine.optim import lr_at

    rng = np.random.default_rng(0)
    n, epochs = 60, 3
    x, y = rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, n)
    fold_of = np.arange(n) % 2
    spec = ModelSpec(kind="mlp", input_shape=(5,), n_classes=3, width=4, embedding_dim=8)
    cfg = TrainConfig(epochs=epochs, batch_size=n, lr=0.5, seed=3)
    sink = _Recorder(n, epochs)
    sink.labels = y
    bank = InputBank(x, Normalizer("identity", (), ()), torch.device("cpu"))
    folds.train_fold(0, fold_of, cfg, spec, bank, torch.as_tensor(y), torch.device("cpu"), sink, None)
    rows = np.flatnonzero(fold_of == 1)                       # trained on by fold 0, and recorded by it

    torch.manual_seed(cfg.seed * 1009 + 0)                    # the fold's initial weights
    model = build_model(spec)
    for epoch in range(epochs):
        if epoch:
            model.load_state_dict(sink.states[f"fold0-epoch{epoch - 1}.pt"])
        expected = []
        for i in rows:
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x[i:i + 1])), torch.tensor([y[i]])).backward()
            expected.append(float(model.head.weight.grad.pow(2).sum() + model.head.bias.grad.pow(2).sum()))
        assert min(expected) > 1e-6
        np.testing.assert_allclose(sink.head_grad_sq[epoch, rows], expected, rtol=1e-4)
        np.testing.assert_allclose(sink.step_lr[epoch, rows], lr_at(epoch, epochs, 0.5), rtol=1e-6)
