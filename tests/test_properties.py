"""Properties of the adapters over random datasets: a clean one-line DatasetError, or consistent Examples.

Random class names (unicode, spaces, dots, markup, control characters), random file names and
contents (valid PNGs of random sizes and modes, garbage bytes, empty files), random manifests
(labels, ids, missing and escaping paths). Each example gets its own folder and decoded-input cache.
``CURATOR_PROPERTY_EXAMPLES=500 pytest tests/test_properties.py`` searches harder than the default 40.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import curator
from curator.data.images import IMAGE_SUFFIXES, display_path

SETTINGS = settings(max_examples=int(os.environ.get("CURATOR_PROPERTY_EXAMPLES", 40)), deadline=None,
                    database=None, suppress_health_check=[HealthCheck.too_slow])
MODES = ("L", "RGB", "RGBA", "P", "1", "LA", "I;16")
MARKUP = ("<script>alert(1)<\\script>", "a b", "dot.ted", "..", "ünïcödé", "💥", " lead", "trail ", "NA", "007")


@contextmanager
def fresh_folder():
    """A new empty dataset folder and a private decoded-input cache for one example."""
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {"CURATOR_CACHE_DIR": f"{tmp}/cache"}):
        (Path(tmp) / "data").mkdir()
        yield Path(tmp) / "data"


def load(root: Path, **kwargs) -> curator.Examples | curator.DatasetError:
    """The Examples, or the DatasetError (checked to be one line)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return curator.load_dataset(root, **kwargs)
    except curator.DatasetError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return exc


def png_bytes(mode: str, width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


valid_png = st.builds(png_bytes, st.sampled_from(MODES), st.integers(1, 24), st.integers(1, 24), st.integers(0, 9))
garbage = st.binary(max_size=64).map(lambda b: b"ga" + b)   # no format PIL reads starts with "ga"
contents = st.one_of(valid_png.map(lambda b: ("image", b)), garbage.map(lambda b: ("garbage", b)),
                     st.just(("empty", b"")))
name_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
names = st.one_of(st.text(name_chars, min_size=1, max_size=10), st.sampled_from(MARKUP)).filter(
    lambda n: n not in (".", "..") and len(n.encode()) < 100)
suffixes = st.sampled_from([".png", ".PNG", ".jpg", ".gif", ".txt", ""])
files = st.lists(st.tuples(names, suffixes, contents), max_size=5, unique_by=lambda f: f[0] + f[1])
folders = st.dictionaries(names, files, max_size=4)


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


@SETTINGS
@given(folders)
def test_an_image_folder_reads_exactly_its_readable_images(layout):
    with fresh_folder() as root:
        readable, unused = {}, set()
        for cls, entries in layout.items():
            (root / cls).mkdir()
            for stem, suffix, (kind, data) in entries:
                name = stem + suffix
                (root / cls / name).write_bytes(data)
                if cls.startswith(".") or name.startswith("."):
                    continue                                   # hidden: neither read nor listed
                if kind == "image" and is_image_name(name):
                    readable[f"{cls}/{name}"] = cls
                else:
                    unused.add(display_path(f"{cls}/{name}"))
            if not cls.startswith(".") and not any(is_image_name(stem + suffix) for stem, suffix, _ in entries):
                unused.add(display_path(f"{cls}/"))

        result = load(root)
        classes = sorted(set(readable.values()))
        event(type(result).__name__)
        if len(classes) < 2:
            assert isinstance(result, curator.DatasetError)
            return
        assert isinstance(result, curator.Examples), result
        assert sorted(result.ids) == sorted(readable) and len(set(result.ids)) == len(result.ids)
        assert result.classes == classes
        assert [result.classes[j] for j in result.labels] == [readable[i] for i in result.ids]
        n, c, h, w = result.inputs.shape
        assert n == len(readable) and c in (1, 3) and h == w and 8 <= h <= 64 and result.inputs.dtype == np.uint8
        assert {s["path"] for s in result.skipped} == unused

        strict = load(root, on_error="fail")
        if any(not p.endswith("/") and is_image_name(p.rsplit("/", 1)[1]) for p in unused):
            assert isinstance(strict, curator.DatasetError)
        else:
            assert isinstance(strict, curator.Examples) and strict.ids == result.ids


label_chars = st.characters(blacklist_categories=("Cs", "Cc"))
labels = st.one_of(st.text(label_chars, min_size=1, max_size=8), st.sampled_from(MARKUP + ("nan", "null")))
file_names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
                     min_size=1, max_size=8).map(lambda s: s + ".png")
rare = st.integers(0, 9).map(lambda i: i == 0)                  # true one time in ten


@st.composite
def manifests(draw) -> tuple[list[dict], dict[str, tuple[str, bytes]]]:
    """(manifest rows, (kind, bytes) of each file written under img/). Each fault turns up about one
    time in ten: a duplicated row, a blank label, a missing file, an escaping path, clashing ids."""
    files = draw(st.lists(st.tuples(file_names, st.one_of(valid_png.map(lambda b: ("image", b)), contents)),
                          min_size=2, max_size=6, unique_by=lambda f: f[0]))
    pool = draw(st.lists(labels, min_size=2, max_size=3, unique=True))
    rows = [{"path": f"img/{name}", "label": pool[n] if n < len(pool) else draw(st.sampled_from(pool))}
            for n, (name, _) in enumerate(files)]
    if draw(rare):
        rows.append(dict(draw(st.sampled_from(rows))))
    if draw(rare):
        draw(st.sampled_from(rows))["label"] = draw(st.sampled_from(["", "  "]))
    if draw(rare):
        rows.append({"path": "img/missing.png", "label": pool[0]})
    if draw(rare):
        rows.append({"path": draw(st.sampled_from(["../x.png", "/etc/passwd", "C:\\x.png", "img/../../x.png"])),
                     "label": pool[0]})
    id_style = draw(st.sampled_from(["none", "none", "none", "unique", "unique", "small pool"]))
    for n, row in enumerate(rows):
        if id_style == "unique":
            row["id"] = f"{draw(st.sampled_from(MARKUP))}#{n}"
        elif id_style == "small pool":
            row["id"] = draw(st.sampled_from(["x", "y", "007", "7", "<b>", "a b", "é", ""]))
    return rows, {f"img/{name}": content for name, content in files}


@SETTINGS
@given(manifests())
def test_a_manifest_gives_a_clean_error_or_its_readable_rows(spec):
    rows, files = spec
    with fresh_folder() as root:
        (root / "img").mkdir()
        for path, (_, data) in files.items():
            (root / path).write_bytes(data)
        pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)

        ids = [r.get("id", r["path"]) for r in rows]
        readable = [n for n, r in enumerate(rows) if files.get(r["path"], ("missing",))[0] == "image"]
        structural = (any(r["path"] not in files for r in rows) or any(not r["label"].strip() for r in rows)
                      or len(set(ids)) < len(ids) or any(not i.strip() for i in ids))
        result = load(root)
        event(type(result).__name__)
        if structural or len({rows[n]["label"] for n in readable}) < 2:
            assert isinstance(result, curator.DatasetError)
            return
        assert isinstance(result, curator.Examples), result
        assert result.ids == [ids[n] for n in readable] and result.paths == [rows[n]["path"] for n in readable]
        assert [result.classes[j] for j in result.labels] == [rows[n]["label"] for n in readable]
        assert set(result.classes) == {rows[n]["label"] for n in readable}
        assert result.inputs.shape[0] == len(readable) and result.inputs.ndim == 4
        assert sorted(s["path"] for s in result.skipped) == sorted(
            r["path"] for r in rows if files[r["path"]][0] != "image")
