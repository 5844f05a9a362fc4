"""``curator retrain``: train a method and an ERM baseline on the same budget, write OUT/ and
report both; :func:`load_model` rebuilds the saved model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import __version__
from ..adapter import DatasetSettings
from ..atomic import atomic_path, write_json
from ..engine.inputs import Normalizer
from ..errors import ConfigError
from .config import METHODS, RetrainConfig
from .methods import Retrainer
from .models import FinalModelSpec, build_final_model

@dataclass
class RetrainResult:
    path: Path
    metrics: dict
    model: nn.Module


def default_out(name: str, method: str) -> Path:
    return Path("runs") / f"{name}-retrain-{method}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def retrain(dataset, *, method: str = "mat", run=None, eval=None, val=None, applied_reviews=None,
            out: str | Path | None = None, config: RetrainConfig | None = None, device: str = "auto",
            loader: DatasetSettings | None = None, log: Callable[[str], None] | None = None, **options) -> RetrainResult:
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
    if method in ("clean", "reweight", "relabel") and run is None and not (method == "clean" and applied_reviews is not None):
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
        "dataset": {"path": str(Path(trainer.data.source or trainer.data.root).resolve()), "name": trainer.data.name,
                    "n_examples": len(trainer.data), "classes": trainer.classes},
        "run": str(trainer.run.path.resolve()) if trainer.run is not None else None,
        "eval": {"source": trainer.eval.name, "n": int(len(trainer.eval.rows)),
                 "groups": trainer.eval.group_source} if trainer.eval is not None else None,
        "val": {"source": trainer.val.name, "n": int(len(trainer.val.rows)),
                "groups": trainer.val.group_source} if trainer.val is not None else None,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "device": trainer.device.type,
        "model": {**trainer.spec.to_dict(), "augment": config.augment, "epochs": config.epochs},
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
    model = build_final_model(FinalModelSpec.from_dict(info["spec"]))
    model.load_state_dict(torch.load(path / "model.pt", map_location=device, weights_only=True))
    return model.eval(), Normalizer.from_dict(info["normalizer"]), info["classes"]
