"""curator against a real Label Studio server (the version `make labelstudio` pins; tests/services.py).

What a labelling team meets: the labelling config of `curator export --to labelstudio` loads (the
server validates it), the tasks import with their predictions, every image is served byte for byte
from the dataset folder, and the team's answers, through the server's own JSON export, become
exactly the expected corrected manifest and change log. Then `curator push` and `curator pull` do
the same through the API: each example once however often it is pushed, annotators by email.
"""

from __future__ import annotations

import json
import re
import shutil
from itertools import zip_longest

import pandas as pd
import pytest
from click.testing import CliRunner

import curator
from curator.cli import main
from curator.export import flagged_examples
from curator.export.images import ExampleImages
from curator.export.labelstudio import labelling_config
from curator.labelstudio import API_KEY_ENV
from curator.store import RUN_FILES
from datasets import digits_images, flip_labels, write_image_folder
from services import free_port
from test_export import HOSTILE_CLASSES, write_hostile_dataset

pytestmark = pytest.mark.service

CLASSES = [str(i) for i in range(10)]
SCORERS = "learning_speed,early_learning"    # two dynamics scorers: a run in seconds


def write_digits(root, n: int, seed: int) -> dict[str, str]:
    """The first ``n`` of scikit-learn's real digits as an image folder, 10% of labels flipped.
    Returns id -> the digit actually drawn."""
    images, labels = digits_images()
    noisy, _ = flip_labels(labels[:n], 0.10, 10, seed=seed)
    paths = write_image_folder(root, images[:n], noisy, CLASSES)
    return dict(zip(paths, (str(y) for y in labels[:n])))


def score(root, out, epochs: int = 3) -> curator.Run:
    return curator.score(root, out=out, seed=0, epochs=epochs, scorers=SCORERS, progress=False)


@pytest.fixture(scope="module")
def digits(label_studio, tmp_path_factory) -> curator.Run:
    """300 noisy digits in the server's document root, scored."""
    root = label_studio.document_root / "digits"
    write_digits(root, 300, seed=0)
    return score(root, tmp_path_factory.mktemp("runs") / "digits")


@pytest.fixture(scope="module")
def admin_id(label_studio) -> int:
    return label_studio.ok("GET", "/api/current-user/whoami")["id"]


@pytest.fixture(scope="module")
def bob(label_studio) -> dict:
    """A second annotator (the admin's token posts annotations in his name)."""
    return label_studio.ok("POST", "/api/users/", {"email": "bob@example.org", "username": "bob",
                                                    "password": "bob-password-123"})


