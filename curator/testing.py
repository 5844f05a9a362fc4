"""Contract checks for scorer plugins, to call from a plugin author's tests.

    from curator.testing import check_scorer
    import my_plugin

    def test_my_scorer_meets_the_contract():
        check_scorer(my_plugin, min_auroc=0.9)

:func:`check_scorer` runs the scorer on a small real dataset with injected problems (scikit-learn's
1,797 digits with 10% of labels flipped, plus 3% photo patches as outliers), through the same
validation ``curator.score`` applies, and asserts the contract: a ``score_<name>`` column of shape
(N,), float32, finite, deterministic, the same when a shardable scorer's rows are scored in
interleaved shards, and, for each issue the scorer declares that the dataset has
injected (``mislabeled``, ``outlier``), that its column ranks those examples above chance (AUROC >=
``min_auroc``, which also checks the direction). The proxy models train once per process and
settings (:func:`bench`); every later check reuses them.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from sklearn.metrics import roc_auc_score

from .backends import PartsGatherer
from .backends.local import LocalBackend
from .context import ScoreContext
from .data import Examples
from .device import select_device
from .errors import PluginError
from .plugins import Registered, load_plugins
from .scorer import Scorer
from .scoring import check_scorer_options, run_scorer, score
from .store import Run

#: Issue types the test dataset has injected examples of, so a scorer declaring them is ranked.
INJECTED_ISSUES = ("mislabeled", "outlier")


def flip_labels(labels: np.ndarray, fraction: float, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``fraction`` of ``labels`` (N,) to a different random class. Returns (noisy (N,), flipped (N,) bool)."""
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(labels), bool)
    flipped[rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)] = True
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, n_classes, size=int(flipped.sum()))) % n_classes
    return noisy, flipped


def photo_patches(n: int, side: int, seed: int) -> np.ndarray:
    """(n, side, side) uint8 grey patches cut from scikit-learn's bundled photographs: real images
    that are out of distribution for digits."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.fromarray(img).convert("L")) for img in load_sample_images().images]
    out = np.empty((n, side, side), np.uint8)
    for i in range(n):
        photo = photos[i % len(photos)]
        crop = int(rng.integers(side * 4, side * 12))
        top, left = int(rng.integers(0, photo.shape[0] - crop)), int(rng.integers(0, photo.shape[1] - crop))
        out[i] = np.asarray(Image.fromarray(photo[top:top + crop, left:left + crop]).resize((side, side), Image.BILINEAR))
    return out


def linear_shortcut_data(n: int, agree: float, rng: np.random.Generator, d: int = 1800
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The synthetic shortcut task of the MAT paper (Bayat et al. 2024): x = [y (core, ±1), 5·a (spurious,
    = y with probability ``agree``), d - 2 dims of N(0, 0.5²)]. Returns (x (n, d) float32, y (n,) in
    {0, 1}, majority (n,) bool: the spurious sign agrees with the label)."""
    y = rng.integers(0, 2, n)
    sign = 2 * y - 1
    a = np.where(rng.random(n) < agree, sign, -sign)
    x = np.concatenate([sign[:, None], 5 * a[:, None], 0.5 * rng.standard_normal((n, d - 2))], 1)
    return x.astype(np.float32), y, a == sign


