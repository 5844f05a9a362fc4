"""The run directory: a stable contract that batch jobs read.

RUN/manifest.json, scores.parquet, oof_probs.npy, classes.json, review_queue.csv, artifacts/.
A run is built in ``RUN.partial/`` and renamed to ``RUN`` only once complete, so ``RUN`` either
does not exist or holds a finished run; an interrupted partial can be resumed.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_json
from .errors import DatasetError, RunError

RUN_FILES = ("manifest.json", "scores.parquet", "oof_probs.npy", "classes.json", "review_queue.csv")
ISSUE_COLUMNS = ("is_mislabeled", "is_outlier", "is_spurious", "mislabeled_score", "outlier_score",
                 "spurious_score", "suggested_label", "reasons")
BASE_COLUMNS = ("id", "path", "label", "fold")


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def completed(out: Path, key: dict) -> "Run | None":
    """The finished run at ``out`` when it was made from the same dataset and settings as ``key``
    (``--resume`` on a finished run has nothing left to do), None when ``out`` does not exist.
    Raises RunError when ``out`` holds something else."""
    if not out.exists():
        return None
    manifest = out / "manifest.json"
    try:
        recorded = json.loads(manifest.read_text()).get("run_key")
    except (OSError, ValueError):
        raise RunError(f"--resume {out}: exists but is not a finished curator run (no readable manifest.json)") from None
    key = json.loads(json.dumps(key, default=str))
    if recorded != key:
        raise RunError(f"--resume {out}: the finished run was made with another dataset or other settings "
                       f"({key_difference(recorded, key)}); choose another --out")
    return Run(out)


def key_difference(before: object, now: object, where: str = "") -> str:
    """The first setting that differs between two run keys, as ``train.epochs: 6, now 3``."""
    if isinstance(before, dict) and isinstance(now, dict):
        for name in [*before, *(k for k in now if k not in before)]:
            if before.get(name) != now.get(name):
                return key_difference(before.get(name), now.get(name), f"{where}.{name}" if where else name)
    return f"{where or 'run key'}: {before!r}, now {now!r}"


class Staging:
    """``RUN.partial/``: where a run is built, locked against a second writer.

    ``run_key.json`` says which dataset and settings the partial belongs to; its ``manifest.json``
    (``"status": "partial"``) lists the finished stages, so ``--resume`` redoes only what is
    unfinished. The partial is renamed to ``RUN`` once complete.
    """

    def __init__(self, out: Path, key: dict, resume: bool):
        key = json.loads(json.dumps(key, default=str))   # as run_key.json holds it: tuples become lists
        self.out, self.key = out, key
        self.path = partial_dir(out)
        if out.exists():
            raise RunError(f"--out {out}: already exists; choose another run directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RunError(f"--out {out}: another curator run is writing it right now") from None
        key_path = self.path / "run_key.json"
        previous = json.loads(key_path.read_text()) if key_path.exists() else None
        if not resume or previous != key:
            if resume and previous is not None:
                raise RunError(f"--resume {out}: the partial run was made with another dataset or other settings "
                               f"({key_difference(previous, key)}); start a new run instead")
            for child in self.path.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            write_json(key_path, key)
        self.resumed = bool(resume and previous == key)
        manifest = self.path / "manifest.json"
        self.done: dict[str, dict] = (json.loads(manifest.read_text()).get("stages", {})
                                      if self.resumed and manifest.exists() else {})

    def finished(self, stage: str) -> bool:
        return stage in self.done

    def mark(self, stage: str, info: dict) -> None:
        self.done[stage] = info
        write_json(self.path / "manifest.json", {"status": "partial", "stages": self.done,
                                                 "resume": f"curator score ... --out {self.out} --resume"})

    def publish(self) -> None:
        """Rename the finished partial onto ``RUN`` (its final manifest.json must be written)."""
        shutil.rmtree(self.path / "columns", ignore_errors=True)
        for name in ("run_key.json", ".lock"):
            (self.path / name).unlink(missing_ok=True)
        self.path.rename(self.out)
        self.close()

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.close()

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


class Run:
    """A finished run directory. ``scores`` is one row per example (see README: run directory).

    ``dataset_root``: where the dataset's folder is now, when it moved after the run (the folder the
    ``path`` column is relative to); by default the absolute path recorded in ``manifest.json``.
    """

    def __init__(self, path: str | Path, dataset_root: str | Path | None = None):
        self.path = Path(path)
        missing = [f for f in RUN_FILES if not (self.path / f).exists()]
        if missing:
            raise RunError(f"{self.path}: not a complete curator run (missing {', '.join(missing)})")
        self._moved_root = Path(dataset_root).resolve() if dataset_root is not None else None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    @cached_property
    def scores(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "scores.parquet")

    @cached_property
    def classes(self) -> list[str]:
        return json.loads((self.path / "classes.json").read_text())

    @cached_property
    def oof_probs(self) -> np.ndarray:
        """(N, C) float32 out-of-fold probabilities, rows in ``scores`` order."""
        return np.load(self.path / "oof_probs.npy")

    @cached_property
    def review_queue(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "review_queue.csv")

    @cached_property
    def dataset_location(self) -> tuple[Path, Path]:
        """(source, root): the file or folder the dataset was read from, and the folder the ``path``
        column is relative to, both absolute; moved to ``dataset_root`` where one was given.

        Raises DatasetError naming the folder when it is not there (moved or deleted)."""
        dataset = self.manifest.get("dataset", {})
        source = Path(dataset.get("path", ".")).absolute()  # runs of older versions may hold a relative path
        root = Path(dataset["root"]) if "root" in dataset else (source if source.is_dir() or not source.suffix
                                                                 else source.parent)
        if self._moved_root is not None:
            source = self._moved_root if source == root else self._moved_root / source.relative_to(root)
            root = self._moved_root
        if not root.is_dir():
            where = "--dataset-root" if self._moved_root is not None else f"recorded in {self.path / 'manifest.json'}"
            raise DatasetError(f"{root}: the dataset folder of run {self.path} is not there ({where}); "
                               "if it moved, pass --dataset-root NEW_FOLDER")
        if not source.exists():
            raise DatasetError(f"{source}: the dataset file of run {self.path} is not there; "
                               "if it moved, pass --dataset-root NEW_FOLDER")
        return source, root

    @property
    def score_columns(self) -> list[str]:
        return [c for c in self.scores.columns if c.startswith("score_")]


def review_queue(scores: pd.DataFrame) -> pd.DataFrame:
    """Flagged examples, most urgent first: one row per (example, issue).

    ``score`` is the issue's probability (``<issue>_score``: the estimated probability that the example
    has that issue), one scale for every issue, so the rows are sorted by it across issue types
    (ties: issue, then id)."""
    parts = []
    for issue in ("mislabeled", "outlier", "spurious"):
        rows = scores[scores[f"is_{issue}"]]
        parts.append(pd.DataFrame({
            "id": rows["id"], "path": rows["path"], "label": rows["label"],
            "suggested_label": rows["suggested_label"], "issue": issue,
            "score": rows[f"{issue}_score"], "reasons": rows["reasons"]}))
    queue = pd.concat(parts, ignore_index=True)
    return queue.sort_values(["score", "issue", "id"], ascending=[False, True, True], kind="stable").reset_index(drop=True)
