"""curator report: one self-contained report.html, rendered by headless Chromium in the tests."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import curator
from curator.cli import main
from curator.report import build_report, histogram_svg, write_report
from curator.store import RUN_FILES
from datasets import digits_images, flip_labels
from test_export import score_small, write_hostile_dataset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (run `make chromium`)")
THUMB = "data:image/png;base64,"


class Page(HTMLParser):
    """Every start tag with its attributes, and every table as rows of cell texts."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def all(self, tag: str) -> list[dict]:
        return [attrs for t, attrs in self.tags if t == tag]

    def table(self, *headers: str) -> list[list[str]]:
        """The first table whose header row starts with ``headers``."""
        return next(t for t in self.tables if t and t[0][:len(headers)] == list(headers))


def chromium(tmp_path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


def rendered_dom(tmp_path, report) -> str:
    return chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", report.as_uri())


def shown_thumbnails(run: curator.Run, per_issue: int = 48) -> int:
    flagged = sum(min(per_issue, int(run.scores[f"is_{k}"].sum())) for k in ("mislabeled", "outlier", "spurious"))
    groups = (run.manifest.get("spurious_groups") or []) + (run.manifest.get("foreign_batches") or [])
    return flagged + sum(min(8, len(g.get("ids", []))) for g in groups)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> curator.Run:
    root = write_hostile_dataset(tmp_path_factory.mktemp("hostile"))
    return score_small(root, tmp_path_factory.mktemp("runs") / "hostile")


def _noisy_digits(n: int, n_classes: int):
    images, labels = digits_images()
    keep = np.flatnonzero(labels < n_classes)[:n]
    noisy, _ = flip_labels(labels[keep], 0.10, n_classes, seed=0)
    return images[keep], noisy


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory) -> curator.Run:
    images, labels = _noisy_digits(240, 3)
    root = tmp_path_factory.mktemp("npz")
    np.savez(root / "digits.npz", X=images, y=labels)
    return score_small(root, tmp_path_factory.mktemp("runs") / "npz")


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> curator.Run:
    images, labels = _noisy_digits(240, 3)
    root = tmp_path_factory.mktemp("table")
    table = pd.DataFrame(images.reshape(len(images), -1).astype(float)).add_prefix("pixel")
    table.assign(label=labels).to_csv(root / "digits.csv", index=False)
    return score_small(root / "digits.csv", tmp_path_factory.mktemp("runs") / "table")


def test_report_is_one_self_contained_file(noisy_digits_run):
    page = Page(build_report(noisy_digits_run))
    images = page.all("img")
    assert len(images) == shown_thumbnails(noisy_digits_run) > 0
    assert all(img["src"].startswith(THUMB) for img in images)
    assert not page.all("link") and not page.all("iframe") and not page.all("object")
    assert all("src" not in attrs for attrs in page.all("script"))
    resources = [v for _, attrs in page.tags for k, v in attrs.items() if k in ("src", "href", "srcset", "action")]
    assert not [v for v in resources if not v.startswith("data:")]
    (csp,) = [a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; img-src data:;")


@needs_chromium
def test_every_thumbnail_loads_in_headless_chromium(noisy_digits_run, tmp_path):
    report = write_report(noisy_digits_run, tmp_path / "report.html")
    dom = rendered_dom(tmp_path, report)
    loaded, total = map(int, re.search(r'data-thumbnails-loaded="(\d+)/(\d+)"', dom).groups())
    assert loaded == total == shown_thumbnails(noisy_digits_run)
    chromium(tmp_path, "--window-size=1280,2000", f"--screenshot={tmp_path / 'report.png'}", report.as_uri())
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("L"), dtype=float)
    assert shot.shape == (2000, 1280) and shot.std() > 20     # a rendered page, not a blank one


@needs_chromium
def test_hostile_names_are_shown_as_text_never_run(hostile_run, tmp_path):
    report = write_report(hostile_run, tmp_path / "report.html")
    raw = Page(report.read_text(encoding="utf-8"))
    assert len(raw.all("script")) == 1                                   # only the report's own
    assert not [a for _, a in raw.tags if "onerror" in a]
    dom = rendered_dom(tmp_path, report)
    assert dom.count("<script") == 1 and "<script>alert(1)</script>" not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "&lt;img src=x onerror=alert(2)&gt;" in dom and "café 猫 ñ" in dom
    loaded, total = map(int, re.search(r'data-thumbnails-loaded="(\d+)/(\d+)"', dom).groups())
    assert loaded == total == shown_thumbnails(hostile_run)


def test_summary_shows_examples_classes_accuracy_and_stage_times(noisy_digits_run):
    text = build_report(noisy_digits_run)
    page = Page(text)
    m = noisy_digits_run.manifest
    assert "<b>1797</b>examples" in text and "<b>10</b>classes" in text
    assert f"<b>{m['proxy']['oof_accuracy']:.3f}</b>out-of-fold accuracy" in text
    stages = page.table("stage")
    assert [row[0] for row in stages[1:]] == list(m["stages"])
    assert [float(row[1]) for row in stages[1:]] == [round(s["seconds"], 1) for s in m["stages"].values()]


