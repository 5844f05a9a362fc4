"""The decode store: each image file is decoded once, found again by its path, size and mtime, so a
night that adds files decodes only those and an interrupted decode resumes; and the decoder's fit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

import curator
from curator.data import images as decoding
from datasets import digits_images, write_image_folder

CLASSES = [str(i) for i in range(10)]


@pytest.fixture()
def night_one(tmp_path, monkeypatch):
    """200 digit PNGs in a folder, and a private cache."""
    monkeypatch.setenv("CURATOR_CACHE_DIR", str(tmp_path / "cache"))
    images, labels = digits_images()
    write_image_folder(tmp_path / "data", images[:200], labels[:200], CLASSES)
    return tmp_path / "data", images, labels


def test_a_second_night_decodes_only_the_new_files(night_one):
    root, images, labels = night_one
    first = curator.load_dataset(root)
    assert first.decode["decoded_files"] == 200 and first.decode["probed_files"] == 200
    for i in range(200, 205):                                   # night 2: five new images
        Image.fromarray(images[i]).save(root / CLASSES[labels[i]] / f"new{i}.png")
    second = curator.load_dataset(root)
    assert second.decode["decoded_files"] == 5 and second.decode["probed_files"] == 5
    assert len(second) == 205
    rows = {p: i for i, p in enumerate(second.paths)}
    for j, path in enumerate(first.paths):                     # old rows: the same pixels
        np.testing.assert_array_equal(second.inputs[rows[path]], first.inputs[j])
    again = curator.load_dataset(root)
    assert again.decode["decoded_files"] == 0 and again.inputs.filename == second.inputs.filename


def test_a_changed_file_is_decoded_again(night_one):
    root, images, _ = night_one
    curator.load_dataset(root)
    target = next((root / "3").iterdir())
    Image.fromarray(255 - images[0]).save(target)               # new content, new size or mtime
    assert curator.load_dataset(root).decode["decoded_files"] == 1


def test_an_interrupted_decode_resumes_from_its_finished_chunks(night_one, monkeypatch):
    root = night_one[0]
    monkeypatch.setattr(decoding, "CHUNK_FILES", 50)
    real, calls = decoding.decode_one, []

    def dies_after_120(*args, **kwargs):
        calls.append(1)
        if len(calls) > 120:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(decoding, "decode_one", dies_after_120)
    with pytest.raises(KeyboardInterrupt):
        curator.load_dataset(root)
    monkeypatch.setattr(decoding, "decode_one", real)
    resumed = curator.load_dataset(root)
    assert resumed.decode["decoded_files"] == 100                # chunks 1 and 2 were finished
    copy = root.with_name("copy")                                # decoded in one go, for comparison
    shutil.copytree(root, copy)
    np.testing.assert_array_equal(resumed.inputs, curator.load_dataset(copy).inputs)


def test_the_run_manifest_counts_the_decoded_files(night_one, tmp_path):
    root = night_one[0]
    run = curator.score(root, out=tmp_path / "run", epochs=1, scorers="learning_speed", progress=False)
    assert run.manifest["dataset"]["decoded_files"] == 200
    assert run.manifest["dataset"]["decode"] == {"side": 8, "channels": 1, "fit": "stretch", "native_side": 8,
                                                 "decoded_files": 200, "probed_files": 200}
    again = curator.score(root, out=tmp_path / "run2", epochs=1, scorers="learning_speed", progress=False)
    assert again.manifest["dataset"]["decoded_files"] == 0


def test_the_cache_checks_free_disk_space_before_it_writes(night_one, monkeypatch):
    root = night_one[0]
    import shutil as sh

    monkeypatch.setattr(sh, "disk_usage", lambda path: sh._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(curator.DatasetError, match=r"not enough disk space for decoded images in .*needs 0 MB "
                                                   r"\(\+256 MB reserve\), 0 MB free"):
        curator.load_dataset(root)


def test_crop_keeps_the_aspect_ratio_and_takes_the_centre(tmp_path):
    wide = np.zeros((100, 200, 3), np.uint8)
    wide[:, :40] = (255, 0, 0)                 # the centre square (columns 50..150) is all green
    wide[:, 40:160] = (0, 255, 0)
    wide[:, 160:] = (0, 0, 255)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    crop = decoding.decode_one(tmp_path / "wide.png", 32, 3, fit="crop")
    stretch = decoding.decode_one(tmp_path / "wide.png", 32, 3, fit="stretch")
    assert crop.shape == stretch.shape == (3, 32, 32)
    assert (crop[1] == 255).all() and (crop[0] == 0).all()         # only the green middle
    assert stretch[0, :, 0].min() == 255 and stretch[2, :, -1].min() == 255