def noisy_digits(flip_fraction: float = 0.10, outlier_fraction: float = 0.03,
                 seed: int = 0) -> tuple[Examples, np.ndarray, np.ndarray]:
    """scikit-learn's real 8x8 digits with ``flip_fraction`` of labels flipped, plus photo patches
    (``outlier_fraction`` of the digits) carrying random labels, as in-memory :class:`curator.Examples`.

    Returns (examples, mislabeled (N,) bool, outlier (N,) bool); the patches are the last rows and are
    not counted as mislabeled (their labels mean nothing).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    labels, flipped = flip_labels(digits.target.astype(np.int64), flip_fraction, 10, seed)
    n_out = int(outlier_fraction * len(labels))
    patches = photo_patches(n_out, 8, seed + 1)
    outlier = np.r_[np.zeros(len(labels), bool), np.ones(n_out, bool)]
    labels = np.r_[labels, np.random.default_rng(seed + 1).integers(0, 10, n_out)]
    ids = [f"digit/{i:04d}" for i in range(len(flipped))] + [f"photo/{i:04d}" for i in range(n_out)]
    examples = Examples(ids=ids, paths=[None] * len(ids), labels=labels, classes=[str(c) for c in range(10)],
                        inputs=np.concatenate([images, patches])[:, None], kind="image", name="noisy-digits",
                        root=Path("."), fingerprint=f"curator.testing.noisy_digits-{flip_fraction}-{outlier_fraction}-{seed}")
    return examples, np.r_[flipped, np.zeros(n_out, bool)], outlier


@dataclass(frozen=True)
class Bench:
    """A finished proxy run over :func:`noisy_digits`, shared by every check in a process.

    examples: the dataset; run: the finished :class:`curator.Run` (no scorer columns);
    truth: issue -> (N,) bool injected examples, rows in ``run.scores`` order.
    """

    examples: Examples
    run: Run
    truth: Mapping[str, np.ndarray]
    device: str

    def context(self, options: Mapping[str, Any] | None = None) -> ScoreContext:
        """A fresh :class:`curator.ScoreContext` over this run, built as ``curator.score`` builds it."""
        ex = self.examples
        return ScoreContext(artifacts=self.run.path / "artifacts", labels=ex.labels, classes=ex.classes, ids=ex.ids,
                            inputs_array=ex.inputs, device=select_device(self.device),
                            seed=int(self.run.manifest["seed"]), options=dict(options or {}))


_BENCHES: dict[tuple, Bench] = {}


def bench(epochs: int = 4, seed: int = 0, device: str = "cpu") -> Bench:
    """Train the cross-fitted proxies on :func:`noisy_digits` once per process and settings."""
    key = (epochs, seed, device)
    if key not in _BENCHES:
        examples, mislabeled, outlier = noisy_digits(seed=seed)
        workdir = Path(tempfile.mkdtemp(prefix="curator-testing-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        run = score(examples, out=workdir / "run", scorers=[], epochs=epochs, seed=seed, device=device,
                    progress=False)
        _BENCHES[key] = Bench(examples, run, {"mislabeled": mislabeled, "outlier": outlier}, device)
    return _BENCHES[key]


@dataclass(frozen=True)
class ContractResult:
    """What :func:`check_scorer` measured.

    columns: ``score_<column>`` -> (N,) float32, higher = more suspicious, as the run would store them;
    aurocs:  column (without ``score_``) -> {issue: AUROC of the column against the injected examples}
    """

    scorer: str
    columns: Mapping[str, np.ndarray]
    aurocs: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def auroc(self) -> float | None:
        """AUROC of the main column for the first declared issue with injected examples, else None."""
        return next(iter(self.aurocs.get(self.scorer, {}).values()), None)


def _require(condition: bool, message: str) -> None:
    # An explicit raise, not ``assert``: the checks must hold under ``python -O`` too.
    if not condition:
        raise AssertionError(message)


def _resolve(scorer_or_plugin: Any, name: str | None) -> Registered:
    if isinstance(scorer_or_plugin, Scorer):
        return Registered(scorer_or_plugin, "local", "local", "local")
    if isinstance(scorer_or_plugin, str):  # an installed scorer, found through the entry points
        registry, what = load_plugins(), "the installed plugins"
        name = name or scorer_or_plugin
    else:
        registry = load_plugins([scorer_or_plugin], entry_points_enabled=False)
        what = f"plugin {getattr(scorer_or_plugin, '__name__', type(scorer_or_plugin).__name__)!r}"
    found = ", ".join(registry.names()) or "none"
    if name is None:
        _require(bool(registry.scorers), f"{what} registers no scorer: does it define a @curator.hookimpl "
                                         f"register_scorers(register) that calls register(curator.Scorer(...))?")
        _require(len(registry.scorers) == 1, f"{what} registers several scorers ({found}); pass name= to pick one")
        name = registry.names()[0]
    _require(name in registry, f"{what} registers no scorer named {name!r} (found: {found})")
    return registry[name]


class InterleavedShards(LocalBackend):
    """Scores a shardable scorer's rows in ``shards`` interleaved shards (rows s, s + S, s + 2S, ...),
    one after another in this process, as a cluster would in ``shards`` tasks."""

    def __init__(self, shards: int = 3):
        self.shards = shards

    def score_rows(self, scorer: Scorer, ctx: ScoreContext, progress) -> dict[str, np.ndarray] | None:
        if not scorer.shardable:
            return None
        gathered = PartsGatherer(scorer, ctx.n_examples)
        for start in range(self.shards):
            rows = np.arange(start, ctx.n_examples, self.shards, dtype=np.int64)
            gathered.add(rows, scorer.score_rows(ctx, rows))
        return gathered.parts


def _columns(entry: Registered, ctx: ScoreContext,
             backend: LocalBackend | None = None) -> dict[str, np.ndarray]:
    """The scorer's columns exactly as ``curator.score`` validates and normalises them."""
    try:
        return run_scorer(entry, ctx, backend or LocalBackend(cores=1))
    except PluginError as exc:
        raise AssertionError(f"{exc}; curator.score would leave this scorer out of the run") from exc


