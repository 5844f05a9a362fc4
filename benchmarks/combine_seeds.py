"""Mean ± std over seeds of ``benchmarks/retrain_shortcut.py`` results files that were run one seed each
(``--seeds 0``, ``--seeds 1``, ... side by side on several machines or cores), as one table. The files must
have been run with the same settings but ``--seeds`` and ``--methods``.

    .venv/bin/python benchmarks/combine_seeds.py benchmarks/results/retrain_shortcut_50k_seed{0,1,2}.md
        --out benchmarks/results/retrain_shortcut_50k.md
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from publish import mean_std, publish  # noqa: E402

COLUMNS = ("worst-group, true-group selection", "worst-group, inferred-group selection", "average, true",
           "average, inferred", "conflicting groups (true)", "aligned groups (true)")


def read_table(path: Path) -> tuple[str, dict[str, list[float | None]]]:
    """(the file's command line, method -> the six figures of its row) of a one-seed results file."""
    try:
        text = path.read_text()
    except OSError as error:
        raise SystemExit(f"{path}: cannot be read ({error.strerror})") from None
    command = re.search(r"Command: `([^`]*)`", text)
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or not re.match(r"[0-9.]+", cells[1]):
            continue
        if "±" in line:
            raise SystemExit(f"{path}: holds a mean over several seeds; give one-seed results files")
        true_avg, _, inferred_avg = cells[3].partition("/")
        figures = (cells[1], cells[2], true_avg, inferred_avg, cells[4], cells[5])
        rows[cells[0]] = [float(v) if v.strip() else None for v in figures]
    if not rows:
        raise SystemExit(f"{path}: no results table of benchmarks/retrain_shortcut.py in it")
    return (command.group(1) if command else ""), rows


def cell(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return mean_std(known) if known else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="one-seed results files of retrain_shortcut.py")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tables = [read_table(path) for path in args.files]
    settings = {re.sub(r" --(seeds|methods) \S+", "", command) for command, _ in tables}
    if len(settings) > 1:
        raise SystemExit("the files were run with different settings (not only --seeds or --methods): "
                         + " | ".join(sorted(settings)))
    methods = list(dict.fromkeys(m for _, rows in tables for m in rows))
    lines = ["## Retraining benchmark: planted shortcut (Fashion-MNIST), mean ± std over seeds", "",
             "Combined with `.venv/bin/python benchmarks/combine_seeds.py " + " ".join(map(str, args.files)) +
             f" --out {args.out}` from one run per seed:", ""]
    lines += [f"- `{path}`: `{command}`" for path, (command, _) in zip(args.files, tables)]
    lines += ["", "| method | " + " | ".join(COLUMNS) + " | worst-group per seed (true) | seeds |",
              "|---" * (len(COLUMNS) + 3) + "|"]
    for method in methods:
        per_seed = [rows[method] for _, rows in tables if method in rows]
        figures = [cell([seed[k] for seed in per_seed]) for k in range(len(COLUMNS))]
        lines.append(f"| {method} | " + " | ".join(figures) + " | "
                     + ", ".join(f"{seed[0]:.3f}" for seed in per_seed) + f" | {len(per_seed)} |")
    publish(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
