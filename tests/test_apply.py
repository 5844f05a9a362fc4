"""curator apply: the team's reviews -> corrected manifest + change log, never touching the dataset."""

from __future__ import annotations

import hashlib
import json
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits

import curator
from curator.apply import ReviewError, apply_reviews
from curator.cli import main
from curator.export import export
from curator.export.csvfile import restore
from curator.store import RUN_FILES
from test_export import score_small, write_hostile_dataset


@pytest.fixture(scope="module")
def true_label(noisy_digits_run) -> dict[str, str]:
    """id -> the digit actually drawn (ids are <given class>/<index into sklearn's digits>.png)."""
    target = load_digits().target
    return {i: str(target[int(i.split("/")[1][:5])]) for i in noisy_digits_run.scores["id"]}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> curator.Run:
    root = write_hostile_dataset(tmp_path_factory.mktemp("hostile"))
    return score_small(root, tmp_path_factory.mktemp("runs") / "hostile")


def annotate(task: dict, choice: str, *, remove: bool = False, who: object = 7,
             when: str = "2026-01-05T09:00:00Z") -> None:
    """What Label Studio's JSON export holds once a reviewer submitted ``task``."""
    result = [{"id": "a1", "from_name": "label", "to_name": "image", "type": "choices",
               "value": {"choices": [choice]}}]
    if remove:
        result.append({"id": "a2", "from_name": "decision", "to_name": "image", "type": "choices",
                       "value": {"choices": ["remove"]}})
    task.setdefault("annotations", []).append({"id": len(task.get("annotations", [])) + 1, "result": result,
                                               "completed_by": who, "was_cancelled": False,
                                               "created_at": when, "updated_at": when})


def labelstudio_tasks(run, tmp_path, issue="mislabeled") -> list[dict]:
    out = export(run, "labelstudio", out=tmp_path / "tasks.json", issue=issue)[0]
    return json.loads(out.read_text(encoding="utf-8"))


def write_json(path, tasks):
    path.write_text(json.dumps(tasks), encoding="utf-8")
    return path


def copy_run(run, dest) -> curator.Run:
    """The run's files without artifacts, so a test may write into the run directory."""
    dest.mkdir()
    for name in RUN_FILES:
        shutil.copy(run.path / name, dest / name)
    return curator.Run(dest)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_labelstudio_round_trip_applies_the_annotators_relabels(noisy_digits_run, true_label, tmp_path):
    run = copy_run(noisy_digits_run, tmp_path / "run")
    tasks = labelstudio_tasks(run, tmp_path)
    reviewed = tasks[:-5]                                  # the last five are not done yet
    for task in reviewed:                                  # an annotator who knows the true digit
        annotate(task, true_label[task["data"]["curator_id"]], who={"id": 3, "email": "ann@example.org"})
    manifest_path, changes_path = apply_reviews(run, write_json(tmp_path / "export.json", tasks))
    assert (manifest_path, changes_path) == (run.path / "corrected_manifest.csv", run.path / "changes.csv")
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    changes = pd.read_csv(changes_path, dtype=str, keep_default_na=False)

    given = dict(zip(noisy_digits_run.scores["id"], noisy_digits_run.scores["label"]))
    wrong = {t["data"]["curator_id"] for t in reviewed if true_label[t["data"]["curator_id"]] != given[t["data"]["curator_id"]]}
    assert len(wrong) >= 80                                # most flagged labels really were flipped
    assert list(manifest.columns) == ["id", "path", "label"] and len(manifest) == 1797
    assert list(changes.columns) == ["id", "old_label", "new_label", "decision", "who", "when"]
    assert len(changes) == len(reviewed)
    assert set(changes.loc[changes["decision"] == "relabel", "id"]) == wrong
    assert (changes["decision"] == "keep").sum() == len(reviewed) - len(wrong)
    assert set(changes["who"]) == {"ann@example.org"} and set(changes["when"]) == {"2026-01-05T09:00:00Z"}

    errors_before = sum(given[i] != true_label[i] for i in given)
    errors_after = int((manifest["label"] != manifest["id"].map(true_label)).sum())
    assert errors_after == errors_before - len(wrong)
    untouched = [t["data"]["curator_id"] for t in tasks[-5:]]
    assert manifest.set_index("id").loc[untouched, "label"].tolist() == [given[i] for i in untouched]


