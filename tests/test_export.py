"""curator export: Label Studio tasks + labelling config, CVAT for images 1.1, CSV; review_queue.parquet."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import jsonschema
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import curator
from curator.cli import main
from curator.export import export, flagged_examples
from curator.export.csvfile import defuse, restore
from datasets import digits_images, flip_labels

HOSTILE_CLASSES = ["<script>alert(1)</script>", "\"quote\" & 'apos', comma", "café 猫 ñ", "=1+1"]
HOSTILE_NAMES = ["<img src=x onerror=alert(2)> {i:03d}.png", "q\"uote'#?%20 {i:03d}.png", "ünï/{i:03d}.png",
                 "bell\x07 {i:03d}.png"]


def write_hostile_dataset(root: Path, n: int = 300) -> Path:
    """Real digits 0-3 under class names and file names that break naive escaping, 10% labels
    flipped, as a manifest dataset (a '/' cannot be in a folder name, but it can be in a label)."""
    images, labels = digits_images()
    keep = np.flatnonzero(labels < len(HOSTILE_CLASSES))[:n]
    noisy, _ = flip_labels(labels[keep], 0.10, len(HOSTILE_CLASSES), seed=0)
    rows = []
    for i, (img, y) in enumerate(zip(images[keep], noisy)):
        rel = HOSTILE_NAMES[i % len(HOSTILE_NAMES)].format(i=i)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / rel)
        rows.append({"path": rel, "label": HOSTILE_CLASSES[y]})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def score_small(dataset: Path, out: Path) -> curator.Run:
    """A quick run: two dynamics scorers, three epochs."""
    return curator.score(dataset, out=out, seed=0, epochs=3, scorers="learning_speed,early_learning",
                         progress=False)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> curator.Run:
    root = write_hostile_dataset(tmp_path_factory.mktemp("hostile"))
    return score_small(root, tmp_path_factory.mktemp("runs") / "hostile")


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory) -> curator.Run:
    """Digit images in an .npz, 10% of labels flipped: examples without files."""
    images, labels = digits_images()
    root = tmp_path_factory.mktemp("npz")
    keep = np.flatnonzero(labels < 3)[:240]
    noisy, _ = flip_labels(labels[keep], 0.10, 3, seed=0)
    np.savez(root / "digits.npz", X=images[keep], y=noisy, classes=np.array(["zero", "one", "two"]))
    return score_small(root, tmp_path_factory.mktemp("runs") / "npz")


# Label Studio's documented task import format (labelstud.io/guide/task_format, /guide/predictions):
# a list of tasks; each has `data` (keys referenced as $key by the labelling config) and optionally
# `id`, `meta`, `annotations` and `predictions`. A prediction has `model_version`, `score` and a
# `result` list of regions, each naming `from_name` (a control tag), `to_name` (an object tag),
# `type` (the control tag type, lower case) and a `value` ({"choices": [...]} for Choices).
LABEL_STUDIO_TASKS = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "items": {
        "type": "object",
        "required": ["data"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "data": {"type": "object", "minProperties": 1},
            "meta": {"type": "object"},
            "annotations": {"type": "array"},
            "predictions": {"type": "array", "items": {"$ref": "#/$defs/prediction"}},
        },
    },
    "$defs": {
        "prediction": {
            "type": "object",
            "required": ["result"],
            "additionalProperties": False,
            "properties": {
                "model_version": {"type": "string"},
                "score": {"type": "number"},
                "result": {"type": "array", "items": {"$ref": "#/$defs/region"}},
            },
        },
        "region": {
            "type": "object",
            "required": ["from_name", "to_name", "type", "value"],
            "properties": {
                "id": {"type": "string"},
                "from_name": {"type": "string"},
                "to_name": {"type": "string"},
                "type": {"type": "string", "pattern": "^[a-z]+$"},
                "value": {"type": "object"},
            },
            "if": {"properties": {"type": {"const": "choices"}}},
            "then": {"properties": {"value": {
                "type": "object", "required": ["choices"],
                "properties": {"choices": {"type": "array", "minItems": 1, "items": {"type": "string"}}}}}},
        },
    },
}


def _labelstudio(run, tmp_path, *extra):
    out = tmp_path / "tasks.json"
    result = CliRunner().invoke(main, ["export", str(run.path), "--to", "labelstudio", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(out), str(tmp_path / "tasks.config.xml")]
    return json.loads(out.read_text(encoding="utf-8")), ET.parse(tmp_path / "tasks.config.xml").getroot()


def test_review_queue_parquet_matches_the_csv_with_typed_columns(noisy_digits_run):
    queue = pd.read_parquet(noisy_digits_run.path / "review_queue.parquet")
    csv = noisy_digits_run.review_queue
    assert len(queue) == len(csv) == sum(noisy_digits_run.manifest["flag_counts"].values())
    assert list(queue.columns) == list(csv.columns)
    assert queue["id"].tolist() == csv["id"].tolist()
    np.testing.assert_allclose(queue["score"], csv["score"], rtol=1e-6)
    assert queue["score"].dtype == np.float32


def test_flagged_examples_are_one_row_per_example_worst_first(noisy_digits_run):
    rows = flagged_examples(noisy_digits_run)
    scores = noisy_digits_run.scores
    any_flag = scores["is_mislabeled"] | scores["is_outlier"] | scores["is_spurious"]
    assert len(rows) == int(any_flag.sum()) and rows["id"].is_unique
    assert (np.diff(rows["score"].to_numpy()) <= 0).all()
    mislabeled = flagged_examples(noisy_digits_run, "mislabeled")
    assert len(mislabeled) == int(scores["is_mislabeled"].sum())


def test_labelstudio_tasks_follow_the_documented_import_format(noisy_digits_run, tmp_path):
    tasks, _ = _labelstudio(noisy_digits_run, tmp_path)
    jsonschema.validate(tasks, LABEL_STUDIO_TASKS)
    assert len(tasks) == len(flagged_examples(noisy_digits_run))
    first = tasks[0]["data"]
    assert first["image"] == f"/data/local-files/?d={Path(noisy_digits_run.manifest['dataset']['path']).name}/{first['path']}"
    for key in ("curator_id", "given_label", "suggested_label", "issue", "score", "reasons"):
        assert key in first


def test_labelstudio_prediction_scores_put_the_worst_first(noisy_digits_run, tmp_path):
    tasks, _ = _labelstudio(noisy_digits_run, tmp_path, "--issue", "mislabeled")
    issue_scores = [t["data"]["score"] for t in tasks]
    prediction_scores = [t["predictions"][0]["score"] for t in tasks]
    # Label Studio lists the lowest prediction score first; the task order agrees.
    assert np.argmin(prediction_scores) == 0 and np.argmax(issue_scores) == 0
    np.testing.assert_allclose(prediction_scores, 1 - np.array(issue_scores), atol=1e-4)
    assert all(t["predictions"][0]["result"][0]["value"]["choices"] == [t["data"]["suggested_label"]] for t in tasks)
    assert {t["data"]["issue"] for t in tasks} == {"mislabeled"}


def test_labelstudio_predictions_match_the_labelling_config(hostile_run, tmp_path):
    tasks, config = _labelstudio(hostile_run, tmp_path)
    assert config.tag == "View"
    image = config.find("Image")
    choices = {c.get("name"): c for c in config.iter("Choices")}
    assert [c.get("value") for c in choices["label"]] == hostile_run.classes
    assert choices["label"].get("toName") == image.get("name")
    data_keys = {e.get("value")[1:] for e in config.iter() if (e.get("value") or "").startswith("$")}
    for task in tasks:
        assert data_keys <= set(task["data"])
        region = task["predictions"][0]["result"][0]
        assert (region["from_name"], region["to_name"], region["type"]) == ("label", image.get("name"), "choices")
        assert region["value"]["choices"][0] in hostile_run.classes


def test_labelstudio_config_has_no_xml_declaration_which_label_studio_rejects(noisy_digits_run, tmp_path):
    _labelstudio(noisy_digits_run, tmp_path)
    assert (tmp_path / "tasks.config.xml").read_bytes().startswith(b"<View>")   # a declaration: HTTP 500
    cvat = export(noisy_digits_run, "cvat", out=tmp_path / "cvat.xml")[0]
    assert cvat.read_bytes().startswith(b"<?xml version='1.0' encoding='utf-8'?>")   # CVAT's keeps it


def test_labelstudio_keeps_hostile_names_intact_and_urls_encoded(hostile_run, tmp_path):
    tasks, _ = _labelstudio(hostile_run, tmp_path)
    jsonschema.validate(tasks, LABEL_STUDIO_TASKS)
    by_id = hostile_run.scores.set_index("id")
    dataset = Path(hostile_run.manifest["dataset"]["path"]).name
    for task in tasks:
        data = task["data"]
        assert data["given_label"] == by_id.loc[data["curator_id"], "label"]
        url = urlparse(data["image"])
        assert url.path == "/data/local-files/" and not set(url.query) & set(" <>\"'#")
        assert parse_qs(url.query)["d"] == [f"{dataset}/{data['path']}"]
    assert {t["data"]["given_label"] for t in tasks} <= set(HOSTILE_CLASSES)


def test_labelstudio_image_root_url_prefix(hostile_run, tmp_path):
    tasks, _ = _labelstudio(hostile_run, tmp_path, "--image-root", "https://data.example.org/digits/")
    data = tasks[0]["data"]
    assert data["image"].startswith("https://data.example.org/digits/")
    assert unquote(data["image"][len("https://data.example.org/digits/"):]) == data["path"]
    tasks, _ = _labelstudio(hostile_run, tmp_path, "--image-root", "projects/digits")
    assert parse_qs(urlparse(tasks[0]["data"]["image"]).query)["d"] == [f"projects/digits/{tasks[0]['data']['path']}"]


def test_labelstudio_embeds_pictures_of_examples_without_files(npz_run, tmp_path):
    tasks, _ = _labelstudio(npz_run, tmp_path)
    assert len(tasks) > 0
    for task in tasks:
        assert task["data"]["path"] == "" and task["data"]["image"].startswith("data:image/png;base64,")


def test_cvat_xml_has_the_images_1_1_structure(noisy_digits_run, tmp_path):
    out = export(noisy_digits_run, "cvat", out=tmp_path / "cvat.xml")[0]
    root = ET.parse(out).getroot()
    rows = flagged_examples(noisy_digits_run)
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    task = root.find("meta/task")
    assert task.findtext("mode") == "annotation" and int(task.findtext("size")) == len(rows)
    assert [label.findtext("name") for label in task.findall("labels/label")] == noisy_digits_run.classes
    images = root.findall("image")
    assert len(images) == len(rows)
    assert [i.get("name") for i in images] == rows["path"].tolist()
    assert {(i.get("width"), i.get("height")) for i in images} == {("8", "8")}
    for image, row in zip(images, rows.itertuples()):
        (tag,) = image.findall("tag")
        attributes = {a.get("name"): a.text for a in tag.findall("attribute")}
        assert tag.get("label") == row.suggested_label
        assert attributes["issue"] == row.issue and attributes["given_label"] == row.label


def test_cvat_xml_escapes_hostile_names(hostile_run, tmp_path):
    out = export(hostile_run, "cvat", out=tmp_path / "cvat.xml")[0]
    root = ET.parse(out).getroot()  # would raise on a raw '<', '&' or control character
    assert [n.findtext("name") for n in root.findall("meta/task/labels/label")] == hostile_run.classes
    names = {i.get("name") for i in root.findall("image")}
    paths = set(flagged_examples(hostile_run)["path"])
    assert {n for n in names if "\ufffd" not in n} == {p for p in paths if "\x07" not in p}
    assert {n.replace("\ufffd", "\x07") for n in names} == paths   # only the control character is replaced
    assert {t.get("label") for t in root.iter("tag")} <= set(HOSTILE_CLASSES)


def test_csv_round_trips_hostile_names_and_defuses_formulas(hostile_run, tmp_path):
    out = export(hostile_run, "csv", out=tmp_path / "review.csv")[0]
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")   # BOM: spreadsheets read it as UTF-8
    table = pd.read_csv(out, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    rows = flagged_examples(hostile_run)
    assert list(table.columns) == ["id", "path", "given_label", "suggested_label", "issue", "issues", "score",
                                   "reasons", "decision", "label"]
    assert table["id"].map(restore).tolist() == rows["id"].tolist()
    assert table["given_label"].map(restore).tolist() == rows["label"].tolist()
    assert (table["decision"] == "").all() and table["label"].tolist() == table["suggested_label"].tolist()
    formula = table.loc[table["given_label"].str.contains("1+1", regex=False), "given_label"]
    assert len(formula) > 0 and (formula == "'=1+1").all()


@given(st.text())
def test_formula_guard_is_reversible(text):
    assert restore(defuse(text)) == text
    assert defuse(text)[:1] not in ("=", "+", "-", "@", "\t", "\r")


def test_same_run_exports_the_same_bytes(noisy_digits_run, tmp_path):
    for to in ("labelstudio", "cvat", "csv"):
        a = export(noisy_digits_run, to, out=tmp_path / "a" / f"{to}.out")[0].read_bytes()
        b = export(noisy_digits_run, to, out=tmp_path / "b" / f"{to}.out")[0].read_bytes()
        assert a == b, to


def test_default_paths_are_in_the_run_directory_named_by_format_and_issue(hostile_run, tmp_path):
    run = curator.Run(hostile_run.path)
    written = export(run, "cvat", issue="spurious")
    assert written == [run.path / "cvat-spurious.xml"]
    assert len(ET.parse(written[0]).getroot().findall("image")) == int(run.scores["is_spurious"].sum())
    written[0].unlink()


def test_bad_options_are_one_line_errors(noisy_digits_run, tmp_path):
    with pytest.raises(curator.ConfigError, match="--issue 'typo'"):
        export(noisy_digits_run, "csv", out=tmp_path / "x.csv", issue="typo")
    with pytest.raises(curator.ConfigError, match="--to 'excel'"):
        export(noisy_digits_run, "excel")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "missing"), "--to", "csv"])
    assert result.exit_code == 2 and result.output.startswith("Error:") and result.output.count("\n") == 1
