"""The pictures of a run's examples, for reports and labelling tools.

Read from the dataset's own files (the absolute dataset root of ``manifest.json``, or the run's
``dataset_root`` where the dataset moved, + the ``path`` column) where the dataset has them; for
arrays without paths, decoded from the dataset's cached inputs. A dataset that is not where the run
says is an error naming the folder (:meth:`Run.dataset_location`); :meth:`ExampleImages.require`
checks that the files of the examples about to be shown or exported are all there.
"""

from __future__ import annotations

import base64
import io
from functools import cached_property

import numpy as np
from PIL import Image

from ..data.images import GREY_MODES, to_uint8
from ..errors import DatasetError
from ..store import Run


class ExampleImages:
    """Look up the image of an example of ``run`` by id."""

    def __init__(self, run: Run):
        self.run = run
        self.kind = run.manifest.get("dataset", {}).get("kind", "image")
        self._path = dict(zip(run.scores["id"], run.scores["path"]))
        # source: the folder, or a manifest/.npz file; root: what ``path`` is relative to
        self.source, self.root = run.dataset_location if self.has_images else (None, None)

    def require(self, example_ids) -> None:
        """Raise DatasetError when the file of any of ``example_ids`` is missing under the root: a
        report without its pictures or a task file with dead links is never written silently."""
        paths = [p for p in map(self.path, example_ids) if p is not None]
        missing = [p for p in paths if not (self.root / p).is_file()]
        if missing:
            raise DatasetError(f"{self.root / missing[0]}: missing ({len(missing)} of {len(paths)} image files "
                               f"of run {self.run.path} are not under {self.root}); if the dataset moved, "
                               "pass --dataset-root NEW_FOLDER")

    @property
    def has_images(self) -> bool:
        return self.kind == "image"

    def path(self, example_id: str) -> str | None:
        """Path relative to the dataset root, or ``None`` for datasets without files (arrays)."""
        path = self._path.get(example_id)
        return path if isinstance(path, str) and path else None

    @cached_property
    def _cached_inputs(self) -> tuple[dict[str, int], np.ndarray] | None:
        """(id -> row, (N, C, H, W) uint8) from the dataset's decoded-input cache, or None."""
        from ..data import load_dataset

        try:
            examples = load_dataset(self.source)
        except Exception:  # moved, changed or unreadable dataset: no pictures, not a failure
            return None
        if examples.kind != "image":
            return None
        return {i: n for n, i in enumerate(examples.ids)}, examples.inputs

    def image(self, example_id: str) -> Image.Image | None:
        """The example's image as an L or RGB PIL image, or ``None`` when it cannot be had."""
        if not self.has_images:
            return None
        path = self.path(example_id)
        if path is not None:
            try:
                with Image.open(self.root / path) as img:
                    img.load()
                    return to_uint8(img, 1 if img.mode in GREY_MODES else 3)
            except Exception:
                return None
        cached = self._cached_inputs
        if cached is None or example_id not in cached[0]:
            return None
        chw = np.asarray(cached[1][cached[0][example_id]])
        return Image.fromarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0))

    def size(self, example_id: str) -> tuple[int, int] | None:
        """(width, height) from the file header without decoding, or from the cached inputs."""
        path = self.path(example_id)
        if path is not None:
            try:
                with Image.open(self.root / path) as img:
                    return img.size
            except Exception:
                return None
        img = self.image(example_id)
        return None if img is None else img.size


def thumbnail(img: Image.Image, side: int) -> Image.Image:
    """Fit ``img`` in a ``side`` x ``side`` box: small images are enlarged by whole pixels (crisp
    8x8 digits), large ones shrunk smoothly."""
    w, h = img.size
    scale = side / max(w, h)
    if scale >= 2:
        k = int(scale)
        return img.resize((w * k, h * k), Image.NEAREST)
    if scale < 1:
        return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    return img


def png_data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
