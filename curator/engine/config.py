"""Proxy-training settings: the ``[train]`` section of ``curator.toml``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError

LOSSES = ("ce", "elr")


@dataclass(frozen=True)
class TrainConfig:
    """Proxy-training settings. ``batch_size``/``lr`` of None pick device-appropriate defaults."""

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

    def resolved(self, device: torch.device, n_train: int) -> "TrainConfig":
        """Fill in the batch size (512 on GPU, 128 on CPU, smaller for small datasets so that each epoch
        still has about 30 steps) and a learning rate scaled linearly with batches above 128."""
        batch = self.batch_size or min(512 if device.type == "cuda" else 128, max(32, n_train // 30))
        return TrainConfig(**{**asdict(self), "batch_size": batch, "lr": self.lr or 0.1 * max(batch, 128) / 256})
