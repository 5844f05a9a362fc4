"""Flag benchmark: how well the flags and the review queue match what was injected, on every scenario of
``benchmarks/flag_scenarios.py`` (tuned and held-out ones apart), with cleanlab on the same out-of-fold
probabilities.

Each scenario is scored once with ``curator score`` (default settings, every installed scorer, one torch
thread) into ``RUNS/<scenario>/``; later calls reuse a finished run and re-run only the flag stage on its
saved columns and artifacts (``--rescore`` trains again). Per scenario: mislabel, outlier and spurious
precision / recall / F1, cleanlab's ``find_label_issues``, the suspected shortcut groups, and the
precision of the first 500 rows of the review queue (a row is right when its example has the issue
the row names). Where a shortcut was planted, a second table says how far any single signal could
go: the share of bias-conflicting examples the held-out proxies get right (a held-out miss is what a
shortcut group flags), and the best precision at recall 0.7 of any scorer column, or of the held-out
loss, ranked with the truth in hand.

    .venv/bin/python benchmarks/flagbench.py [--scenarios tuned|held-out|all|a,b] [--runs runs/flagbench]
        [--rescore] [--out benchmarks/results/flags.md]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import curator  # noqa: E402
from curator.context import Dynamics  # noqa: E402
from curator.flags import FlagConfig, flag  # noqa: E402
from curator.plugins import load_plugins  # noqa: E402
from curator.store import review_queue  # noqa: E402
from flag_scenarios import HELD_OUT, TUNED, make  # noqa: E402
from publish import publish  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ISSUES = ("mislabeled", "outlier", "spurious")
QUEUE_TOP = 500
TARGET_RECALL = 0.7


def prf(truth: np.ndarray, flagged: np.ndarray) -> tuple[float, float, float]:
    hits = float((truth & flagged).sum())
    p = hits / max(flagged.sum(), 1)
    r = hits / max(truth.sum(), 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def scored_run(name: str, runs: Path, seed: int, rescore: bool, threads: int) -> tuple[curator.Run, dict]:
    """The finished run of scenario ``name`` (scored now if missing) and its truth in run row order."""
    out, truth_file = runs / name, runs / f"{name}-truth.npz"
    if not rescore and (out / "manifest.json").is_file() and truth_file.is_file():
        run = curator.Run(out)
        with np.load(truth_file) as saved:
            return run, {k: saved[k] for k in saved.files}
    runs.mkdir(parents=True, exist_ok=True)
    if name == "demo":
        from demo import build

        data = runs / "demo-data"
        build(data, 10000, 0.1, seed)
        table = pd.read_csv(runs / "demo-data-truth.csv")
        flipped = dict(zip(table["id"], table["flipped"]))
        truth_of = lambda run: {"mislabeled": run.scores["id"].map(flipped).to_numpy(bool)}  # noqa: E731
    else:
        x, y, classes, truth = make(name, seed)
        data = runs / f"{name}.npz"
        ids = np.array([f"{i:06d}" for i in range(len(y))])
        np.savez(data, X=x, y=y, classes=np.array(classes), ids=ids)
        index = {i: k for k, i in enumerate(ids)}
        truth_of = lambda run: {k: v[run.scores["id"].map(index).to_numpy()] for k, v in truth.items()}  # noqa: E731
    shutil.rmtree(out, ignore_errors=True)
    print(f"[{name}] curator score -> {out}", flush=True)
    run = curator.score(data, out=out, seed=seed, threads=threads, progress=False)
    truth = {k: np.asarray(v, bool) for k, v in truth_of(run).items()}
    for k in ISSUES:
        truth.setdefault(k, np.zeros(len(run.scores), bool))
    np.savez(truth_file, **truth)
    return run, truth


def early_learning_target(artifacts: Path, beta: float = 0.7) -> np.ndarray:
    """(N, C) the early-learning target the run's flag stage read; runs made before the engine recorded
    it during training get it from their per-epoch logits."""
    dynamics = Dynamics(artifacts)
    if (artifacts / "dynamics_ema.npy").is_file():
        return dynamics.ema_probs()
    logits = np.load(artifacts / "dynamics_logits.npy", mmap_mode="r")
    target = np.zeros(logits.shape[1:])
    for epoch in logits:
        z = np.asarray(epoch, np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        target = beta * target + (1 - beta) * p / p.sum(axis=1, keepdims=True)
    return (target / (1 - beta ** len(logits))).astype(np.float32)


def flag_inputs(run: curator.Run) -> dict:
    """Everything the flag stage of ``run`` read, rebuilt from its run directory."""
    registry = load_plugins()
    scores = run.scores
    ran = [name for name, entry in run.manifest["scorers"].items() if entry.get("status") == "done"]
    issues = {f"score_{col}": kinds for name in ran if name in registry
              for col, kinds in registry[name].record.column_issues().items() if f"score_{col}" in scores}
    art = run.path / "artifacts"
    labels = np.array([run.classes.index(c) for c in scores["label"]])
    return dict(columns={c: scores[c].to_numpy(np.float32) for c in issues}, issues=issues,
                oof_probs=run.oof_probs, labels=labels, classes=run.classes, ids=list(scores["id"]),
                insample_probs=early_learning_target(art),
                oof_logits=np.load(art / "oof_logits.npy"), embeddings=np.load(art / "embeddings.npy"),
                folds=np.load(art / "folds.npy"))


def reflag(run: curator.Run, inputs: dict, config: FlagConfig) -> tuple[pd.DataFrame, object]:
    """scores.parquet with the issue columns recomputed by the current flag rules; and the Flags."""
    args = dict(inputs)
    flags = flag(args.pop("columns"), args.pop("issues"), args.pop("oof_probs"), args.pop("labels"),
                 args.pop("classes"), args.pop("ids"), config, **args)
    scores = run.scores.drop(columns=[c for c in flags.table.columns if c in run.scores.columns])
    return pd.concat([scores, flags.table], axis=1), flags


def evaluate(name: str, scores: pd.DataFrame, flags, truth: dict, oof_probs: np.ndarray, labels: np.ndarray) -> dict:
    from cleanlab.filter import find_label_issues

    row = {"scenario": name, "n": len(scores)}
    for issue in ISSUES:
        flagged = scores[f"is_{issue}"].to_numpy(bool)
        row[issue] = (int(truth[issue].sum()), int(flagged.sum()), *prf(truth[issue], flagged))
    if truth["mislabeled"].any():
        row["cleanlab"] = prf(truth["mislabeled"], find_label_issues(labels, oof_probs))
    if truth["spurious"].any():
        row["spurious_as_mislabeled"] = float((truth["spurious"] & scores["is_mislabeled"].to_numpy()).sum()
                                              / truth["spurious"].sum())
    row["groups"] = sum(g.kind == "shortcut" for g in flags.spurious_groups)
    row["foreign"] = len(flags.foreign_batches)
    queue = review_queue(scores).head(QUEUE_TOP)
    at = scores.reset_index(drop=True).set_index("id").index.get_indexer(queue["id"])
    right = np.array([truth[i][k] for i, k in zip(queue["issue"], at)], bool)
    row["queue"] = (len(queue), float(right.mean()) if len(right) else float("nan"))
    return row


def precision_at_recall(truth: np.ndarray, score: np.ndarray, recall: float = TARGET_RECALL) -> float:
    """Precision of the fewest highest-scored examples that hold ``recall`` of ``truth``."""
    hits = np.cumsum(truth[np.argsort(-score, kind="stable")])
    at = int(np.searchsorted(hits, recall * truth.sum()))
    return float(hits[at] / (at + 1))


def spurious_ceiling(name: str, scores: pd.DataFrame, truth: dict, oof_probs: np.ndarray, labels: np.ndarray) -> str:
    """A row of the ceiling table: how separable the planted shortcut's bias-conflicting examples are."""
    conflicting = truth["spurious"]
    probs = np.asarray(oof_probs)
    p_label = probs[np.arange(len(labels)), labels]
    signals = {c: scores[c].to_numpy(np.float64) for c in scores.columns if c.startswith("score_")}
    signals["held-out loss"] = -np.log(np.clip(p_label, 1e-12, None))
    best = {c: precision_at_recall(conflicting, np.nan_to_num(v, nan=-np.inf)) for c, v in signals.items()}
    top = max(best, key=best.get)
    right = float((probs.argmax(1) == labels)[conflicting].mean())
    return (f"| {name} | {int(conflicting.sum())} | {right:.2f} | {top.removeprefix('score_')} | {best[top]:.3f} | "
            f"{best['held-out loss']:.3f} |")


