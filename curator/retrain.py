"""Train the final model on the curated data: ``erm``, ``clean``, ``reweight``, ``jtt``, ``mat`` (and the
``groupdro`` oracle when true groups are known), select it on validation worst-group accuracy, and report
it side by side with ERM trained on the same budget.

    result = curator.retrain("dataset/", run="runs/x", method="mat", eval="test/")
    result.metrics["results"]["mat"]["worst_group_accuracy"]

The pieces are usable alone: :func:`fit` (the training loop), :func:`predict_logits`,
:func:`accuracy_report`, and :class:`Retrainer`, which loads the data once and trains any method on it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .atomic import atomic_path, write_json
from .data import Examples, load_dataset
from .device import select_device
from .engine.inputs import InputBank, Normalizer
from .engine.models import ModelSpec, build_model
from .engine.training import _lr_at
from .errors import ConfigError, DatasetError, RunError
from .store import Run

METHODS = ("erm", "clean", "reweight", "jtt", "mat", "groupdro")
HOLDOUTS = ("proxies", "xrm")
SELECTIONS = ("worst-group", "accuracy", "last")


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Hyper:
    """The settings of one training run."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9


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
    small sets so each epoch has ~30 steps). width: channels of the first conv (the proxies use 16).
    taus/floor/holdout: MAT temperature grid, probability floor, source of held-out logits.
    jtt_epochs/upweights: JTT's early-stopped identification model and its error-set upsampling grid λ.
    dro_step: GroupDRO's exponentiated-gradient step on the group weights.
    val_fraction: share of DATASET held out for validation when no validation set is given.
    selection: ``worst-group`` (true groups if the validation set has a ``group`` column, else class ×
    held-out-correct), ``accuracy``, or ``last`` (no selection: the last epoch of a single setting).
    """

    epochs: int = 8
    batch_size: int | None = None
    lrs: tuple[float, ...] = (0.05,)
    weight_decays: tuple[float, ...] = (5e-4,)
    width: int = 16
    taus: tuple[float, ...] = (1.0,)
    floor: float = 0.01
    holdout: str = "proxies"
    jtt_epochs: int = 1
    upweights: tuple[float, ...] = (10.0,)
    dro_step: float = 0.01
    val_fraction: float = 0.1
    selection: str = "worst-group"
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen: normalise in place)
        set_("lrs", _grid("--lr", self.lrs))
        set_("weight_decays", _grid("--weight-decay", self.weight_decays, positive=False))
        set_("taus", _grid("--tau", self.taus))
        set_("upweights", _grid("--upweight", self.upweights))
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: need at least 1 epoch")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be positive")
        if self.width < 1:
            raise ConfigError(f"--width {self.width}: must be positive")
        if not 0 < self.floor < 1:
            raise ConfigError(f"--floor {self.floor}: must be in (0, 1)")
        if self.holdout not in HOLDOUTS:
            raise ConfigError(f"--holdout {self.holdout!r}: expected one of {', '.join(HOLDOUTS)}")
        if not 1 <= self.jtt_epochs <= self.epochs:
            raise ConfigError(f"--jtt-epochs {self.jtt_epochs}: must be between 1 and --epochs ({self.epochs})")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction {self.val_fraction}: must be in [0, 1)")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"--select {self.selection!r}: expected one of {', '.join(SELECTIONS)}")

    def hyper(self, n_train: int, lr: float, weight_decay: float, epochs: int | None = None) -> Hyper:
        batch = self.batch_size or min(128, max(16, n_train // 30))
        return Hyper(epochs=epochs or self.epochs, batch_size=batch, lr=lr, weight_decay=weight_decay)


# --------------------------------------------------------------------------- the training loop

class TensorBank:
    """In-memory (N, ...) float inputs used as they are (no normalisation): the ``InputBank`` interface."""

    def __init__(self, inputs, device: torch.device = torch.device("cpu")):
        self.data = torch.as_tensor(np.asarray(inputs, dtype=np.float32)).to(device)
        self.device = device

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        return self.data[torch.as_tensor(index).to(self.device)]


@dataclass
class Fitted:
    """What :func:`fit` did: the kept epoch (1-based), its validation score and every epoch's score."""

    epoch: int
    score: tuple | None
    history: list = field(default_factory=list)


