"""Training-time augmentation of image batches (``--augment``): random crops (a shift by up to ``pad``
pixels, the border repeated) and horizontal flips, drawn per example. Vectors are never augmented."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .config import AUGMENTS


class Augment:
    """``augment(x)`` for (B, C, H, W) float batches; the draws come from its own seeded generator.

    crop: shift each image by (dy, dx) ∈ [−pad, pad]², filling the uncovered border with the nearest
    edge pixels (replicated rather than zeros: a zero in normalised space is a grey frame on dark images).
    flip: mirror each image left-right with probability 1/2.
    """

    def __init__(self, crop: bool, flip: bool, pad: int = 2, seed: int = 0):
        self.crop, self.flip, self.pad = crop, flip, pad
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if self.flip:
            mirror = (torch.rand(b, generator=self.gen) < 0.5).to(x.device)
            x = torch.where(mirror.view(b, 1, 1, 1), x.flip(3), x)
        if self.crop and self.pad > 0:
            p = self.pad
            padded = F.pad(x, (p, p, p, p), mode="replicate")
            dy, dx = (torch.randint(0, 2 * p + 1, (2, b), generator=self.gen)).to(x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]       # (B, H, 1)
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]       # (B, 1, W)
            batch = torch.arange(b, device=x.device)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
        return x


def make_augment(name: str, kind: str, seed: int = 0) -> Augment | None:
    """The augmentation ``--augment name`` means for inputs of ``kind`` (``image`` or ``vector``):
    ``auto`` is ``crop`` for images and nothing for vectors; None when there is nothing to do."""
    if name not in AUGMENTS:
        raise ConfigError(f"--augment {name!r}: expected one of {', '.join(AUGMENTS)}")
    if kind != "image":
        if name not in ("auto", "none"):
            raise ConfigError(f"--augment {name}: only images are augmented; use none (or auto) for vectors")
        return None
    name = "crop" if name == "auto" else name
    if name == "none":
        return None
    return Augment(crop="crop" in name, flip="flip" in name, seed=seed)
