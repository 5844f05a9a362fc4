"""The settings of ``curator retrain``: the methods, one training run's :class:`Hyper`, and
:class:`RetrainConfig` with its grids. Imports no torch, so the command line starts quickly."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

METHODS = ("erm", "clean", "reweight", "relabel", "jtt", "mat", "groupdro")
HOLDOUTS = ("proxies", "xrm")
SELECTIONS = ("worst-group", "accuracy", "last")
MODELS = ("proxy", "wide", "resnet")          # builders in curator.retrain.models
#: Pretrained backbones --model also takes (fine-tuned whole, a new linear head): the names of --backbone.
PRETRAINED = ("efficientnet_lite0", "torchvision:<builder>")
AUGMENTS = ("auto", "none", "crop", "flip", "crop-flip")

@dataclass(frozen=True)
class Hyper:
    """The settings of one training run."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9


def is_pretrained(model: str) -> bool:
    """Whether ``--model`` names a pretrained backbone (``PRETRAINED``) rather than an architecture of ``MODELS``."""
    return model == "efficientnet_lite0" or (model.startswith("torchvision:") and len(model) > len("torchvision:"))


def _grid(name: str, values, positive: bool = True) -> tuple[float, ...]:
    values = (values,) if isinstance(values, (int, float)) else tuple(values)
    if not values:
        raise ConfigError(f"{name}: give at least one value")
    for v in values:
        if not isinstance(v, (int, float)) or v != v or (v <= 0 if positive else v < 0):
            raise ConfigError(f"{name} {v!r}: must be a {'positive' if positive else 'non-negative'} number")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class RetrainConfig:
    """Settings of ``curator retrain``. Tuples are grids: every combination is trained and the one with the
    best validation score (``selection``) is kept; the ERM baseline searches the same ``lrs`` × ``weight_decays``.

    epochs/batch_size/lrs/weight_decays: the training budget of every model (batch None: 128, or fewer for
    small sets so each epoch has ~30 steps).
    model/width: the final model's architecture (``MODELS``: ``proxy`` is the proxies' own, ``wide`` a VGG-style
    CNN, ``resnet`` a small ResNet; see ``curator.retrain.models``) and its base channel count; or a pretrained
    backbone (``PRETRAINED``: ``efficientnet_lite0``, ``torchvision:<builder>``), fine-tuned whole under a new
    linear head, ``width`` unused.
    model_weights/model_size: a pretrained model's weights (None: its published ones; ``"random"``; a state-dict
    file) and the side its input images are resized to (None: the backbone's own, 224 for both).
    augment: ``auto`` (random crops for images, nothing for vectors), ``none``, ``crop``, ``flip``, ``crop-flip``.
    taus/floors/holdout: MAT temperature and probability-floor grids, source of held-out logits.
    holdout_epochs: epochs of the XRM twins (``holdout="xrm"``; None: ``epochs``). The twins use the
    proxies' architecture at width 16 and no augmentation: the held-out model should be the cheap one.
    jtt_epochs/upweights: JTT's early-stopped identification model and its error-set upsampling grid λ.
    dro_step: GroupDRO's exponentiated-gradient step on the group weights.
    relabel_confidence: ``relabel`` takes the suggested label of a flagged example when the held-out
    probability of that label is at least this; flagged examples below it are dropped.
    val_fraction: share of DATASET held out for validation when no validation set is given.
    selection: ``worst-group`` (true groups if the validation set has a ``group`` column, else class ×
    held-out-correct), ``accuracy``, or ``last`` (no selection: the last epoch of a single setting).
    """

    epochs: int = 8
    batch_size: int | None = None
    lrs: tuple[float, ...] = (0.05,)
    weight_decays: tuple[float, ...] = (5e-4,)
    model: str = "proxy"
    width: int = 16
    model_weights: str | None = None
    model_size: int | None = None
    augment: str = "auto"
    taus: tuple[float, ...] = (1.0,)
    floors: tuple[float, ...] = (0.01,)
    holdout: str = "proxies"
    holdout_epochs: int | None = None
    jtt_epochs: int = 1
    upweights: tuple[float, ...] = (10.0,)
    dro_step: float = 0.01
    relabel_confidence: float = 0.5
    val_fraction: float = 0.1
    selection: str = "worst-group"
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen: normalise in place)
        set_("lrs", _grid("--lr", self.lrs))
        set_("weight_decays", _grid("--weight-decay", self.weight_decays, positive=False))
        set_("taus", _grid("--tau", self.taus))
        set_("floors", _grid("--floor", self.floors))
        set_("upweights", _grid("--upweight", self.upweights))
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: need at least 1 epoch")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be positive")
        if not (self.model in MODELS or is_pretrained(self.model)):
            raise ConfigError(f"--model {self.model!r}: expected one of {', '.join(MODELS + PRETRAINED)}")
        if (self.model_weights is not None or self.model_size is not None) and not is_pretrained(self.model):
            raise ConfigError(f"--model-weights/--model-size: only for a pretrained --model ({', '.join(PRETRAINED)}), "
                              f"not {self.model}")
        if self.model_size is not None and self.model_size < 16:
            raise ConfigError(f"--model-size {self.model_size}: must be at least 16 pixels")
        if self.width < 1:
            raise ConfigError(f"--width {self.width}: must be positive")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"--augment {self.augment!r}: expected one of {', '.join(AUGMENTS)}")
        for floor in self.floors:
            if not 0 < floor < 1:
                raise ConfigError(f"--floor {floor}: must be in (0, 1)")
        if self.holdout not in HOLDOUTS:
            raise ConfigError(f"--holdout {self.holdout!r}: expected one of {', '.join(HOLDOUTS)}")
        if self.holdout_epochs is not None and self.holdout_epochs < 1:
            raise ConfigError(f"--holdout-epochs {self.holdout_epochs}: need at least 1 epoch")
        if not 1 <= self.jtt_epochs <= self.epochs:
            raise ConfigError(f"--jtt-epochs {self.jtt_epochs}: must be between 1 and --epochs ({self.epochs})")
        if not 0 <= self.relabel_confidence <= 1:
            raise ConfigError(f"--relabel-confidence {self.relabel_confidence}: must be in [0, 1]")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction {self.val_fraction}: must be in [0, 1)")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"--select {self.selection!r}: expected one of {', '.join(SELECTIONS)}")

    def hyper(self, n_train: int, lr: float, weight_decay: float, epochs: int | None = None) -> Hyper:
        batch = self.batch_size or min(128, max(16, n_train // 30))
        return Hyper(epochs=epochs or self.epochs, batch_size=batch, lr=lr, weight_decay=weight_decay)
