"""Noisy-label benchmark: clean test accuracy of erm, clean, reweight and mat trained on noisy labels, with erm
on the true labels as the ceiling.

Fashion-MNIST (Debian dataset-fashion-mnist) training subset with 20% and 40% symmetric label noise; the
test set keeps its true labels. For each noise level one `curator score` run (learning_speed and
early_learning scorers) provides the flags (clean, reweight) and the held-out logits (mat). Model selection
on validation accuracy over a 10% split of the *noisy* training set (no clean labels are used anywhere but
in the test set and the ceiling), or ``--select last``: every model trains on all images and keeps its last
epoch, which shows what memorising the noise costs. Writes benchmarks/results/retrain_noisy.md.

    .venv/bin/python benchmarks/retrain_noisy.py [--n 10000] [--noise 0.2,0.4] [--epochs 6] [--select accuracy|last]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

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
    parser.add_argument("--n", type=int, default=10000, help="training images")
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--noise", default="0.2,0.4", help="symmetric noise rates, comma-separated")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--tau", default="1", help="MAT temperature grid, comma-separated")
    parser.add_argument("--methods", default="erm,clean,reweight,mat")
    parser.add_argument("--select", default="accuracy", choices=("accuracy", "last"),
                        help="model selection: best epoch on noisy validation accuracy, or the last epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--root", type=Path, default=Path("runs/bench-retrain/noisy"))
    parser.add_argument("--results", type=Path, default=RESULTS / "retrain_noisy.md")
    args = parser.parse_args()

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
    config = RetrainConfig(epochs=args.epochs, selection=args.select, seed=args.seed,
                           taus=tuple(float(t) for t in args.tau.split(",")))

    columns, results, notes = [], {}, []
    for rate in (float(r) for r in args.noise.split(",")):
        name = f"{rate:.0%} noise"
        columns.append(name)
        noisy = symmetric_noise(labels, rate, len(FASHION_CLASSES), np.random.default_rng(args.seed + 1))
        data = save(args.root / f"noisy{int(rate * 100)}.npz", images, noisy)
        t0 = time.perf_counter()
        run = curator.score(data, out=args.root / f"run{int(rate * 100)}", scorers="learning_speed,early_learning",
                            seed=args.seed, device=args.device, progress=False)
        flagged = run.scores["is_mislabeled"].to_numpy(bool)
        flipped = noisy != labels
        notes.append(f"{name}: `curator score` {time.perf_counter() - t0:.0f}s, proxy out-of-fold accuracy "
                     f"{run.manifest['proxy']['oof_accuracy']:.3f}; {flagged.sum()} flagged mislabeled "
                     f"(precision {(flagged & flipped).sum() / max(flagged.sum(), 1):.3f}, recall "
                     f"{(flagged & flipped).sum() / flipped.sum():.3f}), {int(run.scores['is_outlier'].sum())} outliers")
        say(notes[-1])
        trainer = Retrainer(data, run=run, eval=test, config=config, device=args.device, log=say)
        for method in args.methods.split(","):
            r = trainer.train(method)
            results.setdefault(method, {})[name] = (r.eval["accuracy"], r.selected, round(r.seconds))
            say(f"{name} {method}: clean test accuracy {r.eval['accuracy']:.3f} {r.selected}")

    clean = save(args.root / "clean.npz", images, labels)
    ceiling_trainer = Retrainer(clean, eval=test, config=config, device=args.device, log=say)
    ceiling = ceiling_trainer.train("erm")
    total = time.perf_counter() - started

    held_out = " (10% of them held out as a noisy validation split)" if args.select == "accuracy" else ""
    selection = ("selection of the epoch on noisy validation accuracy" if args.select == "accuracy"
                 else "no selection: the last epoch")
    lines = ["## Retraining benchmark: symmetric label noise (Fashion-MNIST)", "",
             f"Command: `.venv/bin/python benchmarks/retrain_noisy.py --n {args.n} --noise {args.noise} "
             f"--epochs {args.epochs} --tau {args.tau} --select {args.select}`  ",
             f"Train {args.n} images{held_out}, clean test {len(pick)} images; {args.epochs} epochs per model; "
             f"{selection}. "
             f"Device {ceiling_trainer.device.type}; whole benchmark {total / 60:.1f} min.", "",
             "Clean test accuracy:", "",
             "| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for method, by_rate in results.items():
        lines.append(f"| {method} | " + " | ".join(f"{by_rate[c][0]:.3f}" for c in columns) + " |")
    lines.append("| erm on the true labels (ceiling) | " + " | ".join(f"{ceiling.eval['accuracy']:.3f}"
                                                                     for _ in columns) + " |")
    lines += [""] + [f"- {n}" for n in notes]
    publish(args.results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
