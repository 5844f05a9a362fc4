"""The methods: :class:`Retrainer` loads the data once and trains erm, clean, reweight, jtt, mat or
groupdro on it, each selected on validation."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..adapter import DatasetSettings
from ..device import select_device
from ..engine.inputs import InputBank, Normalizer
from ..engine.models import ModelSpec, build_model
from ..errors import ConfigError, RunError
from ..store import Run
from .config import METHODS, Hyper, RetrainConfig
from .data import EvalSet, aligned_labels, group_column, load_set, read_applied_reviews
from .evaluation import accuracy_report, inferred_groups
from .holdout import xrm_holdout_logits
from .loop import fit, predict_logits
from .mat import label_given_holdout, log_prior


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


class Retrainer:
    """DATASET, its run, validation and evaluation sets loaded once; :meth:`train` trains one method.

    dataset/eval/val: paths (any layout curator reads) or :class:`Examples`. run: a finished
    ``curator score`` run over DATASET (path or :class:`Run`); rows are matched by example id.
    Without ``val``, ``config.val_fraction`` of DATASET (stratified by label) is held out for validation.
    """

    def __init__(self, dataset, *, run=None, eval=None, val=None, applied_reviews=None,
                 config: RetrainConfig = RetrainConfig(), device: str = "auto", loader: DatasetSettings | None = None,
                 log: Callable[[str], None] | None = None):
        self.config = config
        self.device = select_device(device)
        self.say = log or (lambda msg: None)
        loader = loader or DatasetSettings()
        self.data = load_set(dataset, "DATASET", loader)
        self.classes = self.data.classes
        self.run = Run(run) if run is not None and not isinstance(run, Run) else run
        self.applied_reviews = applied_reviews
        self.normalizer = Normalizer.fit(self.data.inputs, self.data.kind)
        self.bank = InputBank(self.data.inputs, self.normalizer, self.device)
        self.spec = ModelSpec(kind="cnn" if self.data.kind == "image" else "mlp",
                              input_shape=tuple(self.data.inputs.shape[1:]), n_classes=len(self.classes),
                              width=config.width)
        self.train_groups = group_column(self.data)
        n = len(self.data)
        self._holdout: np.ndarray | None = None
        self._twins: list[nn.Module] | None = None
        self._run_rows: np.ndarray | None = None

        if val is not None:
            ex = load_set(val, "--val", loader)
            self.train_rows = np.arange(n)
            self.val = EvalSet(f"--val {ex.root}", InputBank(ex.inputs, self.normalizer, self.device),
                               np.arange(len(ex)), aligned_labels(ex, self.data, "--val"), group_column(ex), None)
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
            ex = load_set(eval, "--eval", loader)
            groups = group_column(ex)
            self.eval = EvalSet(f"--eval {ex.root}", InputBank(ex.inputs, self.normalizer, self.device),
                                np.arange(len(ex)), aligned_labels(ex, self.data, "--eval"), groups,
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
        theirs = Normalizer.from_dict(info["normalizer"])
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