def fit(model: nn.Module, bank, rows: np.ndarray, labels: np.ndarray, hyper: Hyper, *, seed: int = 0,
        device: torch.device = torch.device("cpu"), weights: np.ndarray | None = None,
        log_prior: np.ndarray | None = None, groups: np.ndarray | None = None, dro_step: float = 0.01,
        select: Callable[[nn.Module], tuple] | None = None) -> Fitted:
    """Train ``model`` in place with SGD (Nesterov momentum, warm-up + cosine) and return what was kept.

    rows: (n,) indices into ``bank``; labels: (n,) int targets of those rows.
    weights: (n,) sampling weights — each epoch draws n rows with replacement in proportion (upsampling).
    log_prior: (n, C) MAT adjustment added (detached) to the logits in the loss only.
    groups: (n,) int group of each row for GroupDRO (Sagawa et al. 2020): the loss is Σ_g q_g ℓ_g with
    q_g ← q_g·exp(dro_step·ℓ_g) after every batch.
    select: called after every epoch; the epoch with the highest returned tuple is restored at the end.
    """
    from .mat import adjusted_cross_entropy

    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    if n == 0:
        raise ConfigError("no training examples left (every row was dropped)")
    y_all = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
    rows_dev = torch.as_tensor(rows)
    prior = torch.as_tensor(log_prior, device=device) if log_prior is not None else None
    group_t = torch.as_tensor(np.asarray(groups, dtype=np.int64), device=device) if groups is not None else None
    q = torch.ones(int(group_t.max()) + 1, device=device) / (int(group_t.max()) + 1) if groups is not None else None
    draw = torch.as_tensor(np.asarray(weights, dtype=np.float64)) if weights is not None else None
    gen = torch.Generator().manual_seed(seed)
    batch = min(hyper.batch_size, n)
    opt = torch.optim.SGD(model.parameters(), lr=hyper.lr, momentum=hyper.momentum, nesterov=True,
                          weight_decay=hyper.weight_decay)
    use_bf16 = device.type == "cuda"
    total, step = hyper.epochs * math.ceil(n / batch), 0
    best, best_state, history = None, None, []
    kept = hyper.epochs
    for epoch in range(hyper.epochs):
        model.train()
        order = (torch.multinomial(draw, n, replacement=True, generator=gen) if draw is not None
                 else torch.randperm(n, generator=gen))
        for start in range(0, n, batch):
            pos = order[start:start + batch]
            x = bank.batch(rows_dev[pos])
            pos_dev = pos.to(device)
            y = y_all[pos_dev]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(x)
            logits = logits.float()
            if prior is not None:
                losses = adjusted_cross_entropy(logits, prior[pos_dev], y, reduction="none")
            else:
                losses = F.cross_entropy(logits, y, reduction="none")
            if q is not None:
                g = group_t[pos_dev]
                group_loss = torch.zeros_like(q).index_add(0, g, losses)
                counts = torch.zeros_like(q).index_add(0, g, torch.ones_like(losses))
                group_loss = group_loss / counts.clamp_min(1)
                with torch.no_grad():
                    q = q * torch.exp(dro_step * group_loss.detach() * (counts > 0))
                    q = q / q.sum()
                loss = (q * group_loss).sum()
            else:
                loss = losses.mean()
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, hyper.lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if select is not None:
            score = tuple(select(model))
            history.append(score)
            if best is None or score > best:
                best, kept = score, epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return Fitted(kept, best, history)


