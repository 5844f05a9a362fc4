"""The methods: :class:`Retrainer` loads the data once and trains erm, clean, reweight, relabel, jtt, mat or
groupdro on it, each selected on validation under every criterion it can compute (true-group and
inferred-group worst-group accuracy, accuracy), reported side by side."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..adapter import DatasetSettings
from ..device import select_device
from ..engine.backbones import load_backbone
from ..engine.inputs import InputBank, Normalizer
from ..engine.models import ModelSpec, build_model
from ..errors import ConfigError, RunError
from ..store import Run
from .augment import make_augment
from .config import METHODS, Hyper, RetrainConfig, is_pretrained
from .data import EvalSet, aligned_labels, group_column, load_set, read_applied_reviews
from .evaluation import accuracy_report, inferred_groups
from .holdout import xrm_holdout_logits
from .loop import fit, predict_logits
from .mat import label_given_holdout, log_prior
from .models import FinalModelSpec, build_final_model, check_architecture

GRID_FIELDS = ("lrs", "weight_decays", "taus", "floors", "upweights")


@dataclass
class MethodResult:
    """One trained method: the model, its chosen settings, and its validation and evaluation reports.

    model/selected/val/eval: under the configured selection criterion. selections: criterion ->
    {selected, val, eval} for every criterion the validation set allowed (``worst-group``: true groups,
    else inferred; ``worst-group-inferred``: inferred groups beside true ones; ``accuracy``) and ``last``
    (the last epoch, when a single setting was trained).
    """

    method: str
    model: nn.Module
    selected: dict
    val: dict | None
    eval: dict
    info: dict
    seconds: float
    selections: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {**self.eval, "selected": self.selected, "val": self.val, "training": self.info,
                "selections": self.selections, "seconds": round(self.seconds, 1)}


class Retrainer:
    """DATASET, its run, validation and evaluation sets loaded once; :meth:`train` trains one method.

    dataset/eval/val: paths (any layout curator reads) or :class:`Examples`. run: a finished
    ``curator score`` run over DATASET (path or :class:`Run`); rows are matched by example id.
    Without ``val``, ``config.val_fraction`` of DATASET (stratified by label) is held out for validation.
    holdout_logits: (N, C) held-out logits for MAT in DATASET's row order, from a model trained
    elsewhere, instead of the run's proxies or XRM twins (a separate validation set still takes its
    inferred groups from those).
    """

    def __init__(self, dataset, *, run=None, eval=None, val=None, applied_reviews=None,
                 config: RetrainConfig = RetrainConfig(), device: str = "auto", loader: DatasetSettings | None = None,
                 log: Callable[[str], None] | None = None, holdout_logits: np.ndarray | None = None):
        self.config = config
        self.device = select_device(device)
        self.say = log or (lambda msg: None)
        loader = loader or DatasetSettings()
        self.data = load_set(dataset, "DATASET", loader)
        self.classes = self.data.classes
        self.run = Run(run) if run is not None and not isinstance(run, Run) else run
        self.applied_reviews = applied_reviews
        kind = "cnn" if self.data.kind == "image" else "mlp"
        check_architecture(config.model, kind)
        backbone = None
        if is_pretrained(config.model):
            # Loaded here so that a missing package or weights file stops the retrain before any training.
            try:
                loaded = load_backbone(config.model, config.model_weights)
            except ConfigError as exc:        # its messages speak of --backbone, the option of `curator score`
                raise ConfigError(str(exc).replace("--backbone", "--model")) from None
            backbone = {"name": config.model, "weights": config.model_weights,
                        "input_size": config.model_size or loaded.input_size}
        # A pretrained model normalises images its own way (curator.engine.backbones.BackboneInput).
        self.normalizer = (Normalizer("identity", (), ()) if backbone else
                           Normalizer.fit(self.data.inputs, self.data.kind))
        self.bank = InputBank(self.data.inputs, self.normalizer, self.device)
        self.spec = FinalModelSpec(config.model, ModelSpec(kind=kind, input_shape=tuple(self.data.inputs.shape[1:]),
                                                           n_classes=len(self.classes), width=config.width,
                                                           backbone=backbone))
        make_augment(config.augment, self.data.kind)            # a bad --augment fails here, before training
        self.train_groups = group_column(self.data)
        n = len(self.data)
        self._holdout: np.ndarray | None = None
        self._holdout_given = holdout_logits is not None
        if holdout_logits is not None:
            given = np.asarray(holdout_logits, dtype=np.float32)
            if given.shape != (n, len(self.classes)):
                raise ConfigError(f"holdout_logits: shape {given.shape}, expected (examples, classes) = "
                                  f"({n}, {len(self.classes)}) of DATASET")
            self._holdout = given
        self._twins: list[nn.Module] | None = None
        self._run_rows: np.ndarray | None = None

        if val is not None:
            ex = load_set(val, "--val", loader)
            self.train_rows = np.arange(n)
            self.val = EvalSet(f"--val {ex.root}", InputBank(ex.inputs, self.normalizer, self.device),
                               np.arange(len(ex)), aligned_labels(ex, self.data, "--val"), group_column(ex))
        elif config.val_fraction > 0 and config.selection != "last":
            from sklearn.model_selection import train_test_split

            counts = np.bincount(self.data.labels)
            strat = self.data.labels if counts[counts > 0].min() >= 2 else None
            self.train_rows, val_rows = train_test_split(np.arange(n), test_size=config.val_fraction,
                                                         random_state=config.seed, stratify=strat)
            self.train_rows, val_rows = np.sort(self.train_rows), np.sort(val_rows)
            groups = self.train_groups[val_rows] if self.train_groups is not None else None
            self.val = EvalSet(f"{config.val_fraction:.0%} of DATASET", self.bank, val_rows,
                               self.data.labels[val_rows], groups)
        else:
            self.train_rows, self.val = np.arange(n), None

        if eval is not None:
            ex = load_set(eval, "--eval", loader)
            self.eval = EvalSet(f"--eval {ex.root}", InputBank(ex.inputs, self.normalizer, self.device),
                                np.arange(len(ex)), aligned_labels(ex, self.data, "--eval"), group_column(ex))
        else:
            self.eval = self.val
        self._check_grid(config)

    def _check_grid(self, config: RetrainConfig) -> None:
        if self.val is None and any(len(getattr(config, name)) > 1 for name in GRID_FIELDS):
            raise ConfigError("a grid (--lr/--weight-decay/--tau/--floor/--upweight with several values) needs a "
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
        """(N, C) held-out logits for every example of DATASET: the ones given to the constructor, the
        run's cross-fitted proxies (``artifacts/oof_logits.npy``) or, with ``holdout="xrm"``, two XRM
        twins trained here."""
        if self._holdout is None:
            cfg = self.config
            if cfg.holdout == "xrm":
                self.say("training XRM twins for held-out logits ...")
                hyper = cfg.hyper(len(self.data), cfg.lrs[0], cfg.weight_decays[0], epochs=cfg.holdout_epochs)
                twin = replace(self.spec.spec, width=16, backbone=None)
                self._holdout, self._twins = xrm_holdout_logits(
                    lambda: build_model(twin), self.bank, self.data.labels, len(self.classes), hyper,
                    seed=cfg.seed, device=self.device)
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

    def _infer_val_groups(self) -> None:
        """Fill in the validation set's inferred groups (class × held-out-correct) from the configured held-out
        source: the given held-out logits when validation was carved from DATASET, else the run's proxies
        (none without a run) or the XRM twins (trained here once)."""
        val = self.val
        if val is None or val.inferred is not None or self.config.selection == "last":
            return
        carved = val.bank is self.bank
        if self.config.holdout == "proxies" and self.run is None and not (carved and self._holdout_given):
            return
        holdout = self.holdout_logits()
        if carved:                                   # carved from DATASET: the held-out logits cover it
            logits = holdout[val.rows]
        else:
            probs = sum(torch.softmax(torch.from_numpy(predict_logits(m, val.bank, val.rows, device=self.device)), 1)
                        for m in self.holdout_models())
            logits = np.log(probs.numpy() + 1e-12)
        val.inferred = inferred_groups(val.labels, logits, self.classes)

    def _score(self, model: nn.Module, split: EvalSet, groups: np.ndarray | None = None) -> dict:
        logits = predict_logits(model, split.bank, split.rows, device=self.device)
        return accuracy_report(logits.argmax(1), split.labels, self.classes, groups)

    def _selector(self) -> Callable[[nn.Module], dict[str, tuple]] | None:
        """Per-epoch validation scores, the configured criterion first; None for ``last`` or no validation."""
        val, how = self.val, self.config.selection
        if val is None or how == "last":
            return None
        groups = val.selection_groups

        def score(model: nn.Module) -> dict[str, tuple]:
            logits = predict_logits(model, val.bank, val.rows, device=self.device)
            report = accuracy_report(logits.argmax(1), val.labels, self.classes, groups)
            scores = {"worst-group": (report.get("worst_group_accuracy", report["accuracy"]), report["accuracy"]),
                      "accuracy": (report["accuracy"],)}
            if val.groups is not None and val.inferred is not None:
                inferred = accuracy_report(logits.argmax(1), val.labels, self.classes, val.inferred)
                scores["worst-group-inferred"] = (inferred["worst_group_accuracy"], inferred["accuracy"])
            return {how: scores.pop(how), **scores}
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
        if method == "relabel":
            return self._relabel(rows, labels)
        if method == "reweight":
            return rows, labels, {"weights": self._reweight(rows, info)}, info
        if method == "groupdro":
            if self.train_groups is None:
                raise ConfigError("--method groupdro needs a 'group' column in DATASET (true groups)")
            names, codes = np.unique(self.train_groups[rows], return_inverse=True)
            info = {"groups": [str(g) for g in names]}
            return rows, labels, {"groups": codes}, info
        return rows, labels, {}, info

    def _relabel(self, rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict, dict]:
        """Flagged mislabel suspects whose suggested label has held-out probability >= relabel_confidence
        train on that label; the other suspects and the outliers are dropped; the rest keep their label."""
        run = self._need_run("--method relabel")
        at = self.run_rows()[rows]
        scores = run.scores.iloc[at]
        index = {c: k for k, c in enumerate(self.classes)}
        suggested = scores["suggested_label"].astype(str).map(index).to_numpy()
        flagged = scores["is_mislabeled"].to_numpy(bool)
        outlier = scores["is_outlier"].to_numpy(bool)
        if np.isnan(suggested[flagged].astype(float)).any():
            raise RunError(f"--run {run.path}: a suggested_label is not a class of DATASET")
        suggested = np.where(flagged, suggested, labels).astype(np.int64)
        confidence = run.oof_probs[at, suggested]
        confident = flagged & ~outlier & (confidence >= self.config.relabel_confidence)
        keep = ~((flagged & ~confident) | outlier)
        new_labels = np.where(confident, suggested, labels)
        info = {"source": "run flags (is_mislabeled: suggested_label; is_outlier: dropped)",
                "relabelled": int(confident.sum()), "dropped": int((~keep).sum()),
                "confidence": self.config.relabel_confidence}
        return rows[keep], new_labels[keep], {}, info

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
        return build_final_model(self.spec).to(self.device)

    def _augment(self):
        """A fresh augmentation for one training (its draws depend on the seed only, not on what trained before)."""
        return make_augment(self.config.augment, self.data.kind, seed=self.config.seed)

    def _variants(self, method: str, cfg: RetrainConfig, rows: np.ndarray, labels: np.ndarray, lr: float,
                  wd: float, info: dict) -> list[tuple[dict, dict]]:
        """(chosen settings, fit keyword arguments) of every grid point of ``method`` at (lr, wd)."""
        if method == "mat":
            holdout = self.holdout_logits()
            return [({"tau": t, "floor": f}, {"log_prior": log_prior(holdout, self.data.labels, t, f)[rows]})
                    for t in cfg.taus for f in cfg.floors]
        if method == "jtt":
            errors, _ = self.jtt_error_set(rows, labels, cfg.hyper(len(rows), lr, wd, epochs=cfg.jtt_epochs))
            info["error_set"] = int(errors.sum())
            return [({"upweight": lam}, {"weights": np.where(errors, lam, 1.0)}) for lam in cfg.upweights]
        return [({}, {})]

    def train(self, method: str, **grid) -> MethodResult:
        """Train ``method`` over its grid, keep the best on validation under each criterion, evaluate.

        grid: grid settings for this call only (``taus=(0.5,), floors=(0.05,)``; any of GRID_FIELDS).
        """
        if method not in METHODS:
            raise ConfigError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
        unknown = sorted(set(grid) - set(GRID_FIELDS))
        if unknown:
            raise ConfigError(f"train: {unknown[0]!r} is not a grid setting ({', '.join(GRID_FIELDS)})")
        started = time.perf_counter()
        cfg = replace(self.config, **grid) if grid else self.config
        self._check_grid(cfg)
        rows, labels, extra, info = self.plan(method)
        if method == "mat":
            holdout = self.holdout_logits()
            info["holdout"] = "given" if self._holdout_given else cfg.holdout
            info["holdout_accuracy"] = round(float((holdout.argmax(1) == self.data.labels).mean()), 4)
        self._infer_val_groups()
        select = self._selector()
        candidates: dict[str, list] = {}
        order = 0
        for lr in cfg.lrs:
            for wd in cfg.weight_decays:
                hyper = cfg.hyper(len(rows), lr, wd)
                for extra_hp, kwargs in self._variants(method, cfg, rows, labels, lr, wd, info):
                    self.say(f"{method}: lr {lr} weight decay {wd} {extra_hp or ''} ...")
                    model = self._new_model()
                    fitted = fit(model, self.bank, rows, labels, hyper, seed=cfg.seed, device=self.device,
                                 select=select, dro_step=cfg.dro_step, augment=self._augment(), **extra, **kwargs)
                    order += 1
                    for criterion, (score, epoch) in fitted.best.items():
                        state = fitted.states.get(criterion) or {k: v.detach().clone()
                                                                 for k, v in model.state_dict().items()}
                        chosen = {"lr": lr, "weight_decay": wd, **extra_hp, "epoch": epoch}
                        candidates.setdefault(criterion, []).append((score, -order, state, chosen, fitted))
        if order > 1 and cfg.selection != "last":
            candidates.pop("last")                 # the last epoch of which setting? only one setting has one
        selections, models = {}, {}
        for criterion, options in candidates.items():
            _, _, state, chosen, fitted = max(options, key=lambda c: (c[0], c[1]))     # ties: the first trained
            model = self._new_model()
            model.load_state_dict(state)
            model.eval()
            models[criterion] = model
            val_report = self._val_report(model, criterion)
            eval_report = self._eval_report(model)
            selections[criterion] = {"selected": chosen, "val": val_report, **eval_report}
            if fitted.group_weights is not None and criterion == next(iter(candidates)):
                info["group_weights"] = {g: round(float(q), 4) for g, q in zip(info["groups"], fitted.group_weights)}
        primary = next(iter(candidates))
        chosen = selections[primary]["selected"]
        if method == "mat":
            table = label_given_holdout(holdout, self.data.labels, chosen["tau"])
            info["p_y_given_holdout"] = np.round(table.astype(float), 4).tolist()
        info["n_train"] = int(len(rows))
        info["batch_size"] = cfg.hyper(len(rows), chosen["lr"], chosen["weight_decay"]).batch_size
        compact = {c: {k: v for k, v in s.items() if k not in ("per_class", "source", "n")} for c, s in selections.items()}
        return MethodResult(method, models[primary], chosen, selections[primary]["val"],
                            {k: v for k, v in selections[primary].items() if k not in ("selected", "val")}, info,
                            time.perf_counter() - started, compact)

    def _val_report(self, model: nn.Module, criterion: str) -> dict | None:
        """The validation summary of ``model``, on the groups ``criterion`` selected with."""
        val = self.val
        if val is None:
            return None
        inferred = criterion == "worst-group-inferred"
        groups = val.inferred if inferred else val.selection_groups
        report = self._score(model, val, groups)
        return {"source": val.name, "groups": "inferred" if inferred else val.group_source,
                **{k: report[k] for k in ("n", "accuracy", "worst_group", "worst_group_accuracy") if k in report}}

    def _eval_report(self, model: nn.Module) -> dict:
        ev = self.eval
        if ev is None:
            return {}
        return {"source": ev.name, "groups": ev.group_source, **self._score(model, ev, ev.selection_groups)}

    def jtt_error_set(self, rows: np.ndarray, labels: np.ndarray, hyper: Hyper) -> tuple[np.ndarray, nn.Module]:
        """JTT (Liu et al. 2021) stage one: ((n,) bool, the rows the early-stopped ERM model gets wrong;
        that model)."""
        model = self._new_model()
        fit(model, self.bank, rows, labels, hyper, seed=self.config.seed, device=self.device,
            augment=self._augment())
        return predict_logits(model, self.bank, rows, device=self.device).argmax(1) != labels, model


class _Renormalized(nn.Module):
    """A proxy that normalised raw inputs its own way, fed inputs normalised this retrain's way."""

    def __init__(self, model: nn.Module, ours: Normalizer, theirs: Normalizer):
        super().__init__()
        self.model = model
        theirs_mean, theirs_std = torch.tensor(theirs.mean), torch.tensor(theirs.std)
        if ours.kind == "identity":          # images in 0..255 (a pretrained final model's inputs): [0, 1] is x / 255
            ours_mean, ours_std = torch.zeros_like(theirs_mean), torch.full_like(theirs_std, 1.0 / 255.0)
        else:
            ours_mean, ours_std = torch.tensor(ours.mean), torch.tensor(ours.std)
        shape = (1, -1, 1, 1) if theirs.kind == "image" else (1, -1)
        # x_theirs = (x_ours·σ_ours + μ_ours − μ_theirs) / σ_theirs
        self.register_buffer("scale", (ours_std / theirs_std).view(shape))
        self.register_buffer("shift", ((ours_mean - theirs_mean) / theirs_std).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale + self.shift)