def check_scorer(scorer_or_plugin: Any, *, name: str | None = None, min_auroc: float = 0.6,
                 options: Mapping[str, Any] | None = None, epochs: int = 4, seed: int = 0,
                 device: str = "cpu") -> ContractResult:
    """Assert that a scorer meets the plugin contract on real data with injected problems.

    scorer_or_plugin: a :class:`curator.Scorer`, a plugin (module or object with a
        ``@curator.hookimpl register_scorers``), or the name of an installed scorer (entry points).
    name:      which scorer, when the plugin registers several.
    min_auroc: lowest accepted AUROC of each column against the injected examples of each issue it
               declares (``mislabeled``: flipped digits, among the digits; ``outlier``: photo patches).
    options:   the scorer's ``[scorers.<name>]`` options, overlaid on its defaults.
    epochs, seed, device: proxy training settings of the shared :func:`bench`.

    Raises AssertionError naming the scorer and the broken rule; returns a :class:`ContractResult`.
    """
    if not 0.0 <= min_auroc <= 1.0:
        raise ValueError(f"min_auroc={min_auroc!r}: must be in [0, 1]")
    entry = _resolve(scorer_or_plugin, name)
    scorer = entry.record
    merged = check_scorer_options([entry], {scorer.name: dict(options or {})}, [scorer.name])[scorer.name]
    b = bench(epochs=epochs, seed=seed, device=device)
    n = len(b.examples)
    columns = _columns(entry, b.context(merged))
    _require(scorer.name in columns, f"scorer {scorer.name!r}: no score_{scorer.name} column")
    for col, values in columns.items():
        _require(values.shape == (n,) and values.dtype == np.float32,
                 f"scorer {scorer.name!r}: score_{col} is {values.dtype} {values.shape}, expected float32 ({n},)")
        _require(bool(np.isfinite(values).all()), f"scorer {scorer.name!r}: score_{col} has NaN/inf values")
    again = _columns(entry, b.context(merged))
    _require(list(again) == list(columns),
             f"scorer {scorer.name!r}: a second call returned columns {list(again)}, the first {list(columns)}")
    for col, values in columns.items():
        _require(np.allclose(again[col], values, rtol=1e-5, atol=1e-6),
                 f"scorer {scorer.name!r}: score_{col} differs between two calls with the same seed; "
                 f"seed any randomness from ctx.seed")
    if scorer.shardable:
        sharded = _columns(entry, b.context(merged), InterleavedShards(3))
        for col, values in columns.items():
            _require(col in sharded and np.allclose(sharded[col], values, rtol=1e-4, atol=1e-6),
                     f"scorer {scorer.name!r}: score_{col} scored in 3 shards of rows differs from one call on "
                     f"every row; a row's score_rows parts must depend on that row alone")

    aurocs: dict[str, dict[str, float]] = {}
    for col, issues in scorer.column_issues().items():
        if col not in columns:
            continue
        for issue in (i for i in issues if i in INJECTED_ISSUES):
            rows = ~b.truth["outlier"] if issue == "mislabeled" else np.ones(n, bool)
            truth, values = b.truth[issue][rows], columns[col][rows]
            auroc = float(roc_auc_score(truth, values))
            aurocs.setdefault(col, {})[issue] = auroc
            hint = (f"; the reversed column reaches {1 - auroc:.3f}: is direction={scorer.direction!r} right?"
                    if 1 - auroc >= min_auroc else "")
            _require(auroc >= min_auroc, f"scorer {scorer.name!r}: score_{col} ranks the {int(truth.sum())} injected "
                                         f"{issue} examples at AUROC {auroc:.3f} < min_auroc {min_auroc}{hint}")
    return ContractResult(scorer.name, {f"score_{c}": v for c, v in columns.items()}, aurocs)
