"""Settings of ``curator score``: one frozen dataclass per concern, built once from the defaults, then
``curator.toml``, then the caller's arguments, and validated before anything is read or trained.

    [score]                 # any option of `curator score`: folds, epochs, device, scorers, format, ...
    epochs = 6
    [train]                 # every proxy-training setting (curator.engine.config.TrainConfig)
    weight_decay = 5e-4
    [flags]                 # flag thresholds (curator.flags.FlagConfig)
    max_flag_rate = 0.3
    [scorers.early_learning]
    beta = 0.8              # checked against the options the scorer declares, once plugins are loaded

An unknown section, key, argument or scorer option is an error naming it and the nearest valid one.
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .adapter import DatasetSettings
from .engine.backbones import check_name
from .engine.config import TrainConfig
from .errors import ConfigError, nearest
from .flags import FlagConfig

SECTIONS = ("score", "train", "flags", "scorers")


@dataclass(frozen=True)
class ScoreSettings:
    """Which scorers run, where, and how failures are treated.

    scorers:        scorer names, or None for every installed scorer
    device:         ``auto``, ``cpu``, ``cuda`` or ``mps``
    backend:        ``local`` or ``ray``; address: the Ray cluster (ray only)
    threads:        CPU cores to use (the local backend's workers; torch's threads in this process),
                    None for every core this process may run on
    scorer_timeout: seconds after which a scorer still running is left out, None for no limit
    strict:         a failing scorer or a skipped plugin stops the run instead of being recorded
    review_again_above: with ``--previous``, an example the team already reviewed comes back into the
                    queue when its queue score reaches this (0..1); None: never asked again
    """

    scorers: tuple[str, ...] | None = None
    device: str = "auto"
    backend: str = "local"
    address: str | None = None
    threads: int | None = None
    scorer_timeout: float | None = None
    strict: bool = False
    review_again_above: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scorers, str):
            names = tuple(n.strip() for n in self.scorers.split(",") if n.strip())
            object.__setattr__(self, "scorers", None if names in ((), ("all",)) else names)
        elif self.scorers is not None:
            object.__setattr__(self, "scorers", tuple(self.scorers))
        if self.device not in ("auto", "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"--device {self.device!r}: expected auto, cpu, cuda or mps")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: must be a whole number of at least 1")
        if self.scorer_timeout is not None and self.scorer_timeout <= 0:
            raise ConfigError(f"--scorer-timeout {self.scorer_timeout}: must be positive")
        if self.review_again_above is not None and not 0.0 <= self.review_again_above <= 1.0:
            raise ConfigError(f"--review-again-above {self.review_again_above}: must be in [0, 1]")


@dataclass(frozen=True)
class BackboneSettings:
    """What the fold proxies see (``--backbone``, ``--finetune``, ``--embeddings``; keys of ``[score]``).

    backbone:         ``auto`` (the README's rule: frozen EfficientNet-Lite0 for colour images of at least 96 px
                      when it is installed, else the CNN), ``cnn`` (the small CNN from scratch),
                      ``efficientnet_lite0``, ``torchvision:<builder>`` or ``torchscript:<file>``
    finetune:         0 for frozen features (heads on cached features), N to train the backbone's last N blocks
    embeddings:       a ``.npy`` (N, D) in dataset order or a ``.parquet`` with ``id`` and a vector column: the
                      user's own vectors as frozen features
    backbone_weights: None for the published weights, ``random``, or a state-dict file
    backbone_size:    the side images are resized to for the backbone, None for its own (224)
    input_space:      scorers that read the model through the backbone, on the images (e.g.
                      ``adversarial_distance``: DeepFool in input space), instead of on the features
    """

    backbone: str = "auto"
    finetune: int = 0
    embeddings: str | None = None
    backbone_weights: str | None = None
    backbone_size: int | None = None
    input_space: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.input_space, str):
            object.__setattr__(self, "input_space", tuple(n.strip() for n in self.input_space.split(",") if n.strip()))
        else:
            object.__setattr__(self, "input_space", tuple(self.input_space))
        check_name(self.backbone)
        if isinstance(self.finetune, bool) or not isinstance(self.finetune, int) or self.finetune < 0:
            raise ConfigError(f"--finetune {self.finetune!r}: expected a whole number of blocks, 0 for frozen features")
        pretrained = self.backbone not in ("cnn", "auto")
        if self.finetune and not pretrained:
            raise ConfigError(f"--finetune {self.finetune}: needs a pretrained --backbone (it is {self.backbone!r})")
        if self.embeddings is not None and (pretrained or self.finetune):
            raise ConfigError(f"--embeddings {self.embeddings}: the vectors replace the backbone; give "
                              "--embeddings or --backbone/--finetune, not both")
        if self.backbone_size is not None and self.backbone_size < 32:
            raise ConfigError(f"--backbone-size {self.backbone_size}: expected at least 32 (pixels)")
        if self.input_space and not (pretrained or self.backbone == "auto"):
            raise ConfigError(f"input_space {', '.join(self.input_space)}: needs a pretrained --backbone")


# Flat names (the options of `curator score`, and the keys of [score]) -> the section they belong to.
_FLAT = {**{f.name: "dataset" for f in fields(DatasetSettings)},
         **{f.name: "score" for f in fields(ScoreSettings)},
         **{f.name: "backbone" for f in fields(BackboneSettings)},
         **{name: "train" for name in ("folds", "epochs", "seed", "loss", "deterministic")},
         "max_flag_rate": "flags"}
_CLASSES = {"dataset": DatasetSettings, "score": ScoreSettings, "train": TrainConfig, "flags": FlagConfig,
            "backbone": BackboneSettings}


def _check_type(cls, key: str, value: Any, where: str) -> Any:
    """``value`` for field ``key`` of ``cls``, checked against its annotation (ints are accepted as
    floats); a wrong type is an error naming ``where``."""
    hint = typing.get_type_hints(cls)[key]
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return value
    for kind in allowed:
        base = typing.get_origin(kind) or kind
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base is tuple and isinstance(value, (list, tuple, str)):
            return value
        if base in (str, bool) and isinstance(value, base):
            return value
    expected = " or ".join(getattr(typing.get_origin(k) or k, "__name__", str(k)) for k in allowed)
    raise ConfigError(f"{where} = {value!r}: expected {expected}")


def _fields_of(cls) -> list[str]:
    return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class Settings:
    """Everything ``curator score`` is told, validated: build it with :meth:`build`.

    scorer_options: ``[scorers.<name>]`` tables as given; checked against each scorer's declared
    options by :func:`curator.scoring.check_scorer_options` once the plugins are loaded.
    """

    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    score: ScoreSettings = field(default_factory=ScoreSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    flags: FlagConfig = field(default_factory=FlagConfig)
    backbone: BackboneSettings = field(default_factory=BackboneSettings)
    scorer_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    config_file: str | None = None

    @classmethod
    def build(cls, config: str | Path | None = None, **arguments: Any) -> "Settings":
        """Defaults, overlaid by the ``curator.toml`` at ``config``, overlaid by ``arguments`` (the
        flat option names of ``curator score``; None means "not given")."""
        values: dict[str, dict[str, Any]] = {section: {} for section in _CLASSES}
        file = read_config(config)
        where = f"in {config}"
        for key, value in file.get("score", {}).items():
            if key not in _FLAT:
                raise ConfigError(f"unknown key {key!r} in [score] {where}{nearest(key, _FLAT)}")
            values[_FLAT[key]][key] = _check_type(_CLASSES[_FLAT[key]], key, value, f"[score] {key}")
        for section in ("train", "flags"):
            known = _fields_of(_CLASSES[section])
            for key, value in file.get(section, {}).items():
                if key not in known:
                    raise ConfigError(f"unknown key {key!r} in [{section}] {where}{nearest(key, known)}")
                values[section][key] = _check_type(_CLASSES[section], key, value, f"[{section}] {key}")
        scorer_options = file.get("scorers", {})
        for name, table in scorer_options.items():
            if not isinstance(table, dict):
                raise ConfigError(f"[scorers] {name} = {table!r} {where}: expected a table [scorers.{name}]")
        from_file = cls(**{section: _CLASSES[section](**values[section]) for section in _CLASSES},
                        scorer_options={k: dict(v) for k, v in scorer_options.items()},
                        config_file=str(config) if config is not None else None)
        return from_file.with_arguments(**arguments)

    def with_arguments(self, **arguments: Any) -> "Settings":
        """A copy with flat ``arguments`` overriding (None means "not given")."""
        changed: dict[str, dict[str, Any]] = {}
        for key, value in arguments.items():
            if key not in _FLAT:
                raise ConfigError(f"unknown argument {key!r}{nearest(key, _FLAT)}")
            if value is not None:
                section = _FLAT[key]
                changed.setdefault(section, {})[key] = _check_type(_CLASSES[section], key, value,
                                                                   f"--{key.replace('_', '-')}")
        return replace(self, **{s: replace(getattr(self, s), **kw) for s, kw in changed.items()})


def read_config(path: str | Path | None) -> dict:
    """The tables of ``curator.toml`` at ``path`` ({} for None); an unknown section is an error."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from exc
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"--config {path}: unknown section [{section}]{nearest(section, SECTIONS)} "
                              f"(sections: {', '.join(SECTIONS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"--config {path}: {section} = {table!r} is not a section [{section}]")
    return data
