"""Shared, session-scoped real datasets and runs: trained once, read by many tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import curator  # noqa: E402
from datasets import digits_images, flip_labels, photo_patches, write_image_folder  # noqa: E402
from services import label_studio  # noqa: E402,F401  (a real Label Studio, session-scoped)

DIGIT_CLASSES = [str(i) for i in range(10)]


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep the decoded-input cache inside the test session."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CURATOR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def noisy_digits(tmp_path_factory):
    """scikit-learn digits as an image folder with 10% of labels flipped.

    Returns (root, {id: flipped}).
    """
    images, labels = digits_images()
    noisy, flipped = flip_labels(labels, 0.10, 10, seed=0)
    root = tmp_path_factory.mktemp("noisy_digits")
    paths = write_image_folder(root, images, noisy, DIGIT_CLASSES)
    return root, dict(zip(paths, flipped))


@pytest.fixture(scope="session")
def noisy_digits_run(noisy_digits, tmp_path_factory) -> curator.Run:
    root, _ = noisy_digits
    return curator.score(root, out=tmp_path_factory.mktemp("runs") / "noisy", seed=0, progress=False)


@pytest.fixture(scope="session")
def ood_digits(tmp_path_factory):
    """Clean digits plus 3% photo patches dropped into the class folders.

    Returns (root, {id: is_ood}).
    """
    images, labels = digits_images()
    n_ood = int(0.03 * len(labels))
    patches = photo_patches(n_ood, 8, seed=1)
    rng = np.random.default_rng(1)
    all_images = np.concatenate([images, patches])
    all_labels = np.concatenate([labels, rng.integers(0, 10, n_ood)])
    root = tmp_path_factory.mktemp("ood_digits")
    paths = write_image_folder(root, all_images, all_labels, DIGIT_CLASSES)
    return root, dict(zip(paths, [False] * len(labels) + [True] * n_ood))


@pytest.fixture(scope="session")
def ood_digits_run(ood_digits, tmp_path_factory) -> curator.Run:
    root, _ = ood_digits
    return curator.score(root, out=tmp_path_factory.mktemp("runs") / "ood", seed=0, progress=False)


def truth_for(run: curator.Run, truth: dict) -> np.ndarray:
    """(N,) bool ground truth in the run's row order."""
    return run.scores["id"].map(truth).to_numpy(bool)


def score_context(root: Path, run: curator.Run, **fields) -> curator.ScoreContext:
    """The context a scorer of ``run`` gets, rebuilt from the dataset at ``root`` (CPU)."""
    examples = curator.load_dataset(root)
    assert list(examples.ids) == list(run.scores["id"])
    return curator.ScoreContext(artifacts=run.path / "artifacts", labels=examples.labels, classes=examples.classes,
                                ids=examples.ids, inputs_array=examples.inputs, device=torch.device("cpu"), **fields)


def assert_clean_failure(result, out, *needles: str) -> str:
    """A CLI failure as users must see it: non-zero exit, one `Error:` line naming ``needles``, and no
    run directory (finished or partial) left behind. Returns the message."""
    assert result.exit_code != 0
    message = result.output.strip()
    assert message.startswith("Error:") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    return message
