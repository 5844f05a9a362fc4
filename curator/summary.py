"""The end-of-run summary table, as plain text."""

from __future__ import annotations

from .store import Run


def _table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def _skipped_lines(skipped: list[dict], shown: int = 10) -> list[str]:
    lines = [f"  skipped {s['path']}: {s['reason']}" for s in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  ... and {len(skipped) - shown} more (manifest.json: dataset.skipped_files)")
    return lines


def summarize(run: Run, top: int = 5) -> str:
    m, scores = run.manifest, run.scores
    ds = m["dataset"]
    lines = [
        f"examples {ds['n_examples']}   classes {ds['n_classes']}   input {tuple(ds['input_shape'])}   "
        f"device {m['device']['type']}   skipped files {len(ds['skipped_files'])}",
        f"proxy out-of-fold accuracy {m['proxy']['oof_accuracy']:.3f}",
        *_skipped_lines(ds["skipped_files"]),
        "",
        _table([(stage, f"{info['seconds']:.1f}s") for stage, info in m["stages"].items()], ("stage", "time")),
        "",
    ]
    rows = []
    for name, info in m["scorers"].items():
        status = info["status"] if info["status"] != "failed" else f"FAILED: {info['error'][:60]}"
        rows.append((name, "/".join(info["issue"]), status, f"{info.get('seconds', 0):.1f}s"))
    lines += [_table(rows, ("scorer", "issue", "status", "time")), ""]
    counts = m["flag_counts"]
    lines.append(f"flagged: {counts['mislabeled']} mislabeled, {counts['outlier']} outlier, {counts['spurious']} spurious")
    for name, info in m["scorers"].items():
        if info["status"] != "done":
            continue
        col = f"score_{name}"
        worst = scores.nlargest(top, col)
        lines += ["", f"top {top} by {col}:"]
        lines.append(_table([(r.id, r.label, r.suggested_label, f"{getattr(r, col):.3f}") for r in worst.itertuples()],
                            ("id", "label", "suggested", "score")))
    return "\n".join(lines)
