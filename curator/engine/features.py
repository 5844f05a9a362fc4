"""What the fold proxies read: the decoded inputs themselves, or a pretrained backbone's features.

With a backbone the engine step splits in two. :func:`feature_pass` streams the images once through
the frozen part of the backbone (on the GPU when present) and caches the result on disk, keyed by the
images' contents and the backbone; the cross-fitted proxies are then heads trained on those
features (frozen mode), or the backbone's last blocks plus a head trained on the activations at the
cut (fine-tune mode). ``--embeddings FILE`` hands in the user's own vectors as frozen features.
Everything downstream reads the same artifacts either way.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from ..atomic import write_json
from ..data.cache import cache_root, content_id, ensure_free_space, fingerprint
from ..errors import DatasetError
from .backbones import Backbone, BackboneInput, is_backbone, load_backbone
from .inputs import InputBank, Normalizer

if TYPE_CHECKING:
    from ..adapter import DatasetSettings
    from ..data.examples import Examples
    from ..settings import BackboneSettings

FEATURES_VERSION = 1
# The rule behind ``auto`` (README, "Proxies that can see photographs", from benchmarks/backbones.py): on 28-px
# greyscale digits and clothes the small CNN beat EfficientNet-Lite0 on every measure; on 96/128-px
# colour photographs the backbone's proxies were as good or far better (shapes on photographs: 0.70
# out-of-fold accuracy frozen, 0.87 fine-tuned, against the CNN's 0.27).
AUTO_MIN_SIDE = 96


@dataclass
class ProxyInputs:
    """inputs: what the fold proxies train on, (N, C, H, W) uint8 images, (N, D) float32 features or
    (N, C, H, W) float16 activations; kind: ``image``, ``vector`` or ``activations``; backbone: the
    backbone record for ``model.json`` (None without one); record: the manifest's ``features``."""

    inputs: np.ndarray
    kind: str
    backbone: dict | None = None
    record: dict = field(default_factory=dict)


def choose_backbone(requested: str, kind: str, decode: dict) -> str:
    """The backbone ``auto`` stands for, from what the decoder saw: ``efficientnet_lite0`` (frozen)
    for colour images whose median longest side is at least :data:`AUTO_MIN_SIDE` when its package
    is installed, else ``cnn``."""
    if requested != "auto":
        return requested
    if kind != "image" or decode.get("channels") != 3 or decode.get("native_side", 0) < AUTO_MIN_SIDE:
        return "cnn"
    try:
        load_backbone("efficientnet_lite0")
    except Exception:
        return "cnn"
    return "efficientnet_lite0"


def open_backbone(name: str, weights: str | None, size: int | None) -> Backbone | None:
    """The loaded backbone for ``--backbone NAME`` (None for ``cnn``/``auto``), its input side set to
    ``size`` when given."""
    if not is_backbone(name):
        return None
    backbone = load_backbone(name, weights)
    if size is not None:
        backbone.input_size = size
    return backbone


