"""The one device-selection function."""

from __future__ import annotations

import torch

from .errors import ConfigError


def select_device(requested: str = "auto") -> torch.device:
    """Return the torch device for ``requested``: ``auto`` prefers CUDA, then MPS, then CPU."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available on this machine")
        return torch.device(requested)
    if requested == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("--device mps: MPS is not available on this machine")
        return torch.device("mps")
    if requested == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"--device {requested!r}: expected auto, cpu, cuda or mps")
