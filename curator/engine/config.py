"""Proxy-training settings: the ``[train]`` section of ``curator.toml``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError

LOSSES = ("ce", "elr")
KEEP_LOGITS = ("auto", "always", "never")
#: ``keep_logits = "auto"`` stores the (E, N, C) per-epoch logits up to this size (1M x 1000 x 6 is 24 GB).
KEEP_LOGITS_BYTES = 1 << 30


@dataclass(frozen=True)
class TrainConfig:
    """Proxy-training settings. ``batch_size``/``lr`` of None pick device-appropriate defaults.

    ema_beta: the early-learning target t <- ema_beta t + (1 - ema_beta) p recorded per example while
    the proxies train (the early_learning scorer's ``beta`` sets it). keep_logits: see :meth:`keeps_logits`.
    deterministic: deterministic kernels only (``torch.use_deterministic_algorithms``): the same numbers
    run after run on a GPU too, at the cost of slower kernels there; on the CPU nothing changes.
    """

    folds: int = 2
    epochs: int = 6
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    width: int = 16
    loss: str = "ce"
    elr_lambda: float = 3.0
    elr_beta: float = 0.7
    ema_beta: float = 0.7
    keep_logits: str = "auto"
    deterministic: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"--folds {self.folds}: need at least 2 folds for out-of-fold predictions")
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: need at least 1 epoch")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss {self.loss!r}: expected one of {', '.join(LOSSES)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size {self.batch_size}: must be positive")
        if not 0.0 <= self.ema_beta < 1.0:
            raise ConfigError(f"[train] ema_beta = {self.ema_beta}: must be in [0, 1)")
        if self.keep_logits not in KEEP_LOGITS:
            raise ConfigError(f"[train] keep_logits = {self.keep_logits!r}: expected one of {', '.join(KEEP_LOGITS)}")

    def keeps_logits(self, n_examples: int, n_classes: int) -> bool:
        """Whether the (E, N, C) per-epoch logits are stored: ``always``, ``never``, or (``auto``) when
        they take at most ``KEEP_LOGITS_BYTES``; the per-epoch statistics and the early-learning
        target are stored either way."""
        if self.keep_logits != "auto":
            return self.keep_logits == "always"
        return self.epochs * n_examples * n_classes * 4 <= KEEP_LOGITS_BYTES

    def resolved(self, device: torch.device, n_train: int) -> "TrainConfig":
        """Fill in the batch size (512 on GPU, 128 on CPU, smaller for small datasets so that each epoch
        still has about 30 steps) and a learning rate scaled linearly with batches above 128."""
        batch = self.batch_size or min(512 if device.type == "cuda" else 128, max(32, n_train // 30))
        return TrainConfig(**{**asdict(self), "batch_size": batch, "lr": self.lr or 0.1 * max(batch, 128) / 256})
