"""Shortcut benchmark: worst-group accuracy of erm, jtt and mat (GroupDRO with the true groups as the ceiling).

Fashion-MNIST (Debian dataset-fashion-mnist) with a planted shortcut: a bright 3x3 patch sits at a
class-specific position (one of ten spots along the top and bottom edges) in 95% of each class's training
images and at another class's spot in the other 5%. In validation and test the patch sits at a random
spot, so 90% of them point at a wrong class. Groups: class x aligned/conflicting (20 groups).

One `curator.score` run over the training set provides the held-out logits for MAT (the run's
cross-fitted proxies; ``mat-xrm`` trains XRM twins instead); every method is selected on worst-group accuracy of the validation set with its
true groups, and evaluated on the test set. Writes benchmarks/results/retrain_shortcut.md.

    .venv/bin/python benchmarks/retrain_shortcut.py [--n 20000] [--epochs 6] [--tau 1] [--methods erm,jtt,mat,mat-xrm,groupdro]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import curator  # noqa: E402
from curator.retrain import RetrainConfig, Retrainer  # noqa: E402
from publish import publish  # noqa: E402
from realdata import FASHION_CLASSES, load_fashion_mnist, write_image_folder  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SPOTS = [(r, c) for r in (1, 24) for c in (1, 7, 13, 19, 24)]      # top-left corner of each class's patch


def with_patches(images: np.ndarray, spots: np.ndarray) -> np.ndarray:
    out = images.copy()
    for i, s in enumerate(spots):
        r, c = SPOTS[s]
        out[i, r:r + 3, c:c + 3] = 255
    return out


def build(root: Path, n: int, n_val: int, n_test: int, majority: float, seed: int) -> dict[str, Path]:
    """Write train/val/test manifests (path,label,group) under ``root``; returns their folders."""
    rng = np.random.default_rng(seed)
    images, labels = load_fashion_mnist("train")
    order = rng.permutation(len(labels))
    parts = {"train": order[:n], "val": order[n:n + n_val]}
    test_images, test_labels = load_fashion_mnist("t10k")
    test_pick = np.sort(rng.choice(len(test_labels), min(n_test, len(test_labels)), replace=False))
    if root.exists():
        shutil.rmtree(root)
    folders = {}
    for split in ("train", "val", "test"):
        if split == "test":
            x, y = test_images[test_pick], test_labels[test_pick]
        else:
            x, y = images[parts[split]], labels[parts[split]]
        if split == "train":
            aligned = rng.random(len(y)) < majority
            other = (y + rng.integers(1, 10, len(y))) % 10
            spots = np.where(aligned, y, other)
        else:
            spots = rng.integers(0, 10, len(y))
        x = with_patches(x, spots)
        folder = root / split
        names = [f"{i:05d}" for i in range(len(y))]
        paths = write_image_folder(folder / "images", x, y, FASHION_CLASSES, names)
        groups = [f"{FASHION_CLASSES[a]}|{'aligned' if s == a else 'conflicting'}" for a, s in zip(y, spots)]
        pd.DataFrame({"path": [f"images/{p}" for p in paths], "label": [FASHION_CLASSES[a] for a in y],
                      "group": groups}).to_csv(folder / "manifest.csv", index=False)
        folders[split] = folder
    return folders


def holdout_quality(trainer: Retrainer) -> str:
    """How well the held-out predictions single out the shortcut minority of the training set."""
    right = trainer.holdout_logits().argmax(1) == trainer.data.labels
    minority = np.char.endswith(trainer.train_groups.astype(str), "conflicting")
    return (f"held-out accuracy {right[~minority].mean():.3f} on aligned and {right[minority].mean():.3f} on "
            f"conflicting training images; conflicting images are {(minority & ~right).sum() / max((~right).sum(), 1):.0%} "
            f"of its mistakes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="training images")
    parser.add_argument("--n-val", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--majority", type=float, default=0.95, help="share of training images with the class patch")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--tau", default="1", help="MAT temperature grid, comma-separated")
    parser.add_argument("--floor", type=float, default=0.01)
    parser.add_argument("--upweight", default="10", help="JTT λ grid, comma-separated")
    parser.add_argument("--methods", default="erm,jtt,mat,mat-xrm,groupdro",
                        help="mat-xrm: MAT with held-out logits from XRM twins instead of the run's proxies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--root", type=Path, default=Path("runs/bench-retrain/shortcut"))
    parser.add_argument("--results", type=Path, default=RESULTS / "retrain_shortcut.md")
    args = parser.parse_args()

    started = time.perf_counter()
    say = lambda m: print(m, flush=True)  # noqa: E731
    folders = build(args.root / "data", args.n, args.n_val, args.n_test, args.majority, args.seed)
    say(f"data written to {args.root / 'data'} ({time.perf_counter() - started:.0f}s)")
    run_dir = args.root / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    run = curator.score(folders["train"], out=run_dir, scorers="learning_speed", seed=args.seed,
                        device=args.device, progress=False)
    score_seconds = time.perf_counter() - t0
    say(f"curator score: {score_seconds:.0f}s, proxy out-of-fold accuracy {run.manifest['proxy']['oof_accuracy']:.3f}")

    config = RetrainConfig(epochs=args.epochs, taus=tuple(float(t) for t in args.tau.split(",")), floor=args.floor,
                           upweights=tuple(float(u) for u in args.upweight.split(",")), seed=args.seed)
    trainers = {"proxies": Retrainer(folders["train"], run=run, val=folders["val"], eval=folders["test"],
                                     config=config, device=args.device, log=say)}
    rows, used = [], []
    for method in args.methods.split(","):
        holdout = "xrm" if method == "mat-xrm" else "proxies"
        if method.startswith("mat"):
            used.append(holdout)
        if holdout not in trainers:
            trainers[holdout] = Retrainer(folders["train"], run=run, val=folders["val"], eval=folders["test"],
                                          config=replace(config, holdout=holdout), device=args.device, log=say)
        result = trainers[holdout].train("mat" if method.startswith("mat") else method)
        ev = result.eval
        label = {"mat": "mat (held-out: the run's proxies)", "mat-xrm": "mat (held-out: XRM twins)",
                 "groupdro": "groupdro (oracle: true groups)"}.get(method, method)
        rows.append({"method": label, "worst-group test": ev["worst_group_accuracy"], "average test": ev["accuracy"],
                     "worst group": ev["worst_group"],
                     "conflicting test": float(np.mean([g["accuracy"] for k, g in ev["per_group"].items()
                                                        if k.endswith("conflicting")])),
                     "aligned test": float(np.mean([g["accuracy"] for k, g in ev["per_group"].items()
                                                    if k.endswith("aligned")])),
                     "val worst-group": result.val["worst_group_accuracy"],
                     "selected": ", ".join(f"{k}={v}" for k, v in result.selected.items()),
                     "seconds": round(result.seconds)})
        say(str(rows[-1]))
    quality = {h: holdout_quality(trainers[h]) for h in used}
    total = time.perf_counter() - started

    lines = ["## Retraining benchmark: planted shortcut (Fashion-MNIST)", "",
             f"Command: `.venv/bin/python benchmarks/retrain_shortcut.py --n {args.n} --epochs {args.epochs} "
             f"--tau {args.tau} --upweight {args.upweight}`  ",
             f"Train {args.n} / val {args.n_val} / test {args.n_test} images; class patch on {args.majority:.0%} of "
             f"training images, random spot in val/test. Device {trainers['proxies'].device.type}; `curator score` "
             f"{score_seconds:.0f}s (proxy out-of-fold accuracy {run.manifest['proxy']['oof_accuracy']:.3f}); "
             f"whole benchmark {total / 60:.1f} min.", "",
             "| method | worst-group test | average test | conflicting groups (mean) | aligned groups (mean) | "
             "worst group | val worst-group | selected | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        worst = r["worst group"].replace("|", "\\|")          # a bare | would split the Markdown cell
        lines.append(f"| {r['method']} | {r['worst-group test']:.3f} | {r['average test']:.3f} | "
                     f"{r['conflicting test']:.3f} | {r['aligned test']:.3f} | {worst} | "
                     f"{r['val worst-group']:.3f} | {r['selected']} | {r['seconds']} |")
    lines += ["", "Held-out predictions MAT used, on the training set:", ""]
    lines += [f"- {h}: {q}" for h, q in quality.items()]
    publish(args.results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
