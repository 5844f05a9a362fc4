"""A nightly curator job for cron, Airflow or a Kubernetes CronJob: one call per night.

    python nightly_job.py DATASET --runs RUNS_DIR [--reviews FILE | --labelstudio URL [--project P]]
                          [--update-manifest] [--config curator.toml] [--epochs N]

Each night, in order, with one log line per stage (``curator-nightly stage=... status=... key=value``):

1. ``last``:    find the newest finished run in RUNS_DIR (none on the first night).
2. ``reviews``: bring in the team's answers to that run's queue: ``--reviews FILE`` (a filled-in
                ``curator export --to csv`` sheet, or Label Studio's JSON export) or ``--labelstudio URL``
                (``curator pull``, token in ``LABEL_STUDIO_API_KEY``). They land in the last run's
                ``changes.csv``.
3. ``dataset``: with ``--update-manifest``, write the relabels and removals into DATASET/manifest.csv
                (manifest-layout datasets), so tonight's run scores the corrected labels.
4. ``score``:   ``curator score DATASET --previous LAST --out RUNS_DIR/night-<UTC time>``: new examples
                are marked ``is_new``, reviewed ones ``reviewed`` and kept out of the queue.
5. ``handoff``: ``curator push`` to Label Studio with ``--labelstudio``, else ``curator export --to csv``
                (RUN/review.csv for the team).

Exit codes: 0 done; 2 bad input (a dataset, option or reviews file curator refuses: the one-line
message is logged); 1 anything else (a bug or a crash: the traceback is logged). A failed night leaves
no run directory behind, so the next night starts again from the last finished run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

import curator
from curator.apply import apply_reviews
from curator.atomic import write_csv
from curator.export import export


def log(stage: str, status: str, **fields) -> None:
    extra = " ".join(f"{key}={value}" for key, value in fields.items())
    print(f"curator-nightly stage={stage} status={status} {extra}".rstrip(), flush=True)


def last_finished_run(runs: Path) -> curator.Run | None:
    """The newest complete run under ``runs`` by its manifest's creation time (partials are ignored)."""
    finished = []
    for path in runs.glob("*/manifest.json") if runs.is_dir() else []:
        manifest = json.loads(path.read_text())
        if manifest.get("status") == "complete":
            finished.append((manifest["created"], path.parent))
    return curator.Run(max(finished)[1]) if finished else None


def update_manifest(manifest: Path, changes: Path) -> dict[str, int]:
    """Apply ``changes.csv`` (id, decision, new_label) to the dataset's manifest.csv, atomically:
    relabels replace the label, removals drop the row. Returns the counts applied."""
    manifest = manifest / "manifest.csv" if manifest.is_dir() else manifest
    if manifest.name != "manifest.csv" or not manifest.is_file():
        raise curator.ConfigError(f"--update-manifest: {manifest} is not a manifest.csv dataset")
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    decisions = pd.read_csv(changes, dtype=str, keep_default_na=False).set_index("id")
    ids = frame["id"] if "id" in frame.columns else frame["path"]
    decision = ids.map(decisions["decision"]).fillna("")
    relabel = decision == "relabel"
    frame.loc[relabel, "label"] = ids[relabel].map(decisions["new_label"])
    write_csv(manifest, frame[decision != "remove"])
    return {"relabelled": int(relabel.sum()), "removed": int((decision == "remove").sum())}


def night(args: argparse.Namespace) -> curator.Run:
    started = time.perf_counter()
    last = last_finished_run(args.runs)
    log("last", "done", run=last.path if last else "none")

    if last is not None and (args.reviews or args.labelstudio):
        t0 = time.perf_counter()
        if args.labelstudio:
            from curator.labelstudio import pull
            _, _, changes = pull(last, args.labelstudio, project=args.project)
        else:
            _, changes = apply_reviews(last, args.reviews)
        reviewed = len(pd.read_csv(changes, dtype=str))
        log("reviews", "done", run=last.path, reviewed=reviewed, seconds=f"{time.perf_counter() - t0:.1f}")
        if args.update_manifest:
            counts = update_manifest(Path(last.manifest["dataset"]["path"]), changes)
            log("dataset", "done", **counts)
    else:
        log("reviews", "skipped", reason="no earlier run" if last is None else "no --reviews or --labelstudio")

    t0 = time.perf_counter()
    out = args.runs / f"night-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}"
    options = {"epochs": args.epochs} if args.epochs else {}
    run = curator.score(args.dataset, out=out, config=args.config, previous=last.path if last else None,
                        progress=False, **options)
    previous = run.manifest.get("previous") or {}
    log("score", "done", run=run.path, examples=run.manifest["dataset"]["n_examples"],
        queue=run.review_queue["id"].nunique(), new=previous.get("new", "all"),
        kept_out_of_queue=previous.get("kept_out_of_queue", 0), seconds=f"{time.perf_counter() - t0:.1f}")

    t0 = time.perf_counter()
    if args.labelstudio:
        from curator.labelstudio import push
        pushed = push(run, args.labelstudio, project=args.project)
        log("handoff", "done", to="labelstudio", imported=pushed.imported, seconds=f"{time.perf_counter() - t0:.1f}")
    else:
        (sheet,) = export(run, "csv")
        log("handoff", "done", to="csv", file=sheet, seconds=f"{time.perf_counter() - t0:.1f}")
    log("night", "done", run=run.path, seconds=f"{time.perf_counter() - started:.1f}")
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--runs", type=Path, required=True, help="folder of the nightly runs")
    parser.add_argument("--reviews", type=Path, help="the team's answers to the last run's queue (CSV or JSON)")
    parser.add_argument("--labelstudio", help="Label Studio URL: pull yesterday's answers, push tonight's queue")
    parser.add_argument("--project", help="Label Studio project id or title [curator <dataset>]")
    parser.add_argument("--update-manifest", action="store_true", help="write relabels/removals into manifest.csv")
    parser.add_argument("--config", type=Path, help="curator.toml")
    parser.add_argument("--epochs", type=int, help="proxy training epochs [curator's default]")
    args = parser.parse_args(argv)
    try:
        night(args)
    except curator.CuratorError as exc:
        log("night", "failed", error=json.dumps(str(exc)))
        return 2
    except Exception:
        log("night", "crashed", error=json.dumps(traceback.format_exc(limit=5)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
