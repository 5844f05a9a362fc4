"""Turning stored inputs into normalised float batches on the training device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Normalizer:
    """Per-channel (images) or per-feature (vectors) mean and std; images are scaled to [0, 1] first."""

    kind: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, inputs: np.ndarray, kind: str, chunk: int = 8192) -> "Normalizer":
        axes = (0, 2, 3) if kind == "image" else (0,)
        total, total_sq, count = 0.0, 0.0, 0
        for start in range(0, len(inputs), chunk):
            x = np.asarray(inputs[start:start + chunk], dtype=np.float64)
            if kind == "image":
                x = x / 255.0
            total = total + x.sum(axis=axes)
            total_sq = total_sq + (x * x).sum(axis=axes)
            count += x.size // x.shape[1] if kind == "image" else len(x)
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0)) + 1e-6
        return cls(kind, tuple(np.atleast_1d(mean).tolist()), tuple(np.atleast_1d(std).tolist()))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mean": list(self.mean), "std": list(self.std)}

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, ...) uint8 or float32 on any device -> normalised float32 on the same device."""
        x = raw.float()
        mean = torch.tensor(self.mean, device=x.device)
        std = torch.tensor(self.std, device=x.device)
        if self.kind == "image":
            x = x / 255.0
            mean, std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        return (x - mean) / std


class InputBank:
    """All inputs, resident on the device when they fit, else read from the memory map per batch."""

    def __init__(self, inputs: np.ndarray, normalizer: Normalizer, device: torch.device,
                 max_device_fraction: float = 0.4):
        self.normalizer = normalizer
        self.device = device
        self.resident = False
        self._host = inputs
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if inputs.nbytes < max_device_fraction * free:
                self._data = torch.from_numpy(np.ascontiguousarray(inputs)).to(device)
                self.resident = True

    def __len__(self) -> int:
        return len(self._host)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Normalised float batch for example indices ``index`` (B,) on ``self.device``."""
        if self.resident:
            raw = self._data[index.to(self.device)]
        else:
            idx = index.cpu().numpy()
            order = np.argsort(idx)  # sorted reads are kinder to the memory map
            raw_np = np.empty((len(idx),) + self._host.shape[1:], dtype=self._host.dtype)
            raw_np[order] = self._host[idx[order]]
            raw = torch.from_numpy(raw_np)
            if self.device.type == "cuda":
                raw = raw.pin_memory().to(self.device, non_blocking=True)
            else:
                raw = raw.to(self.device)
        return self.normalizer(raw)
