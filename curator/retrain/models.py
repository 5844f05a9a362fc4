"""The final models ``curator retrain`` can train, by name (``--model``).

- ``proxy``: the proxies' own architecture (:mod:`curator.engine.models`: the small CNN for images, the MLP
  for vectors) at ``--width``.
- ``wide``: a VGG-style CNN, two conv-BN-ReLU layers per stage, channels ``width·(1, 2, 4)``, global average
  pooling. More capacity and depth than the proxy at the same width.
- ``resnet``: a small ResNet (He et al. 2016, the CIFAR layout): a stem conv, three stages of ``blocks``
  basic residual blocks with channels ``width·(1, 2, 4)`` (stride 2 between stages), global average pooling.
- a pretrained backbone (``efficientnet_lite0``, ``torchvision:<builder>``: :mod:`curator.engine.backbones`):
  every block fine-tuned under a new linear head (:class:`PretrainedNet`). It reads images in 0..255 (the
  retrainer gives it unnormalised inputs) and resizes and normalises them as the backbone was trained.

Every model exposes ``forward_features(x) -> (logits, h)`` with a single linear ``head`` on ``h``, as the
proxies do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.backbones import BackboneInput, load_backbone
from ..engine.models import ModelSpec, build_model
from ..errors import ConfigError
from .config import MODELS, is_pretrained


@dataclass(frozen=True)
class FinalModelSpec:
    """Everything that rebuilds a final model: the architecture name and its :class:`ModelSpec`."""

    architecture: str
    spec: ModelSpec

    def to_dict(self) -> dict:
        return {"architecture": self.architecture, **asdict(self.spec)}

    @classmethod
    def from_dict(cls, d: dict) -> "FinalModelSpec":
        """The inverse of :meth:`to_dict`; a dict without ``architecture`` (model.json before ``--model``)
        is the proxy architecture."""
        d = dict(d)
        architecture = d.pop("architecture", "proxy")
        return cls(architecture, ModelSpec.from_dict(d))


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class _Headed(nn.Module):
    """``body`` to a pooled feature vector ``h``, then one linear ``head``."""

    body: nn.Module
    head: nn.Linear

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.head(h), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class WideCNN(_Headed):
    """Stages of two conv-BN-ReLU layers, channels width·(1, 2, 4), 2×2 max-pooling between stages."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        channels = spec.input_shape[0]
        w = spec.width
        layers = _conv_bn_relu(channels, w) + _conv_bn_relu(w, w) + [nn.MaxPool2d(2)]
        layers += _conv_bn_relu(w, 2 * w) + _conv_bn_relu(2 * w, 2 * w) + [nn.MaxPool2d(2)]
        layers += _conv_bn_relu(2 * w, 4 * w) + _conv_bn_relu(4 * w, 4 * w)
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, spec.n_classes)


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers and an identity (or 1×1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class SmallResNet(_Headed):
    """Stem conv, three stages of ``blocks`` :class:`BasicBlock` (channels width·(1, 2, 4)), global pooling."""

    def __init__(self, spec: ModelSpec, blocks: int = 1):
        super().__init__()
        w = spec.width
        layers = _conv_bn_relu(spec.input_shape[0], w)
        c_in = w
        for stage, c_out in enumerate((w, 2 * w, 4 * w)):
            for b in range(blocks):
                layers.append(BasicBlock(c_in, c_out, stride=2 if stage > 0 and b == 0 else 1))
                c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, spec.n_classes)


class PretrainedNet(_Headed):
    """A pretrained backbone, every block trainable, then a new linear head. ``spec.backbone``:
    ``{"name", "weights", "input_size"}`` (weights None: the published ones; input_size None: the backbone's)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        info = spec.backbone or {}
        backbone = load_backbone(info["name"], info.get("weights"))
        side = info.get("input_size") or backbone.input_size
        self.body = nn.Sequential(BackboneInput(side, backbone.mean, backbone.std), *backbone.chain)
        self.body.requires_grad_(True)
        for module in self.body.modules():
            # Some checkpoints (EfficientNet-Lite's, from TensorFlow) keep BN statistics with momentum 0.01, made for
            # long ImageNet runs: over a short fine-tune on other images they would stay ImageNet's.
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is not None:
                module.momentum = max(module.momentum, 0.1)
        self.head = nn.Linear(backbone.feature_dim, spec.n_classes)


# name -> (builder, input kinds it accepts: "cnn" for (C, H, W) images, "mlp" for (D,) vectors)
ARCHITECTURES: dict[str, tuple[Callable[[ModelSpec], nn.Module], tuple[str, ...]]] = {
    "proxy": (build_model, ("cnn", "mlp")),
    "wide": (WideCNN, ("cnn",)),
    "resnet": (SmallResNet, ("cnn",)),
}
assert set(ARCHITECTURES) == set(MODELS), "config.MODELS names the architectures --model accepts"


def _architecture(name: str) -> tuple[Callable[[ModelSpec], nn.Module], tuple[str, ...]]:
    if is_pretrained(name):
        return PretrainedNet, ("cnn",)
    if name not in ARCHITECTURES:
        raise ConfigError(f"--model {name!r}: expected one of {', '.join(ARCHITECTURES)}, efficientnet_lite0 "
                          "or torchvision:<builder>")
    return ARCHITECTURES[name]


def check_architecture(architecture: str, kind: str) -> None:
    """Raise :class:`ConfigError` naming ``--model`` when ``architecture`` cannot take inputs of ``kind``."""
    kinds = _architecture(architecture)[1]
    if kind not in kinds:
        what = "images" if kind == "cnn" else "feature vectors"
        usable = [name for name, (_, k) in ARCHITECTURES.items() if kind in k]
        raise ConfigError(f"--model {architecture}: takes no {what}; for these inputs use {', '.join(usable)}")


def build_final_model(spec: FinalModelSpec) -> nn.Module:
    """A freshly initialised final model of ``spec``."""
    check_architecture(spec.architecture, spec.spec.kind)
    return _architecture(spec.architecture)[0](spec.spec)