def test_flags_per_class_table_counts_every_flag(noisy_digits_run):
    rows = Page(build_report(noisy_digits_run)).table("class", "examples")
    assert rows[0] == ["class", "examples", "mislabeled", "outlier", "spurious", "suggested as new label"]
    table = pd.DataFrame(rows[1:], columns=rows[0]).set_index("class").astype(int)
    scores = noisy_digits_run.scores
    assert table["examples"].sum() == len(scores)
    expected = scores.groupby("label")["is_mislabeled"].sum()
    assert table["mislabeled"].to_dict() == expected.astype(int).to_dict()
    assert table["suggested as new label"].sum() == int(scores["is_mislabeled"].sum())


def test_histograms_count_every_example_and_every_flag(noisy_digits_run):
    scores = noisy_digits_run.scores
    svg = histogram_svg(scores["mislabeled_score"].to_numpy(), scores["is_mislabeled"].to_numpy(), "m")
    bins = re.findall(r"<title>[^<]*: (\d+) examples, (\d+) flagged</title>", svg)   # one per non-empty bin
    assert sum(int(n) for n, _ in bins) == len(scores)
    assert sum(int(f) for _, f in bins) == int(scores["is_mislabeled"].sum()) > 0
    assert build_report(noisy_digits_run).count("<svg") == 3


def _copy_run(run: curator.Run, tmp_path) -> tuple[Path, dict]:
    """A copy of ``run``'s files a report reads, and its manifest to edit."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in RUN_FILES:
        shutil.copy(run.path / name, run_dir / name)
    return run_dir, json.loads((run_dir / "manifest.json").read_text())


def test_spurious_groups_from_the_manifest_are_listed_with_thumbnails(noisy_digits_run, tmp_path):
    run_dir, manifest = _copy_run(noisy_digits_run, tmp_path)
    manifest.pop("spurious_groups", None)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert "No suspected spurious groups" in build_report(run_dir)

    ids = noisy_digits_run.scores.loc[noisy_digits_run.scores["label"] == "3", "id"].head(12).tolist()
    manifest["spurious_groups"] = [{"class": "3", "size": 12, "heldout_accuracy": 0.25, "ids": ids}]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    page = Page(build_report(run_dir))
    rows = page.table("class", "size")
    assert rows[0] == ["class", "size", "held-out accuracy", "examples"]
    assert rows[1][:3] == ["3", "12", "0.250"] and "and 4 more" in rows[1][3]
    titles = {img.get("title") for img in page.all("img")}
    assert set(ids[:8]) <= titles


def test_foreign_batches_from_the_manifest_are_listed_with_thumbnails(noisy_digits_run, tmp_path):
    run_dir, manifest = _copy_run(noisy_digits_run, tmp_path)
    assert manifest["foreign_batches"] == [] and "No foreign batches in this run" in build_report(run_dir)

    ids = noisy_digits_run.scores["id"].head(10).tolist()
    manifest["foreign_batches"] = [{"kind": "foreign", "fold": 0, "cluster": 3, "size": 10, "largest_label_share": 0.2,
                                    "label_mix_p": 0.4, "heldout_accuracy": 0.1, "chance_accuracy": 0.11, "ids": ids}]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    page = Page(build_report(run_dir))
    rows = page.table("size", "label mix p")
    assert rows[0] == ["size", "label mix p", "held-out accuracy", "chance", "examples"]
    assert rows[1][:4] == ["10", "0.400", "0.100", "0.110"] and "and 2 more" in rows[1][4]
    assert set(ids[:8]) <= {img.get("title") for img in page.all("img")}


def test_an_npz_file_beside_others_keeps_its_thumbnails(tmp_path):
    images, labels = _noisy_digits(240, 3)
    np.savez(tmp_path / "digits.npz", X=images, y=labels)
    np.savez(tmp_path / "other.npz", X=images[:50], y=labels[:50])      # the folder alone is ambiguous
    run = score_small(tmp_path / "digits.npz", tmp_path / "run")
    assert run.manifest["dataset"]["path"] == str(tmp_path / "digits.npz")
    assert len(Page(build_report(run)).all("img")) == shown_thumbnails(run) > 0


def test_examples_without_files_get_thumbnails_from_the_cached_inputs(npz_run):
    page = Page(build_report(npz_run))
    images = page.all("img")
    assert len(images) == shown_thumbnails(npz_run) > 0
    data = np.load(npz_run.manifest["dataset"]["path"] + "/digits.npz")
    for img in images[:10]:
        picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(img["src"][len(THUMB):]))))
        assert picture.shape == (96, 96)                           # 8x8 enlarged by whole pixels
        np.testing.assert_array_equal(picture[::12, ::12], data["X"][int(img["title"])])


def test_a_table_dataset_report_has_no_pictures_but_all_the_cards(table_run):
    text = build_report(table_run)
    page = Page(text)
    assert not page.all("img")
    cards = [a for a in page.all("div") if a.get("class") == "card"]
    assert len(cards) == shown_thumbnails(table_run) > 0
    assert "This dataset has no images" in text


def test_report_command_writes_into_the_run_by_default(hostile_run, tmp_path):
    result = CliRunner().invoke(main, ["report", str(hostile_run.path)])
    assert result.exit_code == 0 and result.output.strip() == str(hostile_run.path / "report.html")
    assert (hostile_run.path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    result = CliRunner().invoke(main, ["report", str(hostile_run.path), "--out", str(tmp_path / "r.html"),
                                       "--per-issue", "2"])
    assert result.exit_code == 0
    assert len(Page((tmp_path / "r.html").read_text(encoding="utf-8")).all("img")) == shown_thumbnails(hostile_run, 2)
