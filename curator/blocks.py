"""Row blocks: (N, C) arrays (often memory maps) read a block of rows at a time, never copied whole.

A million examples in a thousand classes is 4 GB of float32: the flag stage and the built-in scorers
read such arrays through :func:`row_slices`, and a third-party scorer can do the same
(``curator.row_slices``).
"""

from __future__ import annotations

#: Values per block (float64: 32 MB).
BLOCK_VALUES = 1 << 22


def row_slices(n_rows: int, width: int) -> list[slice]:
    """Slices over ``n_rows`` rows of a (n_rows, width) array, each block about 32 MB as float64."""
    step = max(1, BLOCK_VALUES // max(width, 1))
    return [slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]
