"""What a scorer receives: the recorded artifacts of one run, loaded lazily and memory-mapped.

Shapes use N = examples, C = classes, E = epochs, D = embedding size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .engine.inputs import InputBank, Normalizer, shared_bank
from .engine.models import ModelSpec, build_model


class ScaledRows:
    """Rows of a (N, C) array (a memory map) times a constant, read on demand: ``view[rows]`` is
    ``array[rows] * scale`` in float32. The whole (N, C) never sits in memory (a million examples in
    a thousand classes is 4 GB)."""

    def __init__(self, array: np.ndarray, scale: float):
        self.array, self.scale = array, float(scale)
        self.shape, self.dtype = array.shape, np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, rows) -> np.ndarray:
        return np.asarray(self.array[rows], dtype=np.float32) * np.float32(self.scale)


class Dynamics:
    """Per-epoch records of each example from the model that trained on it (in-sample), kept while
    the proxies trained, so their size grows with N (and N x C once), never with E x N x C:

    p_label: (E, N) float32      probability of the given label
    margin:  (E, N) float32      z_y - max_{k != y} z_k
    correct: (E, N) bool         argmax == given label
    loss:    (E, N) float32      cross-entropy
    prob_sq: (E, N) float32      sum_k p_k^2 (so ||p - e_y||^2 = prob_sq - 2 p_label + 1)
    head_grad_sq: (E, N) float32 ||grad of the loss w.r.t. the head's weights and bias||^2 at the step
    step_lr: (E, N) float32      the learning rate of that step (sum_e step_lr * head_grad_sq: TracIn)
    ema_probs(): (N, C) float32  the early-learning target over the epochs (ema_rows(): the same, read
                                 row block by row block)
    logits:  (E, N, C) float32   only when the run kept them ([train] keep_logits: by default up to 1 GiB)
    """

    def __init__(self, artifacts: Path):
        self._dir = artifacts

    def _load(self, name: str) -> np.ndarray:
        return np.load(self._dir / f"dynamics_{name}.npy", mmap_mode="r")

    p_label = cached_property(lambda self: self._load("p_label"))
    margin = cached_property(lambda self: self._load("margin"))
    correct = cached_property(lambda self: self._load("correct"))
    loss = cached_property(lambda self: self._load("loss"))
    prob_sq = cached_property(lambda self: self._load("prob_sq"))
    head_grad_sq = cached_property(lambda self: self._load("head_grad_sq"))
    step_lr = cached_property(lambda self: self._load("step_lr"))

    @cached_property
    def logits(self) -> np.ndarray:
        path = self._dir / "dynamics_logits.npy"
        if not path.exists():
            raise FileNotFoundError(f"{path}: this run did not keep the per-epoch logits (E x N x C over the "
                                    "[train] keep_logits limit); read p_label, margin, correct, loss, prob_sq, "
                                    "head_grad_sq, step_lr or "
                                    "ema_probs(), or score with keep_logits = \"always\" in [train]")
        return np.load(path, mmap_mode="r")

    @property
    def n_epochs(self) -> int:
        return self.p_label.shape[0]

    @cached_property
    def ema_beta(self) -> float:
        """The beta of the recorded early-learning target."""
        return float(json.loads((self._dir / "model.json").read_text())["train_config"]["ema_beta"])

    def ema_rows(self, beta: float | None = None) -> "ScaledRows | np.ndarray":
        """The early-learning targets of :meth:`ema_probs`, indexable by rows (``t[a:b]``, ``t[index]``)
        without the (N, C) array in memory when ``beta`` is the recorded one; another beta computes
        them from the per-epoch logits (kept only when they fit, so the array is small too)."""
        if beta is None or abs(beta - self.ema_beta) < 1e-12:
            raw = np.load(self._dir / "dynamics_ema.npy", mmap_mode="r")
            return ScaledRows(raw, 1.0 / (1.0 - self.ema_beta ** self.n_epochs))
        return self.ema_probs(beta)

    def ema_probs(self, beta: float | None = None, chunk: int = 65536) -> np.ndarray:
        """(N, C) float32 early-learning targets: t <- beta t + (1 - beta) softmax(z_e) over epochs e,
        bias-corrected for the zero start (Liu et al. 2020). Rows sum to 1. ``beta`` None (or the
        recorded :attr:`ema_beta`): the target recorded while training; another beta needs the
        per-epoch logits."""
        if beta is None or abs(beta - self.ema_beta) < 1e-12:
            rows = self.ema_rows()
            out = np.empty(rows.shape, np.float32)
            for start in range(0, len(rows), chunk):
                out[start:start + chunk] = rows[start:start + chunk]
            return out
        logits = self.logits
        _, n, c = logits.shape
        out = np.empty((n, c), np.float32)
        for start in range(0, n, chunk):
            probs = F.softmax(torch.from_numpy(np.array(logits[:, start:start + chunk], dtype=np.float64)), dim=2)
            target = torch.zeros_like(probs[0])
            for p in probs:
                target = beta * target + (1.0 - beta) * p
            out[start:start + chunk] = (target / (1.0 - beta ** len(probs))).numpy()
        return out


class ThroughBackbone(torch.nn.Module):
    """A proxy read through the frozen part of its backbone: images (normalised for the backbone) ->
    ``prefix`` -> (frozen features: the proxy's feature normalisation) -> the proxy. ``head`` is the
    proxy's head, so last-layer arithmetic is unchanged."""

    def __init__(self, prefix: torch.nn.Module, proxy: torch.nn.Module, normalizer: Normalizer):
        super().__init__()
        self.prefix, self.proxy, self.normalizer = prefix, proxy, normalizer
        self.head = proxy.head

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.prefix(x)
        if self.normalizer.kind == "vector":
            z = self.normalizer(z.flatten(1))
        return self.proxy.forward_features(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


@dataclass(frozen=True)
class Checkpoint:
    """A saved model state of fold ``fold`` after epoch ``epoch``; ``lr`` is the mean LR of that epoch."""

    fold: int
    epoch: int
    lr: float
    path: Path


@dataclass
class ScoreContext:
    """Everything a scorer may read. Arrays are in example order (the rows of ``scores.parquet``).

    labels:      (N,) int64 given labels        folds:      (N,) int64 held-out fold per example
    trained_by:  (N,) int64 fold model whose training dynamics/checkpoints saw the example
    oof_logits:  (N, C) float32 out-of-fold      oof_probs:  (N, C) float32
    embeddings:  (N, D) float32 out-of-fold penultimate features
    dynamics:    :class:`Dynamics`               checkpoints: list of :class:`Checkpoint`
    options:     this scorer's table from the config (``[scorers.<name>]``)
    inputs_array: what the proxies read: (N, C, H, W) uint8 images, (N, D) float32 vectors, or with a
                 pretrained backbone its cached features (N, D) or activations at its cut (N, C, H, W)
    images_array: (N, C, H, W) uint8 decoded images, when the dataset has them
    input_space: with a pretrained backbone, :meth:`load_model` and :meth:`inputs` go through it: the
                 model reads images normalised for the backbone (``input_space`` in ``[score]``)
    """

    artifacts: Path
    labels: np.ndarray
    classes: list[str]
    ids: list[str]
    inputs_array: np.ndarray
    device: torch.device
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    progress: Callable[..., Iterable] = lambda it, **kw: it
    images_array: np.ndarray | None = None
    input_space: bool = False

    @property
    def n_examples(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def folds(self) -> np.ndarray:
        return np.load(self.artifacts / "folds.npy")

    @cached_property
    def n_folds(self) -> int:
        return int(self._model_info["train_config"]["folds"])

    @cached_property
    def trained_by(self) -> np.ndarray:
        return (self.folds + 1) % self.n_folds

    @cached_property
    def oof_logits(self) -> np.ndarray:
        return np.load(self.artifacts / "oof_logits.npy", mmap_mode="r")

    @cached_property
    def oof_probs(self) -> np.ndarray:
        return F.softmax(torch.from_numpy(np.array(self.oof_logits)), dim=1).numpy()

    @cached_property
    def embeddings(self) -> np.ndarray:
        return np.load(self.artifacts / "embeddings.npy", mmap_mode="r")

    @cached_property
    def dynamics(self) -> Dynamics:
        return Dynamics(self.artifacts)

    @cached_property
    def checkpoints(self) -> list[Checkpoint]:
        records = json.loads((self.artifacts / "checkpoints.json").read_text())
        return [Checkpoint(r["fold"], r["epoch"], r["lr"], self.artifacts / r["file"]) for r in records]

    @cached_property
    def _model_info(self) -> dict:
        return json.loads((self.artifacts / "model.json").read_text())

    @cached_property
    def model_spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self._model_info["spec"])

    def load_model(self, fold: int, epoch: int | None = None) -> torch.nn.Module:
        """The fold-``fold`` proxy after ``epoch`` (default: the last), in eval mode on ``device``.

        Its ``forward_features(x) -> (logits (B, C), h (B, D))`` exposes the penultimate layer;
        ``model.head`` is the final linear layer.
        """
        chosen = [c for c in self.checkpoints if c.fold == fold and (epoch is None or c.epoch == epoch)]
        if not chosen:
            raise KeyError(f"no checkpoint for fold {fold} epoch {epoch}")
        model = build_model(self.model_spec)
        model.load_state_dict(torch.load(chosen[-1].path, map_location="cpu", weights_only=True))
        if self._through_backbone:
            model = ThroughBackbone(self._backbone.prefix(self._model_info["backbone"]["cut"]), model,
                                    Normalizer.from_dict(self._model_info["normalizer"]))
        return model.to(self.device).eval()

    @cached_property
    def _through_backbone(self) -> bool:
        info = self._model_info.get("backbone")
        return bool(self.input_space and info and info.get("cut") is not None and self.images_array is not None)

    @cached_property
    def _backbone(self):
        from .engine.features import open_backbone

        info = self._model_info["backbone"]
        return open_backbone(info["name"], info.get("weights"), info.get("input_size"))

    @cached_property
    def _bank(self) -> InputBank:
        if self._through_backbone:
            return InputBank(self.images_array, Normalizer("identity", (), ()), self.device)
        return shared_bank(self.inputs_array, Normalizer.from_dict(self._model_info["normalizer"]), self.device)

    def inputs(self, index: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised model inputs for example indices ``index`` (B,), as the proxies saw them, on ``device``
        (with ``input_space``: the images, resized and normalised for the backbone)."""
        batch = self._bank.batch(torch.as_tensor(np.asarray(index), dtype=torch.long))
        if self._through_backbone:
            from .engine.features import preprocess

            return preprocess(batch, self._backbone)
        return batch

    def knn(self, k: int = 20, exact_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The shared kNN graph of L2-normalised out-of-fold embeddings, built once per run.

        Neighbours are searched within the example's own fold (one network embedded that fold), self
        excluded, most similar first: exactly for folds of up to ``exact_max`` examples (default
        200,000), with an IVF index above. Returns (indices (N, k') int64, cosine similarities (N, k')
        float32) with k' = min(k, smallest fold size - 1). The first call builds the graph; later
        calls read it back, whatever their ``exact_max``.
        """
        from .engine.knn import EXACT_MAX, knn_graph

        return knn_graph(self.embeddings, k, self.artifacts, self.device, groups=self.folds,
                         exact_max=EXACT_MAX if exact_max is None else exact_max)
