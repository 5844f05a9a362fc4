"""Proxy models: a small CNN sized to the image resolution, an MLP for feature vectors.

Both expose ``forward_features(x) -> (logits, h)`` where ``h`` is the penultimate representation
fed to a single linear ``head``; scorers rely on that (closed-form last-layer gradients, embeddings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a proxy model from a checkpoint.

    kind: ``"cnn"`` for inputs shaped (C, H, W), ``"mlp"`` for (D,), ``"finetune"`` for a pretrained
    backbone's activations at its cut (C, H, W): the backbone's last blocks, then an MLP.
    backbone: for ``"finetune"``, ``{"name", "weights", "cut"}`` (:func:`curator.engine.backbones.load_backbone`
    and :meth:`~curator.engine.backbones.Backbone.cut`)
    """

    kind: str
    input_shape: tuple[int, ...]
    n_classes: int
    width: int = 32
    embedding_dim: int = 128
    backbone: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(**{**d, "input_shape": tuple(d["input_shape"])})


class Proxy(nn.Module):
    """``body`` -> ``neck`` (the embedding h) -> linear ``head``; every proxy has this shape."""

    body: nn.Module
    neck: nn.Module
    head: nn.Linear

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.neck(self.body(x))
        return self.head(h), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class SmallCNN(Proxy):
    """conv-BN-ReLU-pool blocks, channels doubling, until the feature map is at most 8 pixels wide."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        channels, height, width = spec.input_shape
        layers: list[nn.Module] = []
        c_in, c_out, side = channels, spec.width, max(height, width)
        while True:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            if side <= 8 or len(layers) >= 15:
                break
            layers.append(nn.MaxPool2d(2))
            side = (side + 1) // 2
            c_in, c_out = c_out, min(c_out * 2, 256)
        layers.append(nn.AdaptiveAvgPool2d(4))
        self.body = nn.Sequential(*layers)
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(c_out * 16, spec.embedding_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(spec.embedding_dim, spec.n_classes)


class MLP(Proxy):
    """Two hidden layers for feature vectors; the second is the embedding."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        (dim,) = spec.input_shape
        hidden = max(spec.embedding_dim, spec.width * 8)
        self.body = nn.Identity()
        self.neck = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, spec.embedding_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(spec.embedding_dim, spec.n_classes)


class FineTuneProxy(Proxy):
    """The last blocks of a pretrained backbone, from its cut on (pretrained weights, trainable), then
    the MLP's neck and a linear head. Reads the backbone's activations at the cut."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        from .backbones import load_backbone

        backbone = load_backbone(spec.backbone["name"], spec.backbone.get("weights"))
        self.body = backbone.suffix(spec.backbone["cut"]).requires_grad_(True)
        hidden = max(spec.embedding_dim, spec.width * 8)
        self.neck = nn.Sequential(nn.Linear(backbone.feature_dim, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, spec.embedding_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(spec.embedding_dim, spec.n_classes)


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised proxy (a fine-tuned one starts from the backbone's pretrained blocks)."""
    if spec.kind == "finetune":
        return FineTuneProxy(spec)
    return SmallCNN(spec) if spec.kind == "cnn" else MLP(spec)
