"""The synthetic experiment of Bayat et al. 2024 ("The Pitfalls of Memorization"), with curator's MAT.

n = 1000 training examples in d = 1800 dimensions: x = [y (core, ±1), 5·a (spurious), 1798 dims of
N(0, 0.5²)], where the spurious sign a agrees with y on 90% of training examples and 50% at test. A linear
model (logistic regression trained by curator.retrain.fit, SGD) can fit the 10% minority by memorising
their noise dimensions instead of leaning on the core feature; ERM does so, and fails the minority at test.
MAT adds the log of held-out label probabilities (from a K-fold cross-fit of the same linear model, or XRM
twins) to the logits during training and predicts with the model alone.

    .venv/bin/python benchmarks/mat_synthetic.py [--seeds 10] [--epochs 50] [--tau 1]

Writes benchmarks/results/retrain_synthetic.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from curator.retrain.holdout import cross_fitted_logits, xrm_holdout_logits
from curator.retrain.mat import label_given_holdout, log_prior
from curator.retrain import Hyper, TensorBank, fit, predict_logits
from curator.testing import linear_shortcut_data
from publish import publish

RESULTS = Path(__file__).parent / "results"


def accuracies(model: nn.Module, x: np.ndarray, y: np.ndarray, majority: np.ndarray) -> dict:
    right = predict_logits(model, TensorBank(x), np.arange(len(y))).argmax(1) == y
    return {"minority": right[~majority].mean(), "majority": right[majority].mean(), "average": right.mean()}


def one_seed(seed: int, hyper: Hyper, tau: float, floor: float, folds: int) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    (x, y, majority), test = linear_shortcut_data(1000, 0.9, rng), linear_shortcut_data(2000, 0.5, rng)
    d = x.shape[1]
    bank = TensorBank(x)
    out = {}

    def train(prior=None) -> nn.Module:
        torch.manual_seed(seed)
        model = nn.Linear(d, 2)
        fit(model, bank, np.arange(len(y)), y, hyper, seed=seed, log_prior=prior)
        return model

    erm = train()
    out["ERM"] = {**accuracies(erm, *test), "train minority": accuracies(erm, x, y, majority)["minority"]}
    sources = {f"MAT, {folds}-fold cross-fitted held-out logits":
               cross_fitted_logits(lambda: nn.Linear(d, 2), bank, y, hyper, folds=folds, seed=seed),
               "MAT, XRM twins' held-out logits":
               xrm_holdout_logits(lambda: nn.Linear(d, 2), bank, y, 2, hyper, seed=seed)[0]}
    for name, holdout in sources.items():
        mat = train(log_prior(holdout, y, tau, floor))
        right = holdout.argmax(1) == y
        out[name] = {**accuracies(mat, *test), "train minority": accuracies(mat, x, y, majority)["minority"],
                     "held-out right, minority": right[~majority].mean(),
                     "p(y|ŷ)": label_given_holdout(holdout, y, tau)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--tau", type=float, default=1.0)
    parser.add_argument("--floor", type=float, default=0.01)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS / "retrain_synthetic.md")
    args = parser.parse_args()
    torch.set_num_threads(1)       # tiny linear models: threads only add synchronisation cost

    started = time.perf_counter()
    hyper = Hyper(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=0.0)
    runs = [one_seed(s, hyper, args.tau, args.floor, args.folds) for s in range(args.seeds)]
    keys = ["minority", "majority", "average", "train minority", "held-out right, minority"]
    lines = ["## MAT on the synthetic experiment of Bayat et al. 2024", "",
             f"Command: `.venv/bin/python benchmarks/mat_synthetic.py --seeds {args.seeds} --epochs {args.epochs} "
             f"--tau {args.tau}`  ",
             f"n = 1000, d = 1800, spurious ×5 agreeing 90% (train) / 50% (test), noise σ = 0.5; linear model, "
             f"SGD {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, no weight decay; τ = {args.tau}, "
             f"floor {args.floor}. Test accuracy, mean ± std over {args.seeds} seeds "
             f"({time.perf_counter() - started:.0f}s on CPU).", "",
             "| method | " + " | ".join(k if k != "minority" else "**minority (test)**" for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for method in runs[0]:
        cells = []
        for k in keys:
            values = [r[method][k] for r in runs if k in r[method]]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    first = [m for m in runs[0] if m != "ERM"][0]
    lines += ["", f"p(y | ŷ_ho) of the first seed ({first}; rows ŷ_ho, columns y): "
              f"{np.round(runs[0][first]['p(y|ŷ)'].astype(float), 3).tolist()}"]
    publish(args.results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