@torch.no_grad()
def predict_logits(model: nn.Module, bank, rows: np.ndarray, *, device: torch.device = torch.device("cpu"),
                   batch: int = 512) -> np.ndarray:
    """(n, C) float32 logits of ``model`` alone (no adjustment) for ``rows`` of ``bank``."""
    was_training = model.training
    model.eval()
    rows = np.asarray(rows, dtype=np.int64)
    out = []
    for start in range(0, len(rows), batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(model(bank.batch(torch.from_numpy(rows[start:start + batch]))).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------- evaluation

def accuracy_report(predicted: np.ndarray, labels: np.ndarray, classes: list[str],
                    groups: np.ndarray | None = None) -> dict:
    """Overall, per-class and (with ``groups``, (N,) names) per-group and worst-group accuracy."""
    correct = np.asarray(predicted) == np.asarray(labels)
    report = {"n": int(len(correct)), "accuracy": float(correct.mean()) if len(correct) else None,
              "per_class": {}}
    for j, name in enumerate(classes):
        mask = labels == j
        report["per_class"][name] = float(correct[mask].mean()) if mask.any() else None
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        per_group = {g: {"accuracy": float(correct[groups == g].mean()), "n": int((groups == g).sum())}
                     for g in sorted(set(groups))}
        worst = min(per_group, key=lambda g: (per_group[g]["accuracy"], g))
        report.update(per_group=per_group, worst_group=worst, worst_group_accuracy=per_group[worst]["accuracy"])
    return report


def inferred_groups(labels: np.ndarray, holdout_logits: np.ndarray, classes: list[str]) -> np.ndarray:
    """(N,) group names ``<class>|held-out-right`` / ``<class>|held-out-wrong``."""
    right = np.asarray(holdout_logits).argmax(1) == labels
    return np.array([f"{classes[y]}|held-out-{'right' if r else 'wrong'}" for y, r in zip(labels, right)])


# --------------------------------------------------------------------------- data

def _load(data, option: str, loader: dict) -> Examples:
    if isinstance(data, Examples):
        return data
    try:
        return load_dataset(data, **loader)
    except DatasetError as exc:
        raise DatasetError(f"{option}: {exc}") from exc


def _aligned(examples: Examples, train: Examples, option: str) -> np.ndarray:
    """Labels of ``examples`` in ``train``'s class order; inputs must match ``train``'s."""
    if examples.kind != train.kind or tuple(examples.inputs.shape[1:]) != tuple(train.inputs.shape[1:]):
        raise DatasetError(f"{option} {examples.root}: inputs {examples.kind} {tuple(examples.inputs.shape[1:])} "
                           f"do not match DATASET's {train.kind} {tuple(train.inputs.shape[1:])}")
    index = {c: i for i, c in enumerate(train.classes)}
    unknown = sorted(set(examples.classes) - set(index))
    if unknown:
        raise DatasetError(f"{option} {examples.root}: class {unknown[0]!r} is not a class of DATASET")
    return np.array([index[examples.classes[j]] for j in examples.labels], dtype=np.int64)


def _groups(examples: Examples) -> np.ndarray | None:
    meta = examples.metadata
    if "group" in meta.columns and len(meta) == len(examples):
        return meta["group"].astype(str).to_numpy()
    return None


def read_applied_reviews(path: str | Path, examples: Examples) -> tuple[np.ndarray, np.ndarray]:
    """The corrected manifest of ``curator apply`` (CSV id,path,label) as (rows of DATASET, labels).

    Examples absent from the file were removed in review; labels are class names of DATASET.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--applied-reviews {path}: file does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise ConfigError(f"--applied-reviews {path}: cannot be read as CSV ({exc})") from exc
    for column in ("id", "label"):
        if column not in frame.columns:
            raise ConfigError(f"--applied-reviews {path}: missing column {column!r}")
    where = {i: k for k, i in enumerate(examples.ids)}
    unknown = [i for i in frame["id"] if i not in where]
    if unknown:
        raise ConfigError(f"--applied-reviews {path}: id {unknown[0]!r} is not in DATASET")
    index = {c: k for k, c in enumerate(examples.classes)}
    bad = [lab for lab in frame["label"] if lab not in index]
    if bad:
        raise ConfigError(f"--applied-reviews {path}: label {bad[0]!r} is not a class of DATASET")
    if frame["id"].duplicated().any():
        raise ConfigError(f"--applied-reviews {path}: id {frame['id'][frame['id'].duplicated()].iloc[0]!r} repeats")
    return (frame["id"].map(where).to_numpy(np.int64), frame["label"].map(index).to_numpy(np.int64))


@dataclass
class EvalSet:
    """Rows of a bank to evaluate on, with labels in training class order and optional group names."""

    name: str
    bank: object
    rows: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    group_source: str | None      # "true", "inferred" or None


@dataclass
class MethodResult:
    """One trained method: the model, its chosen settings, and its validation and evaluation reports."""

    method: str
    model: nn.Module
    selected: dict
    val: dict | None
    eval: dict
    info: dict
    seconds: float

    def summary(self) -> dict:
        return {**self.eval, "selected": self.selected, "val": self.val, "training": self.info,
                "seconds": round(self.seconds, 1)}


# --------------------------------------------------------------------------- the methods

class Retrainer:
    """DATASET, its run, validation and evaluation sets loaded once; :meth:`train` trains one method.

    dataset/eval/val: paths (any layout curator reads) or :class:`Examples`. run: a finished
    ``curator score`` run over DATASET (path or :class:`Run`); rows are matched by example id.
    Without ``val``, ``config.val_fraction`` of DATASET (stratified by label) is held out for validation.
    """

    def __init__(self, dataset, *, run=None, eval=None, val=None, applied_reviews=None,
                 config: RetrainConfig = RetrainConfig(), device: str = "auto", loader: dict | None = None,
                 log: Callable[[str], None] | None = None):
        self.config = config
        self.device = select_device(device)
        self.say = log or (lambda msg: None)
        loader = loader or {}
        self.data = _load(dataset, "DATASET", loader)
        self.classes = self.data.classes
        self.run = Run(run) if run is not None and not isinstance(run, Run) else run
        self.applied_reviews = applied_reviews
        self.normalizer = Normalizer.fit(self.data.inputs, self.data.kind)
        self.bank = InputBank(self.data.inputs, self.normalizer, self.device)
        self.spec = ModelSpec(kind="cnn" if self.data.kind == "image" else "mlp",
                              input_shape=tuple(self.data.inputs.shape[1:]), n_classes=len(self.classes),
                              width=config.width)
        self.train_groups = _groups(self.data)
        n = len(self.data)
        self._holdout: np.ndarray | None = None
        self._twins: list[nn.Module] | None = None
        self._run_rows: np.ndarray | None = None

        if val is not None:
            ex = _load(val, "--val", loader)
            self.train_rows = np.arange(n)
            self.val = EvalSet(f"--val {ex.root}", InputBank(ex.inputs, self.normalizer, self.device),
                               np.arange(len(ex)), _aligned(ex, self.data, "--val"), _groups(ex), None)
        elif config.val_fraction > 0 and config.selection != "last":
            from sklearn.model_selection import train_test_split

            counts = np.bincount(self.data.labels)
            strat = self.data.labels if counts[counts > 0].min() >= 2 else None
            self.train_rows, val_rows = train_test_split(np.arange(n), test_size=config.val_fraction,
                                                         random_state=config.seed, stratify=strat)
            self.train_rows, val_rows = np.sort(self.train_rows), np.sort(val_rows)
            groups = self.train_groups[val_rows] if self.train_groups is not None else None
            self.val = EvalSet(f"{config.val_fraction:.0%} of DATASET", self.bank, val_rows,
                               self.data.labels[val_rows], groups, None)
        else:
            self.train_rows, self.val = np.arange(n), None
        if self.val is not None and self.val.groups is not None:
            self.val.group_source = "true"

        if eval is not None:
            ex = _load(eval, "--eval", loader)
            groups = _groups(ex)
            self.eval = EvalSet(f"--eval {ex.root}", InputBank(ex.inputs, self.normalizer, self.device),
                                np.arange(len(ex)), _aligned(ex, self.data, "--eval"), groups,
                                "true" if groups is not None else None)
        else:
            self.eval = self.val
        if self.val is None and (len(config.lrs) > 1 or len(config.weight_decays) > 1 or len(config.taus) > 1
                                 or len(config.upweights) > 1):
            raise ConfigError("a grid (--lr/--weight-decay/--tau/--upweight with several values) needs a "
                              "validation set: give --val or a --val-fraction above 0")

    # ---- the run and held-out predictions

    def _need_run(self, why: str) -> Run:
        if self.run is None:
            raise ConfigError(f"{why} needs --run RUN (a finished `curator score` run over DATASET)")
        return self.run

    def run_rows(self) -> np.ndarray:
        """(N,) row of ``run.scores`` for every example of DATASET (matched by id)."""
        if self._run_rows is None:
            run = self._need_run("this method")
            where = {i: k for k, i in enumerate(run.scores["id"].astype(str))}
            missing = [i for i in self.data.ids if i not in where]
            if missing:
                raise RunError(f"--run {run.path}: {len(missing)} example id(s) of DATASET are not in the run, "
                               f"e.g. {missing[0]!r}; score this dataset first")
            self._run_rows = np.array([where[i] for i in self.data.ids], dtype=np.int64)
        return self._run_rows

    def holdout_logits(self) -> np.ndarray:
        """(N, C) held-out logits for every example of DATASET: the run's cross-fitted proxies
        (``artifacts/oof_logits.npy``) or, with ``holdout="xrm"``, two XRM twins trained here."""
        if self._holdout is None:
            if self.config.holdout == "xrm":
                from .mat import xrm_holdout_logits

                self.say("training XRM twins for held-out logits ...")
                hyper = self.config.hyper(len(self.data), self.config.lrs[0], self.config.weight_decays[0])
                self._holdout, self._twins = xrm_holdout_logits(
                    lambda: build_model(self.spec), self.bank, self.data.labels, len(self.classes), hyper,
                    seed=self.config.seed, device=self.device)
            else:
                run = self._need_run("--method mat with --holdout proxies")
                path = run.path / "artifacts" / "oof_logits.npy"
                if not path.exists():
                    raise RunError(f"--run {run.path}: missing artifacts/oof_logits.npy")
                logits = np.load(path)
                if logits.shape != (len(run.scores), len(self.classes)) or run.classes != self.classes:
                    raise RunError(f"--run {run.path}: its classes/oof_logits do not match DATASET's "
                                   f"{len(self.classes)} classes")
                self._holdout = logits[self.run_rows()].astype(np.float32)
        return self._holdout

    def holdout_models(self) -> list[nn.Module]:
        """Models that never saw a validation example: the twins or the run's last fold checkpoints."""
        if self.config.holdout == "xrm" and self._twins is not None:
            return self._twins
        run = self._need_run("inferred validation groups")
        art = run.path / "artifacts"
        info = json.loads((art / "model.json").read_text())
        checkpoints = json.loads((art / "checkpoints.json").read_text())
        spec = ModelSpec.from_dict(info["spec"])
        norm = info["normalizer"]
        theirs = Normalizer(norm["kind"], tuple(norm["mean"]), tuple(norm["std"]))
        last = {}
        for c in checkpoints:
            if c["epoch"] >= last.get(c["fold"], {"epoch": -1})["epoch"]:
                last[c["fold"]] = c
        models = []
        for c in last.values():
            model = build_model(spec)
            model.load_state_dict(torch.load(art / c["file"], map_location="cpu", weights_only=True))
            models.append(_Renormalized(model, self.normalizer, theirs).to(self.device))
        return models

    def _ensure_val_groups(self) -> None:
        """Infer validation groups (class × held-out-correct) when the validation set has none."""
        val = self.val
        if val is None or val.groups is not None or self.config.selection != "worst-group":
            return
        if val.bank is self.bank:                    # carved from DATASET: the held-out logits cover it
            if self.run is None and self._holdout is None:
                return
            logits = self.holdout_logits()[val.rows]
        else:
            if self.run is None and self._twins is None:
                return
            models = self.holdout_models()
            probs = sum(torch.softmax(torch.from_numpy(predict_logits(m, val.bank, val.rows, device=self.device)), 1)
                        for m in models)
            logits = np.log(probs.numpy() + 1e-12)
        val.groups = inferred_groups(val.labels, logits, self.classes)
        val.group_source = "inferred"

    def _score(self, model: nn.Module, split: EvalSet) -> dict:
        logits = predict_logits(model, split.bank, split.rows, device=self.device)
        return accuracy_report(logits.argmax(1), split.labels, self.classes, split.groups)

    def _selector(self) -> Callable[[nn.Module], tuple] | None:
        val, how = self.val, self.config.selection
        if val is None or how == "last":
            return None

        def score(model: nn.Module) -> tuple:
            report = self._score(model, val)
            if how == "worst-group" and val.groups is not None:
                return (report["worst_group_accuracy"], report["accuracy"])
            return (report["accuracy"],)
        return score

    # ---- what each method changes

    def plan(self, method: str) -> tuple[np.ndarray, np.ndarray, dict, dict]:
        """(rows, labels, fit keyword arguments, info) of ``method`` before any grid; jtt/mat add theirs."""
        rows, labels = self.train_rows, self.data.labels[self.train_rows]
        info: dict = {}
        if method == "clean":
            if self.applied_reviews is not None:
                kept, new_labels = read_applied_reviews(self.applied_reviews, self.data)
                keep = np.isin(kept, rows)
                kept, new_labels = kept[keep], new_labels[keep]
                info = {"source": f"--applied-reviews {self.applied_reviews}",
                        "dropped": int(len(rows) - len(kept)),
                        "relabelled": int((new_labels != self.data.labels[kept]).sum())}
                return kept, new_labels, {}, info
            scores = self._need_run("--method clean").scores.iloc[self.run_rows()[rows]]
            flagged = scores["is_mislabeled"].to_numpy(bool) | scores["is_outlier"].to_numpy(bool)
            info = {"source": "run flags (is_mislabeled or is_outlier)", "dropped": int(flagged.sum())}
            return rows[~flagged], labels[~flagged], {}, info
        if method == "reweight":
            return rows, labels, {"weights": self._reweight(rows, info)}, info
        if method == "groupdro":
            if self.train_groups is None:
                raise ConfigError("--method groupdro needs a 'group' column in DATASET (true groups)")
            names, codes = np.unique(self.train_groups[rows], return_inverse=True)
            info = {"groups": int(len(names))}
            return rows, labels, {"groups": codes}, info
        return rows, labels, {}, info

    def _reweight(self, rows: np.ndarray, info: dict) -> np.ndarray:
        """Sampling weights: 1 − mislabeled_score for the flagged mislabel suspects, 1 for the rest; then each
        class's spurious minority (not flagged as mislabeled) up-weighted until it carries as much weight as
        the rest of its class."""
        scores = self._need_run("--method reweight").scores.iloc[self.run_rows()[rows]]
        mis = scores["mislabeled_score"].to_numpy(np.float64)
        flagged = scores["is_mislabeled"].to_numpy(bool)
        weights = np.where(flagged, np.clip(1.0 - mis, 0.0, 1.0), 1.0)
        spurious = scores["is_spurious"].to_numpy(bool) & ~flagged     # never boost a suspected wrong label
        labels = self.data.labels[rows]
        boosts = {}
        for c in np.unique(labels):
            minority, rest = (labels == c) & spurious, (labels == c) & ~spurious
            if minority.any() and rest.any():
                boost = weights[rest].sum() / max(weights[minority].sum(), 1e-6)
                weights[minority] *= boost
                boosts[self.classes[c]] = round(float(boost), 2)
        info.update(down_weighted=int(flagged.sum()), spurious_up_weighted=int(spurious.sum()),
                    spurious_boost=boosts)
        return weights

    def _new_model(self) -> nn.Module:
        torch.manual_seed(self.config.seed)
        return build_model(self.spec).to(self.device)

    def train(self, method: str) -> MethodResult:
        """Train ``method`` over its grid, keep the best on validation, evaluate it."""
        if method not in METHODS:
            raise ConfigError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
        started = time.perf_counter()
        cfg = self.config
        rows, labels, extra, info = self.plan(method)
        if method == "mat":
            from .mat import label_given_holdout, log_prior

            holdout = self.holdout_logits()
            info["holdout"] = cfg.holdout
            info["holdout_accuracy"] = round(float((holdout.argmax(1) == self.data.labels).mean()), 4)
        self._ensure_val_groups()
        select = self._selector()
        candidates = []
        for lr in cfg.lrs:
            for wd in cfg.weight_decays:
                hyper = cfg.hyper(len(rows), lr, wd)
                if method == "mat":
                    variants = [({"tau": t}, {"log_prior": log_prior(holdout, self.data.labels, t, cfg.floor)[rows]})
                                for t in cfg.taus]
                elif method == "jtt":
                    errors = self._jtt_errors(rows, labels, cfg.hyper(len(rows), lr, wd, epochs=cfg.jtt_epochs))
                    info["error_set"] = int(errors.sum())
                    variants = [({"upweight": lam}, {"weights": np.where(errors, lam, 1.0)}) for lam in cfg.upweights]
                else:
                    variants = [({}, {})]
                for extra_hp, kwargs in variants:
                    self.say(f"{method}: lr {lr} weight decay {wd} {extra_hp or ''} ...")
                    model = self._new_model()
                    fitted = fit(model, self.bank, rows, labels, hyper, seed=cfg.seed, device=self.device,
                                 select=select, dro_step=cfg.dro_step, **extra, **kwargs)
                    chosen = {"lr": lr, "weight_decay": wd, **extra_hp, "epoch": fitted.epoch}
                    candidates.append((fitted.score or (), len(candidates), model, chosen))
        _, _, model, chosen = max(candidates, key=lambda c: (c[0], -c[1]))      # ties: the first trained
        if method == "mat":
            chosen["floor"] = cfg.floor
            table = label_given_holdout(holdout, self.data.labels, chosen["tau"])
            info["p_y_given_holdout"] = np.round(table.astype(float), 4).tolist()
        info["n_train"] = int(len(rows))
        info["batch_size"] = cfg.hyper(len(rows), chosen["lr"], chosen["weight_decay"]).batch_size
        val_report = self._score(model, self.val) if self.val is not None else None
        if val_report is not None:
            val_report = {"source": self.val.name, "groups": self.val.group_source,
                          **{k: val_report[k] for k in ("n", "accuracy", "worst_group", "worst_group_accuracy")
                             if k in val_report}}
        eval_report = self._score(model, self.eval) if self.eval is not None else {}
        if self.eval is not None:
            eval_report = {"source": self.eval.name, "groups": self.eval.group_source, **eval_report}
        return MethodResult(method, model, chosen, val_report, eval_report, info, time.perf_counter() - started)

    def _jtt_errors(self, rows: np.ndarray, labels: np.ndarray, hyper: Hyper) -> np.ndarray:
        """JTT (Liu et al. 2021) stage one: (n,) bool, the rows an early-stopped ERM model gets wrong."""
        model = self._new_model()
        fit(model, self.bank, rows, labels, hyper, seed=self.config.seed, device=self.device)
        return predict_logits(model, self.bank, rows, device=self.device).argmax(1) != labels


# --------------------------------------------------------------------------- the command's work

class _Renormalized(nn.Module):
    """A proxy that normalised raw inputs its own way, fed inputs normalised this retrain's way."""

    def __init__(self, model: nn.Module, ours: Normalizer, theirs: Normalizer):
        super().__init__()
        self.model = model
        ours_mean, ours_std = torch.tensor(ours.mean), torch.tensor(ours.std)
        theirs_mean, theirs_std = torch.tensor(theirs.mean), torch.tensor(theirs.std)
        shape = (1, -1, 1, 1) if ours.kind == "image" else (1, -1)
        # x_theirs = (x_ours·σ_ours + μ_ours − μ_theirs) / σ_theirs
        self.register_buffer("scale", (ours_std / theirs_std).view(shape))
        self.register_buffer("shift", ((ours_mean - theirs_mean) / theirs_std).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale + self.shift)


@dataclass
class RetrainResult:
    path: Path
    metrics: dict
    model: nn.Module


def default_out(name: str, method: str) -> Path:
    return Path("runs") / f"{name}-retrain-{method}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def retrain(dataset, *, method: str = "mat", run=None, eval=None, val=None, applied_reviews=None,
            out: str | Path | None = None, config: RetrainConfig | None = None, device: str = "auto",
            loader: dict | None = None, log: Callable[[str], None] | None = None, **options) -> RetrainResult:
    """Train ``method`` and an ERM baseline with the same budget; write OUT/model.pt, model.json, metrics.json.

    ``options`` are :class:`RetrainConfig` fields (``epochs=4, taus=(0.5, 1)``) overriding ``config``.
    model.pt holds the chosen method's ``state_dict`` (``torch.load(..., weights_only=True)``); model.json
    what rebuilds it (``ModelSpec``, normaliser, classes). metrics.json: see README "Retraining and MAT".
    """
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    try:
        config = replace(config or RetrainConfig(), **options)
    except TypeError as exc:
        raise ConfigError(f"retrain: {exc}") from exc
    if method in ("clean", "reweight") and run is None and not (method == "clean" and applied_reviews is not None):
        raise ConfigError(f"--method {method} needs --run RUN (a finished `curator score` run over DATASET)"
                          + (" or --applied-reviews" if method == "clean" else ""))
    if method == "mat" and config.holdout == "proxies" and run is None:
        raise ConfigError("--method mat needs --run RUN for the proxies' held-out logits (or --holdout xrm)")
    if applied_reviews is not None and method != "clean":
        raise ConfigError(f"--applied-reviews is used by --method clean only, not --method {method}")
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.exists() and any(out_path.iterdir()):
        raise ConfigError(f"--out {out_path}: already exists and is not empty; choose another directory")

    trainer = Retrainer(dataset, run=run, eval=eval, val=val, applied_reviews=applied_reviews, config=config,
                        device=device, loader=loader, log=log)
    results = {method: trainer.train(method)}
    if method != "erm":
        results["erm"] = trainer.train("erm")
    chosen = results[method]
    metrics = {
        "curator_version": __version__,
        "method": method,
        "dataset": {"path": str(trainer.data.root), "name": trainer.data.name, "n_examples": len(trainer.data),
                    "classes": trainer.classes},
        "run": str(trainer.run.path) if trainer.run is not None else None,
        "eval": {"source": trainer.eval.name, "n": int(len(trainer.eval.rows)),
                 "groups": trainer.eval.group_source} if trainer.eval is not None else None,
        "val": {"source": trainer.val.name, "n": int(len(trainer.val.rows)),
                "groups": trainer.val.group_source} if trainer.val is not None else None,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "device": trainer.device.type,
        "model": trainer.spec.to_dict(),
        "results": {name: r.summary() for name, r in results.items()},
        "gain": _gain(chosen.eval, results["erm"].eval),
    }
    out_path = out_path or default_out(trainer.data.name, method)
    out_path.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path / "model.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in chosen.model.state_dict().items()}, tmp)
    write_json(out_path / "model.json", {"method": method, "spec": trainer.spec.to_dict(),
                                         "normalizer": trainer.normalizer.to_dict(), "classes": trainer.classes})
    write_json(out_path / "metrics.json", metrics)
    return RetrainResult(out_path, metrics, chosen.model)


def _gain(method: dict, erm: dict) -> dict:
    """Method minus ERM on the evaluation set: overall and worst-group accuracy."""
    out = {}
    for key in ("accuracy", "worst_group_accuracy"):
        if method.get(key) is not None and erm.get(key) is not None:
            out[key] = round(method[key] - erm[key], 4)
    return out


def load_model(path: str | Path, device: str = "cpu") -> tuple[nn.Module, Normalizer, list[str]]:
    """Rebuild a retrained model from OUT/ (model.json + model.pt): (model in eval mode, normaliser, classes)."""
    path = Path(path)
    info = json.loads((path / "model.json").read_text())
    model = build_model(ModelSpec.from_dict(info["spec"]))
    model.load_state_dict(torch.load(path / "model.pt", map_location=device, weights_only=True))
    norm = info["normalizer"]
    return model.eval(), Normalizer(norm["kind"], tuple(norm["mean"]), tuple(norm["std"])), info["classes"]