CEILING_HEADER = ("| scenario | conflicting | held-out proxies right on them | best signal | its precision at recall "
                  f"{TARGET_RECALL} | held-out loss's |\n|---|---:|---:|---|---:|---:|")


def fmt_row(r: dict) -> str:
    cell = lambda t: f"{t[1]} / {t[0]}: {t[2]:.3f} / {t[3]:.3f} / **{t[4]:.3f}**" if t[0] else (  # noqa: E731
        f"{t[1]} flagged" if t[1] else "0")
    cleanlab = f"{r['cleanlab'][2]:.3f}" if "cleanlab" in r else ""
    instead = f"{r['spurious_as_mislabeled']:.2f}" if "spurious_as_mislabeled" in r else ""
    return (f"| {r['scenario']} | {r['n']} | {cell(r['mislabeled'])} | {cleanlab} | {cell(r['outlier'])} | "
            f"{cell(r['spurious'])} | {instead} | {r['groups']} | {r['foreign']} | {r['queue'][1]:.3f} |")


HEADER = ("| scenario | N | mislabeled: flagged / true: P / R / F1 | cleanlab F1 | outlier | spurious | "
          "conflicting flagged mislabeled | shortcut groups | foreign batches | queue top-500 precision |\n"
          "|---|---:|---|---:|---|---|---:|---:|---:|---:|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="tuned")
    parser.add_argument("--runs", type=Path, default=Path("runs/flagbench"))
    parser.add_argument("--rescore", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results file (default: print only)")
    args = parser.parse_args()
    names = {"tuned": TUNED, "held-out": HELD_OUT, "all": TUNED + HELD_OUT}.get(args.scenarios,
                                                                            tuple(args.scenarios.split(",")))
    lines, ceiling = [], []
    for group, members in (("tuned", [n for n in names if n in TUNED]), ("held out", [n for n in names if n not in TUNED])):
        if not members:
            continue
        lines += [f"\n**{group}**\n", HEADER]
        for name in members:
            run, truth = scored_run(name, args.runs, args.seed, args.rescore, args.threads)
            inputs = flag_inputs(run)
            t0 = time.perf_counter()
            scores, flags = reflag(run, inputs, FlagConfig())
            seconds = time.perf_counter() - t0
            r = evaluate(name, scores, flags, truth, inputs["oof_probs"], inputs["labels"])
            lines.append(fmt_row(r))
            print(lines[-1], f"(flag stage {seconds:.1f}s)", flush=True)
            if truth["spurious"].any():
                ceiling.append(spurious_ceiling(name, scores, truth, inputs["oof_probs"], inputs["labels"]))
    if ceiling:
        lines += ["\n**planted shortcuts: how far a single signal could go** (thresholded with the truth in hand)\n",
                  CEILING_HEADER, *ceiling]
        print("\n".join(lines[-len(ceiling) - 2:]))
    if args.out:
        publish(args.out, "## Flag benchmark\n\nCommand: `.venv/bin/python benchmarks/flagbench.py --scenarios "
                f"{args.scenarios}`\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
