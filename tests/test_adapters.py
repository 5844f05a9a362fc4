"""Each dataset layout is read into the same Examples, detected automatically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import curator
from curator.data import detect_format
from datasets import digits_images


@pytest.fixture
def small_digits():
    images, labels = digits_images()
    return images[:60], labels[:60]


def test_image_folder_mixed_sizes_and_colour_are_resized_to_one_shape(tmp_path):
    for cls, mode, size in (("a", "L", (8, 8)), ("a", "RGB", (16, 12)), ("b", "RGBA", (10, 10)), ("b", "P", (10, 10))):
        (tmp_path / cls).mkdir(exist_ok=True)
        Image.new(mode, size).save(tmp_path / cls / f"{mode}.png")
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    examples = curator.load_dataset(tmp_path)
    assert examples.inputs.shape == (4, 3, 10, 10) and examples.inputs.dtype == np.uint8
    assert examples.classes == ["a", "b"] and examples.kind == "image"
    assert sorted(examples.ids) == ["a/L.png", "a/RGB.png", "b/P.png", "b/RGBA.png"]


def test_unreadable_images_are_skipped_and_listed(tmp_path, small_digits):
    images, labels = small_digits
    for i, (img, y) in enumerate(zip(images[:20], labels[:20] % 2)):
        (tmp_path / str(y)).mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / str(y) / f"{i}.png")
    (tmp_path / "0" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "0" / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 2"):
        examples = curator.load_dataset(tmp_path)
    assert len(examples) == 20
    assert {s["path"] for s in examples.skipped} == {"0/broken.png", "0/empty.png"}
    with pytest.raises(curator.DatasetError, match="broken.png|empty.png"):
        curator.load_dataset(tmp_path, on_error="fail")


def test_manifest_csv_with_ids_and_metadata(tmp_path, small_digits):
    images, labels = small_digits
    (tmp_path / "img").mkdir()
    rows = []
    for i, (img, y) in enumerate(zip(images, labels)):
        Image.fromarray(img).save(tmp_path / "img" / f"{i}.png")
        rows.append({"path": f"img/{i}.png", "label": f"digit{y}", "id": f"ex{i}", "group": i % 3, "scanner": "A"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    assert detect_format(tmp_path)[0] == "manifest"
    examples = curator.load_dataset(tmp_path)
    assert examples.ids[:2] == ["ex0", "ex1"] and examples.paths[0] == "img/0.png"
    assert list(examples.metadata.columns) == ["group", "scanner"]
    assert examples.classes[examples.labels[0]] == f"digit{labels[0]}"


def test_manifest_paths_outside_the_dataset_are_refused(tmp_path):
    pd.DataFrame({"path": ["../secret.png", "a.png"], "label": [0, 1]}).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(curator.DatasetError, match="escapes the dataset"):
        curator.load_dataset(tmp_path)


def test_manifest_missing_files_are_named(tmp_path):
    pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1]}).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(curator.DatasetError, match="'a.png'"):
        curator.load_dataset(tmp_path)


def test_table_with_label_column(tmp_path, small_digits):
    images, labels = small_digits
    frame = pd.DataFrame(images.reshape(60, -1).astype(float), columns=[f"px{i}" for i in range(64)])
    frame["kind"] = labels
    frame.to_parquet(tmp_path / "digits.parquet")
    examples = curator.load_dataset(tmp_path / "digits.parquet", label_column="kind")
    assert examples.kind == "vector" and examples.inputs.shape == (60, 64)
    with pytest.raises(curator.DatasetError, match="no label column 'label'"):
        curator.load_dataset(tmp_path / "digits.parquet")


def test_table_with_text_in_a_numeric_column_is_named(tmp_path):
    pd.DataFrame({"a": [1.0, "oops", 2.0], "label": [0, 1, 0]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(curator.DatasetError, match="column 'a' is not numeric"):
        curator.load_dataset(tmp_path / "t.csv")


def test_npz_images_and_vectors(tmp_path, small_digits):
    images, labels = small_digits
    np.savez(tmp_path / "img.npz", X=images, y=labels)
    as_images = curator.load_dataset(tmp_path / "img.npz")
    assert as_images.kind == "image" and as_images.inputs.shape == (60, 1, 8, 8)
    np.savez(tmp_path / "vec.npz", X=images.reshape(60, -1).astype(np.float32), y=labels)
    assert curator.load_dataset(tmp_path / "vec.npz").inputs.shape == (60, 64)


def test_vector_dataset_scores_end_to_end_with_an_mlp(tmp_path):
    images, labels = digits_images()
    np.savez(tmp_path / "digits.npz", X=images.reshape(len(images), -1).astype(np.float32), y=labels)
    run = curator.score(tmp_path / "digits.npz", out=tmp_path / "run", epochs=3, scorers="learning_speed",
                        progress=False)
    assert run.manifest["proxy"]["model"]["kind"] == "mlp"
    assert run.manifest["proxy"]["oof_accuracy"] > 0.85