def preprocess(raw: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    """(B, C, H, W) uint8 or float in 0..255 -> (B, 3, S, S) float32 as the backbone expects
    (:class:`~curator.engine.backbones.BackboneInput`)."""
    return BackboneInput.of(backbone).to(raw.device)(raw)


def _weights_id(backbone: Backbone) -> list:
    path = Path(backbone.weights)
    if backbone.weights != "random" and path.is_file():
        st = path.stat()
        return [path.name, st.st_size, st.st_mtime_ns]
    return [backbone.weights]


class _CachedRows:
    """One (N, ...) array being filled in row order under ``cache_root()/features``: written to a
    ``.partial.npy`` with a progress file, so an interrupted pass resumes where it stopped."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype):
        self.final = cache_root() / "features" / f"{name}.npy"
        self.partial = self.final.with_name(f"{name}.partial.npy")
        self.progress = self.final.with_name(f"{name}.progress.json")
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.done = 0
        self.array: np.ndarray | None = None

    def ready(self) -> np.ndarray | None:
        if self.final.exists():
            try:
                arr = np.load(self.final, mmap_mode="r")
                if arr.shape == self.shape and arr.dtype == self.dtype:
                    return arr
            except (ValueError, OSError):
                pass
        return None

    def open(self) -> int:
        """Open for writing; returns the rows already done by an earlier, interrupted pass."""
        if self.partial.exists() and self.progress.exists():
            try:
                arr = np.load(self.partial, mmap_mode="r+")
                if arr.shape == self.shape and arr.dtype == self.dtype:
                    self.array, self.done = arr, int(json.loads(self.progress.read_text())["rows"])
                    return self.done
            except (ValueError, OSError, KeyError):
                pass
        self.array = np.lib.format.open_memmap(self.partial, "w+", self.dtype, self.shape)
        self.done = 0
        return 0

    def checkpoint(self, rows: int) -> None:
        self.array.flush()
        write_json(self.progress, {"rows": rows})

    def finish(self) -> np.ndarray:
        self.array.flush()
        self.array = None
        os.replace(self.partial, self.final)
        self.progress.unlink(missing_ok=True)
        return np.load(self.final, mmap_mode="r")


def feature_pass(inputs: np.ndarray, backbone: Backbone, cut: int, device: torch.device, *,
                 batch_size: int | None = None, progress: Callable[..., object] | None = None
                 ) -> tuple[np.ndarray, dict]:
    """Stream ``inputs`` (N, C, H, W) uint8 through the backbone once and cache what the proxies read:
    with ``cut == len(backbone.chain)`` (frozen) the features (N, D) float32, else the activations
    at the cut (N, C', H', W') float16 (and the frozen features, cached on the way at no extra cost).

    Cached under ``$CURATOR_CACHE_DIR/features/`` by the images' contents, the backbone, its weights
    file and input size (and the cut): a second run over the same images is a cache hit, and an
    interrupted pass resumes. Returns (array, record for the manifest).
    """
    started = time.perf_counter()
    n = len(inputs)
    frozen = cut == len(backbone.chain)
    base = [FEATURES_VERSION, content_id(inputs), backbone.name, _weights_id(backbone), backbone.input_size,
            list(backbone.mean), list(backbone.std)]
    feature_key = "features-" + fingerprint(base)
    record = {"backbone": backbone.name, "weights": backbone.weights, "input_size": backbone.input_size,
              "feature_dim": backbone.feature_dim, "mode": "frozen" if frozen else "finetune", "device": device.type}
    prefix = backbone.prefix(cut).to(device)
    suffix = backbone.suffix(cut).to(device)
    with torch.no_grad():
        probe = prefix(preprocess(torch.zeros(1, *inputs.shape[1:]), backbone).to(device))
    targets = {"features": _CachedRows(feature_key, (n, backbone.feature_dim), np.float32)}
    if not frozen:
        activation_key = "activations-" + fingerprint(base + [cut])
        targets["activations"] = _CachedRows(activation_key, (n, *probe.shape[1:]), np.float16)
        record["activation_shape"] = list(probe.shape[1:])
    wanted = "features" if frozen else "activations"
    hit = targets[wanted].ready()
    if hit is not None:
        record.update(cache="hit", file=str(targets[wanted].final), seconds=round(time.perf_counter() - started, 3))
        return hit, record
    todo = {name: t for name, t in targets.items() if name == wanted or t.ready() is None}
    ensure_free_space(cache_root() / "features", sum(int(np.prod(t.shape)) * t.dtype.itemsize for t in todo.values()),
                      f"the {backbone.name} {wanted}")
    start = min(t.open() for t in todo.values())
    record["resumed_at_row"] = start

    channels_last = device.type in ("cuda", "cpu")
    if channels_last:
        prefix, suffix = prefix.to(memory_format=torch.channels_last), suffix.to(memory_format=torch.channels_last)
    bf16 = device.type == "cuda"
    batch = batch_size or (256 if device.type == "cuda" else 64)
    bank = InputBank(inputs, Normalizer("identity", (), ()), device)
    starts = list(range(start, n, batch))
    steps = zip(starts, bank.batches(torch.arange(s, min(s + batch, n)) for s in starts))
    if progress:
        steps = progress(steps, desc=f"{backbone.name} {wanted}", total=len(starts), unit="batch")
    last_save = time.perf_counter()
    with torch.no_grad():
        for s, raw in steps:
            x = preprocess(raw, backbone)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                act = prefix(x)
                feats = suffix(act).flatten(1) if "features" in todo else None
            rows = slice(s, s + len(raw))
            if "activations" in todo:
                todo["activations"].array[rows] = act.float().cpu().numpy().astype(np.float16)
            if feats is not None:
                todo["features"].array[rows] = feats.float().cpu().numpy()
            if time.perf_counter() - last_save > 30:
                for t in todo.values():
                    t.checkpoint(rows.stop)
                last_save = time.perf_counter()
    arrays = {name: t.finish() for name, t in todo.items()}
    seconds = time.perf_counter() - started
    record.update(cache="computed" if start == 0 else "resumed", file=str(targets[wanted].final),
                  seconds=round(seconds, 3), images_per_second=round((n - start) / max(seconds, 1e-9), 1))
    return arrays[wanted], record


def read_embeddings(path: Path, ids: Sequence[str]) -> np.ndarray:
    """The user's vectors for the examples ``ids``, (N, D) float32 in their order.

    ``.npy``: (N, D), one row per example in dataset order (the rows of ``scores.parquet``).
    ``.parquet``: an ``id`` column and either one column of vectors (lists or arrays of equal
    length) or numeric columns, one per dimension; rows are matched by id, extra ids ignored.
    """
    where = f"--embeddings {path}"
    if not path.is_file():
        raise DatasetError(f"{where}: file not found")
    if path.suffix.lower() == ".npy":
        try:
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DatasetError(f"{where}: not a numeric .npy array ({exc})") from None
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise DatasetError(f"{where}: shape {tuple(vectors.shape)}, expected ({len(ids)}, D): one row per "
                               "example, in dataset order")
    elif path.suffix.lower() == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        if "id" not in frame.columns:
            raise DatasetError(f"{where}: no 'id' column (columns: {', '.join(map(str, frame.columns))})")
        frame = frame.drop_duplicates("id", keep="last").set_index(frame["id"].astype(str).rename(None))
        missing = [i for i in ids if i not in frame.index]
        if missing:
            raise DatasetError(f"{where}: {len(missing)} example id(s) have no vector, e.g. {missing[0]!r}")
        frame = frame.loc[list(ids)].drop(columns="id")
        listed = [c for c in frame.columns if frame[c].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).all()]
        try:
            if len(listed) == 1:
                vectors = np.stack([np.asarray(v, dtype=np.float32) for v in frame[listed[0]]])
            else:
                vectors = frame.to_numpy(np.float32)
        except (ValueError, TypeError) as exc:
            raise DatasetError(f"{where}: expected one vector column or numeric columns ({exc})") from None
    else:
        raise DatasetError(f"{where}: expected a .npy or .parquet file")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] < 1:
        raise DatasetError(f"{where}: expected (N, D) vectors, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise DatasetError(f"{where}: has NaN or inf values")
    return vectors


def load_examples(load: Callable[["DatasetSettings"], "Examples"], dataset: "DatasetSettings",
                  settings: "BackboneSettings") -> "Examples":
    """The dataset read by ``load(dataset_settings)`` the way the proxies need it: with a pretrained
    backbone, images are kept at the backbone's input size (``--image-size`` still caps it when
    given) and centre-cropped with their aspect ratio kept. A named backbone is loaded (so checked)
    before anything is read; ``auto`` reads the dataset first and reads it again at the backbone's
    size only when its rule picks one."""
    name = settings.backbone
    if settings.embeddings is not None:
        return load(dataset)
    if name == "auto":
        examples = load(dataset)
        name = choose_backbone(name, examples.kind, examples.decode)
        if not is_backbone(name) or not examples.decode:
            return examples
    backbone = open_backbone(name, settings.backbone_weights, settings.backbone_size)
    if backbone is None:
        return load(dataset)
    side = backbone.input_size if dataset.image_size == type(dataset)().image_size else dataset.image_size
    return load(replace(dataset, image_size=side, fit="crop"))


def proxy_inputs(examples: "Examples", settings: "BackboneSettings", device: torch.device,
                 progress: Callable[..., object] | None = None) -> ProxyInputs:
    """What the fold proxies of one run read: ``settings.embeddings`` (a file of the user's vectors),
    else the backbone's features, or its activations at the cut when ``settings.finetune`` blocks
    train, else the examples' inputs themselves."""
    if settings.embeddings is not None:
        started = time.perf_counter()
        vectors = read_embeddings(Path(settings.embeddings), examples.ids)
        record = {"backbone": "embeddings", "mode": "frozen", "file": str(Path(settings.embeddings).resolve()),
                  "feature_dim": int(vectors.shape[1]), "seconds": round(time.perf_counter() - started, 3)}
        return ProxyInputs(vectors, "vector", {"name": "embeddings", "weights": None, "cut": None}, record)
    name = choose_backbone(settings.backbone, examples.kind, examples.decode)
    backbone = open_backbone(name, settings.backbone_weights, settings.backbone_size)
    auto = {"chosen_by": f"auto ({_auto_facts(examples)})"} if settings.backbone == "auto" else {}
    if backbone is None or examples.kind != "image":
        return ProxyInputs(examples.inputs, examples.kind, None,
                           {"backbone": "cnn" if examples.kind == "image" else "mlp", "mode": "scratch", **auto})
    cut = backbone.cut(settings.finetune)
    array, record = feature_pass(examples.inputs, backbone, cut, device, progress=progress)
    record.update(finetune_blocks=settings.finetune, **auto)
    # The weights as asked for (None: the published ones, found wherever the machine keeps them).
    info = {**backbone.describe(), "weights": settings.backbone_weights, "cut": cut}
    return ProxyInputs(array, "vector" if cut == len(backbone.chain) else "activations", info, record)


def _auto_facts(examples: "Examples") -> str:
    """What ``auto`` looked at, for the manifest."""
    if examples.kind != "image" or not examples.decode:
        return f"{examples.kind} inputs"
    d = examples.decode
    return (f"{'colour' if d['channels'] == 3 else 'greyscale'} images, median longest side {d['native_side']} px; "
            f"a backbone for colour images of at least {AUTO_MIN_SIDE} px")