def test_the_latest_annotation_counts_and_remove_drops_the_example(noisy_digits_run, tmp_path):
    tasks = labelstudio_tasks(noisy_digits_run, tmp_path)[:3]
    first, second, third = (t["data"] for t in tasks)
    annotate(tasks[0], "0", when="2026-01-05T09:00:00Z")
    annotate(tasks[0], first["given_label"], remove=True, who=11, when="2026-01-06T10:00:00Z")
    annotate(tasks[1], "0", when="2026-01-05T09:00:00Z")
    tasks[1]["annotations"].append({"result": [], "was_cancelled": True, "updated_at": "2026-01-07T00:00:00Z"})
    manifest, changes = apply_reviews(noisy_digits_run, write_json(tmp_path / "e.json", tasks), tmp_path / "m.csv")
    assert changes == tmp_path / "changes.csv"
    manifest = pd.read_csv(manifest, dtype=str)
    log = pd.read_csv(changes, dtype=str, keep_default_na=False).set_index("id")
    assert first["curator_id"] not in set(manifest["id"]) and len(manifest) == 1796
    assert log.loc[first["curator_id"]].tolist() == [first["given_label"], "", "remove", "11", "2026-01-06T10:00:00Z"]
    expected = "keep" if second["given_label"] == "0" else "relabel"
    assert log.loc[second["curator_id"], "decision"] == expected    # the skipped re-review changes nothing
    assert third["curator_id"] not in log.index


