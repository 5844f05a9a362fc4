"""Shortcut benchmark: worst-group accuracy of erm, jtt and mat beside the GroupDRO oracle (true groups), mean ±
std over seeds, with model selection on true and on inferred validation groups side by side.

Fashion-MNIST (Debian dataset-fashion-mnist) with a planted shortcut: a bright 3x3 patch sits at a
class-specific position (one of ten spots along the top and bottom edges) in 95% of each class's training
images and at another class's spot in the other 5%. In validation and test the patch sits at a random
spot, so 90% of them point at a wrong class. Groups: class x aligned/conflicting (20 groups).

Per seed: new data, one `curator score` run over the training set (its cross-fitted proxies give MAT's held-out
logits; ``mat-xrm`` trains XRM twins instead), then every method with the same final model and budget. Each
training is selected twice: on worst-group validation accuracy with the true groups, and with inferred groups
(class x held-out-correct; held out: the proxies, or the twins for ``mat-xrm``). ``mat-oracle`` is MAT with the
held-out logits of the patch itself (it knows each training image's patch: the most biased held-out model there
can be, so it bounds what any held-out model could give MAT with this final model). MAT's τ and floor are chosen
on the first seed's validation set (under each criterion) and reused for the other seeds, as the MAT paper's
code does. ``no-shortcut`` is ERM on the same images with the patch at a random spot in training too: what this
model and budget reach when there is no shortcut to unlearn. One torch thread. Writes
benchmarks/results/retrain_shortcut.md.

    .venv/bin/python benchmarks/retrain_shortcut.py [--n 50000] [--epochs 15] [--width 32] [--seeds 0,1,2]
        [--tau 0.5] [--floor 0.01,0.03] [--methods erm,jtt,mat,mat-xrm,groupdro,no-shortcut]
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
import torch

sys.path.insert(0, str(Path(__file__).parent))
import curator  # noqa: E402
from curator.retrain import RetrainConfig, Retrainer  # noqa: E402
from publish import mean_std, publish  # noqa: E402
from realdata import FASHION_CLASSES, load_fashion_mnist, write_image_folder  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SPOTS = [(r, c) for r in (1, 24) for c in (1, 7, 13, 19, 24)]      # top-left corner of each class's patch
SELECTIONS = {"worst-group": "true groups", "worst-group-inferred": "inferred groups"}
LABELS = {"mat": "mat (held-out: the run's proxies)", "mat-xrm": "mat (held-out: XRM twins)",
          "mat-oracle": "mat (held-out: the patch, an oracle)",
          "groupdro": "groupdro (oracle: true groups)", "no-shortcut": "erm without the shortcut (reference)"}


def with_patches(images: np.ndarray, spots: np.ndarray) -> np.ndarray:
    out = images.copy()
    for i, s in enumerate(spots):
        r, c = SPOTS[s]
        out[i, r:r + 3, c:c + 3] = 255
    return out


def build(root: Path, n: int, n_val: int, n_test: int, majority: float, seed: int) -> dict[str, Path]:
    """Write train/val/test manifests (path,label,group) under ``root``, and ``train-no-shortcut`` (the training
    images with the patch at a random spot); returns their folders."""
    rng = np.random.default_rng(seed)
    images, labels = load_fashion_mnist("train")
    order = rng.permutation(len(labels))
    parts = {"train": order[:n], "val": order[n:n + n_val]}
    test_images, test_labels = load_fashion_mnist("t10k")
    test_pick = np.sort(rng.choice(len(test_labels), min(n_test, len(test_labels)), replace=False))
    if root.exists():
        shutil.rmtree(root)
    folders = {}
    for split in ("train", "val", "test", "train-no-shortcut"):
        if split == "test":
            x, y = test_images[test_pick], test_labels[test_pick]
        else:
            x, y = images[parts["val" if split == "val" else "train"]], labels[parts["val" if split == "val" else "train"]]
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
        if split == "train":
            np.save(root / "train-spots.npy", spots)            # beside the folders: for the mat-oracle method
        groups = [f"{FASHION_CLASSES[a]}|{'aligned' if s == a else 'conflicting'}" for a, s in zip(y, spots)]
        pd.DataFrame({"path": [f"images/{p}" for p in paths], "label": [FASHION_CLASSES[a] for a in y],
                      "group": groups}).to_csv(folder / "manifest.csv", index=False)
        folders[split] = folder
    return folders


def patch_logits(data: Path, classes: list[str]) -> np.ndarray:
    """(N, C) held-out logits of the patch alone for the training set, rows in its manifest's order, columns
    in ``classes`` order: a large logit for the class whose spot holds the image's patch."""
    spots = np.load(data / "train-spots.npy")
    column = np.array([classes.index(FASHION_CLASSES[s]) for s in range(len(SPOTS))])
    return (20.0 * np.eye(len(classes), dtype=np.float32))[column[spots]]


