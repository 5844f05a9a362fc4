"""Turning stored inputs into normalised float batches on the training device."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch


@dataclass(frozen=True)
class Normalizer:
    """Per-channel (images) or per-feature (vectors) mean and std; images are scaled to [0, 1] first.
    Kind ``identity`` only casts to float32: for a backbone's cached activations, already on scale."""

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

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        """The inverse of :meth:`to_dict` (as stored in ``model.json``)."""
        return cls(d["kind"], tuple(d["mean"]), tuple(d["std"]))

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, ...) uint8 or float32 on any device -> normalised float32 on the same device."""
        x = raw.float()
        if self.kind == "identity":
            return x
        mean, std = _constants(self, x.device)
        if self.kind == "image":
            x = x / 255.0
        return (x - mean) / std


@functools.lru_cache(maxsize=16)
def _constants(normalizer: Normalizer, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of ``normalizer`` as tensors on ``device``, shaped to broadcast: made once, not per batch."""
    shape = (1, -1, 1, 1) if normalizer.kind == "image" else (1, -1)
    return (torch.tensor(normalizer.mean, device=device).view(shape),
            torch.tensor(normalizer.std, device=device).view(shape))


_BANKS: dict[tuple, "InputBank"] = {}


def shared_bank(inputs: np.ndarray, normalizer: Normalizer, device: torch.device) -> "InputBank":
    """The one :class:`InputBank` of this process for these inputs, normaliser and device: on a GPU the
    inputs are uploaded once, for the proxies' training and for every scorer. :func:`release_banks`
    lets them go."""
    key = (id(inputs), normalizer, str(device))
    bank = _BANKS.get(key)
    if bank is None or bank._host is not inputs:
        bank = _BANKS[key] = InputBank(inputs, normalizer, device)
    return bank


def release_banks() -> None:
    """Drop the shared banks (and their GPU copies of the inputs)."""
    _BANKS.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class InputBank:
    """All inputs, resident on the device when they fit, else read from the memory map per batch.

    :meth:`batch` serves one batch; :meth:`batches` serves a sequence of them, and when the inputs are
    not resident it gathers the next batch on the host (into pinned memory on CUDA) in a background
    thread while the caller computes on the current one.
    """

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
            return self.normalizer(self._data[index.to(self.device)])
        return self._upload(self._gather(index))

    def batches(self, indices: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """:meth:`batch` of each index tensor of ``indices`` in turn, the next one prefetched."""
        if self.resident:
            yield from (self.batch(index) for index in indices)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="curator-prefetch") as worker:
            pending = None
            for index in indices:
                ready, pending = pending, worker.submit(self._gather, index)
                if ready is not None:
                    yield self._upload(ready.result())
            if pending is not None:
                yield self._upload(pending.result())

    def _gather(self, index: torch.Tensor) -> torch.Tensor:
        """Raw rows ``index`` from the host array, as a (pinned, on CUDA) CPU tensor."""
        idx = index.cpu().numpy()
        order = np.argsort(idx)  # sorted reads are kinder to the memory map
        raw = np.empty((len(idx),) + self._host.shape[1:], dtype=self._host.dtype)
        raw[order] = self._host[idx[order]]
        raw = torch.from_numpy(raw)
        return raw.pin_memory() if self.device.type == "cuda" else raw

    def _upload(self, raw: torch.Tensor) -> torch.Tensor:
        return self.normalizer(raw.to(self.device, non_blocking=True))