def test_csv_reviews_relabel_remove_and_keep(noisy_digits_run, true_label, tmp_path):
    sheet = export(noisy_digits_run, "csv", out=tmp_path / "review.csv")[0]
    table = pd.read_csv(sheet, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    a, b, c = table["id"][:3]
    table.loc[0, ["decision", "label"]] = ["relabel", "7"]
    table.loc[1, "decision"] = "remove"
    table.loc[2, ["decision", "label"]] = ["Keep", "not a class, ignored for keep"]
    table.to_csv(sheet, index=False, encoding="utf-8-sig")
    manifest, changes = apply_reviews(noisy_digits_run, sheet, tmp_path / "out" / "manifest.csv")
    manifest = pd.read_csv(manifest, dtype=str).set_index("id")
    log = pd.read_csv(changes, dtype=str, keep_default_na=False)
    given = dict(zip(noisy_digits_run.scores["id"], noisy_digits_run.scores["label"]))
    assert len(manifest) == 1796 and b not in manifest.index
    assert manifest.loc[a, "label"] == "7" and manifest.loc[c, "label"] == given[c]
    assert log.set_index("id")["decision"].to_dict() == {a: "relabel", b: "remove", c: "keep"}
    assert log.set_index("id").loc[a, ["old_label", "new_label"]].tolist() == [given[a], "7"]
    assert (manifest["path"] == manifest.index).all()       # image-folder ids are their paths


def test_hostile_class_names_survive_the_spreadsheet_round_trip(hostile_run, tmp_path):
    sheet = export(hostile_run, "csv", out=tmp_path / "review.csv")[0]
    table = pd.read_csv(sheet, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    table["decision"] = "relabel"
    table["label"] = "'=1+1"               # as the export writes the class "=1+1" (formula guard)
    table.loc[1, "label"] = "\"quote\" & 'apos', comma"
    table.to_csv(sheet, index=False, encoding="utf-8-sig")
    manifest, _ = apply_reviews(hostile_run, sheet, tmp_path / "m.csv")
    manifest = pd.read_csv(manifest, dtype=str, keep_default_na=False).set_index("id")
    ids = pd.read_csv(sheet, dtype=str, keep_default_na=False, encoding="utf-8-sig")["id"]
    relabelled = manifest.loc[ids.map(restore), "label"]
    assert relabelled.iloc[1] == "\"quote\" & 'apos', comma"
    assert (relabelled.drop(relabelled.index[1]) == "=1+1").all()
    assert set(manifest["path"]) == set(hostile_run.scores["path"])


def test_applying_the_same_reviews_twice_writes_the_same_bytes(noisy_digits_run, true_label, tmp_path):
    tasks = labelstudio_tasks(noisy_digits_run, tmp_path)
    for task in tasks[:20]:
        annotate(task, true_label[task["data"]["curator_id"]])
    reviews = write_json(tmp_path / "export.json", tasks)
    first = [digest(p) for p in apply_reviews(noisy_digits_run, reviews, tmp_path / "m.csv")]
    second = [digest(p) for p in apply_reviews(noisy_digits_run, reviews, tmp_path / "m.csv")]
    elsewhere = [digest(p) for p in apply_reviews(noisy_digits_run, reviews, tmp_path / "again" / "m.csv")]
    assert first == second == elsewhere


def test_the_dataset_and_the_run_are_never_modified(noisy_digits, noisy_digits_run, tmp_path):
    root, _ = noisy_digits
    before = {p: digest(p) for p in root.rglob("*") if p.is_file()}
    run_before = {p.name: digest(p) for p in noisy_digits_run.path.iterdir() if p.is_file()}
    sheet = export(noisy_digits_run, "csv", out=tmp_path / "review.csv")[0]
    table = pd.read_csv(sheet, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    table["decision"] = "remove"
    table.to_csv(sheet, index=False, encoding="utf-8-sig")
    apply_reviews(noisy_digits_run, sheet, tmp_path / "m.csv")
    assert {p: digest(p) for p in root.rglob("*") if p.is_file()} == before
    assert {n: h for n, h in ((p.name, digest(p)) for p in noisy_digits_run.path.iterdir() if p.is_file())
            if n in run_before} == run_before


@pytest.mark.parametrize("rows, message", [
    ("id,decision,label\nnope/1.png,relabel,3\n", "id 'nope/1.png' is not an example of run"),
    ("id,decision,label\n{id},relabel,ten\n", "label 'ten' for id '{id}' names no class"),
    ("id,decision,label\n{id},delete,\n", "line 2: decision 'delete' is not one of relabel, remove, keep"),
    ("id,decision,label\n{id},relabel,\n", "id '{id}': relabel without a label"),
    ("id,decision,label\n{id},keep,\n{id},remove,\n", "id '{id}' is reviewed more than once"),
    ("id,verdict\n{id},keep\n", "missing column 'decision'"),
])
def test_bad_reviews_are_one_line_errors_naming_the_problem(noisy_digits_run, tmp_path, rows, message):
    example = noisy_digits_run.scores["id"].iloc[0]
    reviews = tmp_path / "reviews.csv"
    reviews.write_text(rows.format(id=example))
    out = tmp_path / "m.csv"
    with pytest.raises(ReviewError, match=message.format(id=example).replace("(", r"\(")):
        apply_reviews(noisy_digits_run, reviews, out)
    assert not out.exists()
    result = CliRunner().invoke(main, ["apply", str(noisy_digits_run.path), str(reviews), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_labelstudio_errors_name_the_task_or_the_label(noisy_digits_run, tmp_path):
    tasks = labelstudio_tasks(noisy_digits_run, tmp_path)[:2]
    annotate(tasks[0], "eleven")
    with pytest.raises(ReviewError, match=f"label 'eleven' for id '{tasks[0]['data']['curator_id']}' names no class"):
        apply_reviews(noisy_digits_run, write_json(tmp_path / "e.json", tasks), tmp_path / "m.csv")
    json_min = [{"image": "/data/x.png", "label": "3", "annotator": 1}]
    with pytest.raises(ReviewError, match="task 1 has no data.curator_id"):
        apply_reviews(noisy_digits_run, write_json(tmp_path / "min.json", json_min), tmp_path / "m.csv")


def test_apply_command_prints_both_paths(noisy_digits_run, tmp_path):
    reviews = tmp_path / "r.csv"
    reviews.write_text(f"id,decision,label\n{noisy_digits_run.scores['id'].iloc[0]},relabel,5\n")
    result = CliRunner().invoke(main, ["apply", str(noisy_digits_run.path), str(reviews), "--out",
                                       str(tmp_path / "fixed.csv")])
    assert result.exit_code == 0
    assert result.output.split() == [str(tmp_path / "fixed.csv"), str(tmp_path / "changes.csv")]