def annotate(ls, task_id: int, label: str | None = None, *, remove: bool = False, skip: bool = False,
             user: int | None = None) -> None:
    """Submit an annotation as a reviewer does in the labelling interface."""
    result = []
    if label is not None:
        result.append({"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}})
    if remove:
        result.append({"from_name": "decision", "to_name": "image", "type": "choices",
                       "value": {"choices": ["remove"]}})
    body = {"result": result, "was_cancelled": skip, **({"completed_by": user} if user is not None else {})}
    ls.ok("POST", f"/api/tasks/{task_id}/annotations/", body)


def project_tasks(ls, project_id: int) -> list[dict]:
    """Every task of the project, through the JSON export, in task id order (= curator's worst first)."""
    return sorted(ls.ok("GET", f"/api/projects/{project_id}/export?exportType=JSON&download_all_tasks=true"),
                  key=lambda t: t["id"])


def invoke(*args, token: str | None):
    """The CLI with LABEL_STUDIO_API_KEY set to ``token`` (None: unset)."""
    return CliRunner().invoke(main, [str(a) for a in args], env={API_KEY_ENV: token, "LABEL_STUDIO_URL": None})


def push(ls, run, *extra, token: str | None = None):
    return invoke("push", run.path, "--labelstudio", ls.url, *extra, token=token or ls.token)


def other_class(*taken: str) -> str:
    return next(c for c in CLASSES if c not in taken)


def read_csv(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_a_team_reviews_the_exported_tasks_in_label_studio_and_apply_writes_their_decisions(
        digits, label_studio, admin_id, bob, tmp_path):
    ls, run = label_studio, digits
    dataset = ExampleImages(run).root
    out = tmp_path / "tasks.json"
    assert invoke("export", run.path, "--to", "labelstudio", "--out", out, token=None).exit_code == 0
    tasks = json.loads(out.read_text(encoding="utf-8"))
    config = (tmp_path / "tasks.config.xml").read_text(encoding="utf-8")

    project = ls.ok("POST", "/api/projects", {"title": "curator round trip", "label_config": config})
    pid = project["id"]
    ls.ok("POST", f"/api/projects/{pid}/validate/", {"label_config": config})
    assert project["parsed_label_config"]["label"]["labels"] == run.classes
    assert project["parsed_label_config"]["decision"]["labels"] == ["remove"]
    ls.ok("POST", "/api/storages/localfiles", {"project": pid, "path": str(dataset), "use_blob_urls": True,
                                               "title": dataset.name})
    imported = ls.ok("POST", f"/api/projects/{pid}/import", tasks)
    assert imported["task_count"] == imported["prediction_count"] == len(tasks) >= 6

    served = project_tasks(ls, pid)
    assert [t["data"]["curator_id"] for t in served] == [t["data"]["curator_id"] for t in tasks]
    loaded = 0
    for task in served:
        status, body = ls.api("GET", task["data"]["image"])
        assert status == 200 and body == (dataset / task["data"]["path"]).read_bytes(), task["data"]["image"]
        loaded += 1
    predictions = {p["task"]: p for p in ls.ok("GET", f"/api/predictions?project={pid}")}
    for task in served:
        prediction = predictions[task["id"]]
        assert prediction["result"][0]["value"]["choices"] == [task["data"]["suggested_label"]]
        assert prediction["score"] == pytest.approx(1 - task["data"]["score"], abs=1e-4)

    # Six reviews of tasks whose suggestion differs from the given label; the rest stay unreviewed.
    accept, other, keep, remove, skip, twice = [t for t in served
                                                if t["data"]["suggested_label"] != t["data"]["given_label"]][:6]
    given = {t["id"]: t["data"]["given_label"] for t in served}
    suggested = {t["id"]: t["data"]["suggested_label"] for t in served}
    other_label = other_class(given[other["id"]], suggested[other["id"]])
    twice_label = other_class(given[twice["id"]], suggested[twice["id"]])
    annotate(ls, accept["id"], suggested[accept["id"]])
    annotate(ls, other["id"], other_label)
    annotate(ls, keep["id"], given[keep["id"]])
    annotate(ls, remove["id"], given[remove["id"]], remove=True)
    annotate(ls, skip["id"], skip=True)
    annotate(ls, twice["id"], suggested[twice["id"]])
    annotate(ls, twice["id"], twice_label, user=bob["id"])                  # the later annotation counts
    admin = str(admin_id)
    expected = {  # curator_id -> (old_label, new_label, decision, who: a user id in Label Studio's export)
        accept["data"]["curator_id"]: (given[accept["id"]], suggested[accept["id"]], "relabel", admin),
        other["data"]["curator_id"]: (given[other["id"]], other_label, "relabel", admin),
        keep["data"]["curator_id"]: (given[keep["id"]], given[keep["id"]], "keep", admin),
        remove["data"]["curator_id"]: (given[remove["id"]], "", "remove", admin),
        twice["data"]["curator_id"]: (given[twice["id"]], twice_label, "relabel", str(bob["id"])),
    }

    reviewed = ls.ok("GET", f"/api/projects/{pid}/export?exportType=JSON")   # annotated tasks, skipped included
    assert sorted(t["id"] for t in reviewed) == sorted(t["id"] for t in (accept, other, keep, remove, skip, twice))
    (tmp_path / "export.json").write_text(json.dumps(reviewed), encoding="utf-8")
    manifest_path = tmp_path / "out" / "corrected_manifest.csv"
    result = invoke("apply", run.path, tmp_path / "export.json", "--out", manifest_path, token=None)
    assert result.exit_code == 0, result.output

    changes = read_csv(manifest_path.with_name("changes.csv"))
    manifest = read_csv(manifest_path)
    got = {row.id: (row.old_label, row.new_label, row.decision, row.who) for row in changes.itertuples()}
    new_label = {i: new for i, (_, new, _, _) in expected.items()}
    want_manifest = [[i, p, new_label.get(i, y)] for i, p, y in zip(run.scores["id"], run.scores["path"],
                                                                     run.scores["label"]) if new_label.get(i, y) != ""]
    mismatches = sum(got.get(i) != expected.get(i) for i in set(got) | set(expected)) + \
        sum(a != b for a, b in zip_longest(manifest.values.tolist(), want_manifest))
    version = ls.ok("GET", "/api/version")["release"]
    print(f"\nLabel Studio {version}: {imported['task_count']} tasks, {imported['prediction_count']} predictions, "
          f"{loaded}/{len(served)} images served byte for byte, {len(changes)} decisions applied, "
          f"{mismatches} mismatches")
    assert got == expected
    assert changes["when"].str.match(r"^\d{4}-\d\d-\d\dT").all()
    assert manifest.values.tolist() == want_manifest and len(manifest) == len(run.scores) - 1
    assert mismatches == 0


def test_push_creates_the_project_once_and_imports_each_example_once(digits, label_studio):
    ls, run = label_studio, digits
    dataset = ExampleImages(run).root
    n = len(flagged_examples(run))
    first = push(ls, run)
    assert first.exit_code == 0, first.output
    header, storage, counts = first.output.splitlines()
    pid = int(re.fullmatch(r"project (\d+) 'curator digits' \(created\): (\S+)", header).group(1))
    assert header.endswith(f": {ls.url}/projects/{pid}")
    assert storage == f"local files storage {dataset} (added)"
    assert counts == f"{n} tasks imported ({n} predictions), 0 already in the project"

    for again in (push(ls, run), push(ls, run, "--project", pid)):        # by title, then by id
        assert again.output.splitlines() == [f"project {pid} 'curator digits': {ls.url}/projects/{pid}",
                                             f"local files storage {dataset}",
                                             f"0 tasks imported (0 predictions), {n} already in the project"]
    assert len(project_tasks(ls, pid)) == n
    assert [s["path"] for s in ls.ok("GET", f"/api/storages/localfiles?project={pid}")] == [str(dataset)]
    assert ls.ok("GET", f"/api/projects/{pid}")["label_config"].strip() == labelling_config(run.classes).strip()


def test_a_nightly_push_adds_only_the_examples_new_to_the_project(label_studio, tmp_path_factory):
    ls = label_studio
    root = ls.document_root / "nightly"
    runs = tmp_path_factory.mktemp("nightly-runs")
    write_digits(root, 200, seed=1)
    monday = score(root, runs / "monday", epochs=2)
    assert push(ls, monday, "--project", "nightly digits").exit_code == 0
    write_digits(root, 260, seed=1)          # the same 200 files, and 60 new ones
    tuesday = score(root, runs / "tuesday", epochs=2)
    result = push(ls, tuesday, "--project", "nightly digits")
    assert result.exit_code == 0, result.output

    before, now = set(flagged_examples(monday)["id"]), set(flagged_examples(tuesday)["id"])
    new, again = now - before, now & before
    assert new and again                                     # both kinds, or the test shows nothing
    header, storage, counts = result.output.splitlines()
    assert storage == f"local files storage {root}"           # the storage of Monday's push covers it
    assert counts == f"{len(new)} tasks imported ({len(new)} predictions), {len(again)} already in the project"
    ids = [t["data"]["curator_id"] for t in project_tasks(ls, int(header.split()[1]))]
    assert len(ids) == len(set(ids)) and set(ids) == before | now


def test_hostile_file_and_class_names_survive_the_server(label_studio, tmp_path):
    """Quotes, '#', '?', '%20', spaces, non-ASCII and markup in file and class names."""
    ls = label_studio
    root = write_hostile_dataset(ls.document_root / "hostile")
    run = score(root, tmp_path / "run")
    result = push(ls, run)
    assert result.exit_code == 0, result.output
    pid = int(result.output.split()[1])
    served = project_tasks(ls, pid)
    assert len(served) == len(flagged_examples(run)) > 0
    for task in served:
        status, body = ls.api("GET", task["data"]["image"])
        assert status == 200 and body == (root / task["data"]["path"]).read_bytes(), task["data"]["path"]
    labels = ls.ok("GET", f"/api/projects/{pid}")["parsed_label_config"]["label"]["labels"]
    assert labels == run.classes and set(labels) == set(HOSTILE_CLASSES)


def test_pull_applies_the_reviews_with_the_annotators_emails(digits, label_studio, bob, tmp_path):
    ls = label_studio
    (tmp_path / "run").mkdir()
    for name in RUN_FILES:                                   # a copy the test may write into
        shutil.copy(digits.path / name, tmp_path / "run" / name)
    run = curator.Run(tmp_path / "run")
    assert push(ls, run, "--project", "pull test").exit_code == 0
    pid = ls.ok("GET", "/api/projects?title=pull%20test")["results"][0]["id"]
    first, second, third, *_ = project_tasks(ls, pid)
    annotate(ls, first["id"], first["data"]["suggested_label"])
    annotate(ls, second["id"], second["data"]["given_label"], remove=True, user=bob["id"])
    annotate(ls, third["id"], third["data"]["given_label"], user=bob["id"])

    result = invoke("pull", run.path, "--labelstudio", ls.url, "--project", "pull test", token=ls.token)
    assert result.exit_code == 0, result.output
    written = [run.path / "labelstudio-export.json", run.path / "corrected_manifest.csv", run.path / "changes.csv"]
    assert result.output.split() == [str(p) for p in written]
    assert len(json.loads(written[0].read_text(encoding="utf-8"))) == 3
    changes = read_csv(written[2]).set_index("id")[["new_label", "decision", "who"]]
    assert changes.to_dict("index") == {
        first["data"]["curator_id"]: {"new_label": first["data"]["suggested_label"], "decision": "relabel",
                                      "who": ls.email},
        second["data"]["curator_id"]: {"new_label": "", "decision": "remove", "who": "bob@example.org"},
        third["data"]["curator_id"]: {"new_label": third["data"]["given_label"], "decision": "keep",
                                      "who": "bob@example.org"}}
    manifest = read_csv(written[1]).set_index("id")
    assert len(manifest) == len(run.scores) - 1 and second["data"]["curator_id"] not in manifest.index
    assert manifest.loc[first["data"]["curator_id"], "label"] == first["data"]["suggested_label"]


def test_a_personal_access_token_is_exchanged_for_an_access_token(digits, label_studio):
    status, answer = label_studio.api("POST", "/api/token/", {})
    assert status == 201, answer
    result = push(label_studio, digits, "--project", "personal token", token=answer["token"])
    assert result.exit_code == 0, result.output
    assert "(created)" in result.output.splitlines()[0]


def _not_listening() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("case, needle", [
    ("no token", f"{API_KEY_ENV} is not set"),
    ("wrong token", f"the server refused the token in {API_KEY_ENV} (HTTP 401: Invalid token.)"),
    ("no server", "cannot reach the server"),
    ("not a URL", "--labelstudio 'localhost:8080': expected the server's http:// or https:// URL"),
    ("no such project id", "--project 99999: no project with id 99999 at http://127.0.0.1:"),
    ("pull from no project", "--project 'never pushed': no project with this title"),
    ("dataset not under the document root", "is not under it"),
    ("images not served", "the server cannot serve the dataset's images"),
])
def test_failures_are_one_line_errors_naming_the_cause(digits, label_studio, tmp_path, case, needle):
    ls, run = label_studio, digits
    dataset = ExampleImages(run).root
    token, command = ls.token, ["push", run.path, "--labelstudio", ls.url, "--project", f"errors {case}"]
    if case == "no token":
        token = None
    elif case == "wrong token":
        token = "not-the-token"
    elif case == "no server":
        command[3] = _not_listening()
    elif case == "not a URL":
        command[3] = "localhost:8080"
    elif case == "no such project id":
        command[5] = "99999"
    elif case == "pull from no project":
        command[0], command[5] = "pull", "never pushed"
    elif case == "dataset not under the document root":
        command += ["--document-root", tmp_path]
    elif case == "images not served":
        command += ["--document-root", dataset]     # references then miss the dataset folder's name
    result = invoke(*command, token=token)
    message = result.output.strip()
    assert result.exit_code != 0 and message.startswith("Error: ") and "\n" not in message, message
    assert needle in message, message
    if case == "images not served":                # stopped before importing dead links
        pid = ls.ok("GET", "/api/projects?title=errors%20images%20not%20served")["results"][0]["id"]
        assert project_tasks(ls, pid) == []
