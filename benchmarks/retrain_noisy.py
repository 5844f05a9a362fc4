"""Noisy-label benchmark in a regime where memorisation hurts: clean test accuracy of erm, clean, reweight,
relabel and mat trained on labels with symmetric noise, beside erm on the true labels (the ceiling).

Fashion-MNIST (Debian dataset-fashion-mnist) training subset with 40% symmetric label noise (``--noise``);
the test set keeps its true labels. The final model (``--model proxy --width 32``, no augmentation, 30
epochs) is big enough and trains long enough to memorise the wrong labels, so ERM's last epoch ends far
below the ceiling. One `curator score` run (learning_speed and early_learning scorers, the proxies' default
budget) provides the flags (clean, reweight, relabel) and the held-out logits (mat). Every method trains
once on 90% of the noisy set and is reported twice from that one training: at its last epoch, and at the
epoch with the best accuracy on the other 10% (a *noisy* validation split: no clean label is used anywhere
but in the test set and the ceiling). ``gap recovered`` = (method − erm) / (ceiling − erm), last epoch.
One torch thread. Writes benchmarks/results/retrain_noisy.md.

    .venv/bin/python benchmarks/retrain_noisy.py [--n 8000] [--noise 0.4] [--epochs 30] [--width 32]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import curator  # noqa: E402
from curator.retrain import RetrainConfig, Retrainer  # noqa: E402
from publish import publish  # noqa: E402
from realdata import FASHION_CLASSES, load_fashion_mnist, symmetric_noise  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def save(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, X=images, y=labels, classes=np.array(FASHION_CLASSES))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8000, help="training images (10%% of them the noisy validation split)")
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--noise", default="0.4", help="symmetric noise rates, comma-separated")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--model", default="proxy")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--augment", default="none")
    parser.add_argument("--tau", default="1", help="MAT temperature grid, comma-separated")
    parser.add_argument("--relabel-confidence", type=float, default=0.5)
    parser.add_argument("--methods", default="erm,clean,reweight,relabel,mat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--root", type=Path, default=Path("runs/bench-retrain/noisy"))
    parser.add_argument("--results", type=Path, default=RESULTS / "retrain_noisy.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.perf_counter()
    say = lambda m: print(m, flush=True)  # noqa: E731
    rng = np.random.default_rng(args.seed)
    images, labels = load_fashion_mnist("train")
    keep = np.sort(rng.choice(len(labels), args.n, replace=False))
    images, labels = images[keep], labels[keep]
    test_x, test_y = load_fashion_mnist("t10k")
    pick = np.sort(rng.choice(len(test_y), min(args.n_test, len(test_y)), replace=False))
    if args.root.exists():
        shutil.rmtree(args.root)
    test = save(args.root / "test.npz", test_x[pick], test_y[pick])
    config = RetrainConfig(epochs=args.epochs, model=args.model, width=args.width, augment=args.augment,
                           selection="accuracy", seed=args.seed, relabel_confidence=args.relabel_confidence,
                           taus=tuple(float(t) for t in args.tau.split(",")))
    rates = [float(r) for r in args.noise.split(",")]

    def row(result) -> dict:
        by = result.selections
        return {"last": by["last"]["accuracy"], "selected": by["accuracy"]["accuracy"],
                "epoch": by["accuracy"]["selected"]["epoch"], "seconds": round(result.seconds)}

    results, notes = {}, []
    clean = save(args.root / "clean.npz", images, labels)
    ceiling_trainer = Retrainer(clean, eval=test, config=config, device=args.device, log=say)
    ceiling = ceiling_trainer.train("erm")
    say(f"ceiling: {row(ceiling)}")
    for rate in rates:
        name = f"{rate:.0%} noise"
        noisy = symmetric_noise(labels, rate, len(FASHION_CLASSES), np.random.default_rng(args.seed + 1))
        data = save(args.root / f"noisy{int(rate * 100)}.npz", images, noisy)
        t0 = time.perf_counter()
        run = curator.score(data, out=args.root / f"run{int(rate * 100)}", scorers="learning_speed,early_learning",
                            seed=args.seed, device=args.device, threads=1, progress=False)
        flagged = run.scores["is_mislabeled"].to_numpy(bool)
        flipped = noisy != labels
        notes.append(f"{name}: `curator score` {time.perf_counter() - t0:.0f}s, proxy out-of-fold accuracy "
                     f"{run.manifest['proxy']['oof_accuracy']:.3f}; {flagged.sum()} flagged mislabeled "
                     f"(precision {(flagged & flipped).sum() / max(flagged.sum(), 1):.3f}, recall "
                     f"{(flagged & flipped).sum() / flipped.sum():.3f}), {int(run.scores['is_outlier'].sum())} outliers")
        say(notes[-1])
        trainer = Retrainer(data, run=run, eval=test, config=config, device=args.device, log=say)
        for method in args.methods.split(","):
            rows, train_labels, _, _ = trainer.plan(method)
            r = trainer.train(method)
            results.setdefault(method, {})[name] = {**row(r), "n_train": len(rows),
                                                    "label_precision": float((train_labels == labels[rows]).mean())}
            say(f"{name} {method}: {results[method][name]}")

    total = time.perf_counter() - started
    lines = ["## Retraining benchmark: symmetric label noise, memorising regime (Fashion-MNIST)", "",
             f"Command: `.venv/bin/python benchmarks/retrain_noisy.py --n {args.n} --noise {args.noise} "
             f"--epochs {args.epochs} --model {args.model} --width {args.width} --augment {args.augment} "
             f"--tau {args.tau} --relabel-confidence {args.relabel_confidence}`  ",
             f"Train {args.n} images (90% trained on, 10% a noisy validation split), clean test {len(pick)} images; "
             f"final model `{args.model}` width {args.width}, augmentation {args.augment}, {args.epochs} epochs; "
             f"one torch thread, device {ceiling_trainer.device.type}; whole benchmark {total / 60:.1f} min.",
             "", "Clean test accuracy at the last epoch (best epoch on noisy validation accuracy in brackets); "
             "`kept` is the share of the training split a method trains on, `labels right` the share of those "
             "whose training label is the true one:", ""]
    header = "| method |" + "".join(f" {c}: last (noisy-val best) | gap recovered | kept | labels right |"
                                    for c in results[next(iter(results))])
    lines += [header, "|---|" + "---|---|---|---|" * len(rates)]
    for method, by_rate in results.items():
        cells = []
        for c, r in by_rate.items():
            erm = results["erm"][c]["last"]
            gap = ceiling.selections["last"]["accuracy"] - erm
            recovered = (r["last"] - erm) / gap if gap > 0 else float("nan")
            cells.append(f" {r['last']:.3f} ({r['selected']:.3f}) | {recovered:+.0%} | "
                         f"{r['n_train'] / results['erm'][c]['n_train']:.0%} | {r['label_precision']:.3f} |")
        lines.append(f"| {method} |" + "".join(cells))
    ceiling_row = row(ceiling)
    lines.append("| erm on the true labels (ceiling) |" + "".join(
        f" {ceiling_row['last']:.3f} ({ceiling_row['selected']:.3f}) | | 100% | 1.000 |" for _ in rates))
    lines += [""] + [f"- {n}" for n in notes]
    lines += [f"- seconds per method ({c}): " + ", ".join(f"{m} {by[c]['seconds']}" for m, by in results.items())
              + f", ceiling {ceiling_row['seconds']}" for c in results["erm"]]
    publish(args.results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