def holdout_quality(trainer: Retrainer) -> dict:
    """How well the held-out predictions single out the shortcut minority of the training set."""
    right = trainer.holdout_logits().argmax(1) == trainer.data.labels
    minority = np.char.endswith(trainer.train_groups.astype(str), "conflicting")
    return {"aligned_right": float(right[~minority].mean()), "conflicting_right": float(right[minority].mean()),
            "mistakes_conflicting": float((minority & ~right).sum() / max((~right).sum(), 1))}


def summary(selection: dict) -> dict:
    groups = selection["per_group"]
    return {"worst": selection["worst_group_accuracy"], "average": selection["accuracy"],
            "worst_group": selection["worst_group"],
            "conflicting": float(np.mean([g["accuracy"] for k, g in groups.items() if k.endswith("conflicting")])),
            "aligned": float(np.mean([g["accuracy"] for k, g in groups.items() if k.endswith("aligned")])),
            "val": (selection["val"] or {}).get("worst_group_accuracy"), "selected": selection["selected"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50000, help="training images")
    parser.add_argument("--n-val", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--majority", type=float, default=0.95, help="share of training images with the class patch")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--model", default="proxy")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--augment", default="crop")
    parser.add_argument("--tau", default="0.5", help="MAT temperature grid (first seed), comma-separated")
    parser.add_argument("--floor", default="0.01,0.03", help="MAT floor grid (first seed), comma-separated")
    parser.add_argument("--upweight", default="10", help="JTT λ grid, comma-separated")
    parser.add_argument("--holdout-epochs", type=int, default=12, help="epochs of the XRM twins")
    parser.add_argument("--methods", default="erm,jtt,mat,mat-xrm,groupdro,no-shortcut",
                        help="mat-xrm: MAT with held-out logits from XRM twins instead of the run's proxies; "
                             "mat-oracle: MAT with the patch as its held-out model (a bound; not in the default)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--root", type=Path, default=Path("runs/bench-retrain/shortcut"))
    parser.add_argument("--results", type=Path, default=RESULTS / "retrain_shortcut.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.perf_counter()
    say = lambda m: print(m, flush=True)  # noqa: E731
    floats = lambda text: tuple(float(v) for v in text.split(","))  # noqa: E731
    config = RetrainConfig(epochs=args.epochs, model=args.model, width=args.width, augment=args.augment,
                           upweights=floats(args.upweight), holdout_epochs=args.holdout_epochs)
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[str, list[dict]]] = {}      # method -> selection -> one summary per seed
    quality: dict[str, list[dict]] = {}
    chosen_grid: dict[str, dict[str, dict]] = {}         # mat variant -> selection -> {taus, floors}
    notes = []
    for seed in seeds:
        seed_config = replace(config, seed=seed)
        root = args.root / f"seed{seed}"
        shutil.rmtree(root / "run", ignore_errors=True)           # a re-run scores the newly built data again
        folders = build(root / "data", args.n, args.n_val, args.n_test, args.majority, seed)
        t0 = time.perf_counter()
        run = curator.score(folders["train"], out=root / "run", scorers="learning_speed", seed=seed,
                            device=args.device, threads=1, progress=False)
        notes.append(f"seed {seed}: `curator score` {time.perf_counter() - t0:.0f}s, proxy out-of-fold accuracy "
                     f"{run.manifest['proxy']['oof_accuracy']:.3f}")
        say(notes[-1])
        trainers: dict[str, Retrainer] = {}

        def trainer(holdout: str, train: str = "train") -> Retrainer:
            key = f"{holdout}/{train}"
            if key not in trainers:
                given = patch_logits(root / "data", run.classes) if holdout == "oracle" else None
                trainers[key] = Retrainer(folders[train], run=run if train == "train" else None, val=folders["val"],
                                          eval=folders["test"], device=args.device, log=say, holdout_logits=given,
                                          config=replace(seed_config, holdout="xrm" if holdout == "xrm" else "proxies"))
            return trainers[key]

        for method in methods:
            holdout = {"mat-xrm": "xrm", "mat-oracle": "oracle"}.get(method, "proxies")
            base = "mat" if method.startswith("mat") else "erm" if method == "no-shortcut" else method
            t = trainer(holdout, "train-no-shortcut" if method == "no-shortcut" else "train")
            if base != "mat":
                result = t.train(base)
                per_selection = {s: summary(result.selections[s]) for s in SELECTIONS if s in result.selections}
            elif seed == seeds[0]:
                result = t.train("mat", taus=floats(args.tau), floors=floats(args.floor))
                per_selection = {s: summary(result.selections[s]) for s in SELECTIONS}
                chosen_grid[method] = {s: {"taus": (result.selections[s]["selected"]["tau"],),
                                           "floors": (result.selections[s]["selected"]["floor"],)} for s in SELECTIONS}
            else:                                         # the first seed's τ and floor, per criterion
                per_selection = {}
                for grid in {tuple(sorted(g.items())) for g in chosen_grid[method].values()}:
                    result = t.train("mat", **dict(grid))
                    per_selection.update({s: summary(result.selections[s]) for s, g in chosen_grid[method].items()
                                          if tuple(sorted(g.items())) == grid})
            if base == "mat":
                quality.setdefault(method, []).append(holdout_quality(t))
            for s, r in per_selection.items():
                results.setdefault(method, {}).setdefault(s, []).append(r)
            say(f"seed {seed} {method}: " + "; ".join(f"{s}: worst {r['worst']:.3f} average {r['average']:.3f} "
                                                       f"{r['selected']}" for s, r in per_selection.items()))
    total = time.perf_counter() - started

    lines = ["## Retraining benchmark: planted shortcut (Fashion-MNIST)", "",
             f"Command: `.venv/bin/python benchmarks/retrain_shortcut.py --n {args.n} --epochs {args.epochs} "
             f"--model {args.model} --width {args.width} --augment {args.augment} --tau {args.tau} "
             f"--floor {args.floor} --upweight {args.upweight} --holdout-epochs {args.holdout_epochs} "
             f"--methods {args.methods} --seeds {args.seeds}`  ",
             f"Train {args.n} / val {args.n_val} / test {args.n_test} images; class patch on {args.majority:.0%} of "
             f"training images, random spot in val/test. Final model `{args.model}` width {args.width}, augmentation "
             f"{args.augment}, {args.epochs} epochs, the same for every method; XRM twins {args.holdout_epochs} "
             f"epochs. One torch thread; whole benchmark {total / 60:.1f} min.", "",
             f"Test accuracy, mean ± std over seeds {args.seeds}; each training selected on validation worst-group "
             "accuracy with the true groups, and with inferred groups (class × held-out-correct):", "",
             "| method | worst-group, true-group selection | worst-group, inferred-group selection | "
             "average (true / inferred) | conflicting groups (true) | aligned groups (true) | worst-group per seed (true) |",
             "|---|---|---|---|---|---|---|"]
    for method, by in results.items():
        true, inferred = by["worst-group"], by.get("worst-group-inferred")
        lines.append(
            f"| {LABELS.get(method, method)} | {mean_std([r['worst'] for r in true])} | "
            f"{mean_std([r['worst'] for r in inferred]) if inferred else ''} | "
            f"{mean_std([r['average'] for r in true])} / "
            f"{mean_std([r['average'] for r in inferred]) if inferred else ''} | "
            f"{mean_std([r['conflicting'] for r in true])} | {mean_std([r['aligned'] for r in true])} | "
            f"{', '.join(format(r['worst'], '.3f') for r in true)} |")
    lines += ["", "Selected settings (per seed, true-group selection / inferred-group selection):", ""]
    for method, by in results.items():
        picks = [" / ".join(", ".join(f"{k}={v}" for k, v in by[s][i]["selected"].items()) for s in SELECTIONS if s in by)
                 for i in range(len(by["worst-group"]))]
        lines.append(f"- {method}: " + "; ".join(f"seed {seed}: {p}" for seed, p in zip(seeds, picks)))
    lines += ["", "Held-out predictions MAT used, on the training set (mean over seeds):", ""]
    for method, qs in quality.items():
        lines.append(f"- {LABELS[method]}: right on {np.mean([q['aligned_right'] for q in qs]):.3f} of aligned and "
                     f"{np.mean([q['conflicting_right'] for q in qs]):.3f} of conflicting images; conflicting images "
                     f"are {np.mean([q['mistakes_conflicting'] for q in qs]):.0%} of its mistakes")
    lines += [""] + [f"- {n}" for n in notes]
    publish(args.results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
