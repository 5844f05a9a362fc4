"""The incremental decode cache over nights: Fashion-MNIST written as PNG files, night 1 decodes the
whole folder into an empty cache, night 2 adds new images (from the test split) and decodes only
those, night 3 changes nothing. Times ``curator.load_dataset`` (listing, header probes, decoding,
assembling the array) and reports ``decode["decoded_files"]``.

    .venv/bin/python benchmarks/decode_nights.py [--n 60000] [--new 600]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from publish import publish  # noqa: E402
from realdata import FASHION_CLASSES, load_fashion_mnist, write_image_folder  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--new", type=int, default=600)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-decode"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.environ["CURATOR_CACHE_DIR"] = str((args.work / "cache").resolve())
    import curator

    images, labels = load_fashion_mnist("train")
    extra, extra_labels = load_fashion_mnist("t10k")
    root = args.work / "fashion-png"
    t0 = time.perf_counter()
    write_image_folder(root, images[:args.n], labels[:args.n], FASHION_CLASSES)
    written = time.perf_counter() - t0
    rows = []

    def night(name: str) -> None:
        t = time.perf_counter()
        examples = curator.load_dataset(root)
        seconds = time.perf_counter() - t
        rows.append((name, len(examples), examples.decode["decoded_files"], examples.decode["probed_files"], seconds))
        print(rows[-1], flush=True)

    night("night 1 (empty cache)")
    write_image_folder(root, extra[:args.new], extra_labels[:args.new], FASHION_CLASSES,
                       names=[f"new{i:05d}" for i in range(args.new)])
    night(f"night 2 (+{args.new} new files)")
    night("night 3 (no change)")
    lines = ["## Incremental decode cache over nights\n",
             f"Command: `.venv/bin/python benchmarks/decode_nights.py --n {args.n} --new {args.new}`  ",
             f"Fashion-MNIST written as {args.n:,} PNG files ({written:.0f} s to write); `curator.load_dataset` per "
             "night, 2-core machine shared with other jobs.\n",
             "| night | examples | files decoded | headers read | seconds |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {e:,} | {d:,} | {p:,} | {s:.1f} |" for n, e, d, p, s in rows]
    publish(RESULTS / "decode_nights.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
