"""Faulty datasets: an unreadable file is skipped with its reason, a structural problem stops with one line.

Every dataset here is a handful of real 8x8 scikit-learn digits written as image files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import curator
from curator.cli import main
from datasets import digits_images
from conftest import assert_clean_failure  # noqa: E402

DIGITS, _ = digits_images()   # (1797, 8, 8) uint8


def write_digits(folder: Path, n: int, start: int = 0, suffix: str = ".png") -> list[str]:
    """Write digits ``start..start+n`` as ``folder/<i><suffix>``; returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i}{suffix}" for i in range(start, start + n)]
    for i, name in zip(range(start, start + n), names):
        Image.fromarray(DIGITS[i]).save(folder / name)
    return names


def two_classes(root: Path, n: int = 6) -> Path:
    write_digits(root / "a", n)
    write_digits(root / "b", n, start=n)
    return root


def load(path, **kwargs) -> curator.Examples:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return curator.load_dataset(path, **kwargs)


def reasons(examples: curator.Examples) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in examples.skipped}


def score_cli(tmp_path: Path, dataset: Path, *extra: str):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(dataset), "--out", str(out), "--epochs", "1", "--quiet", *extra])
    return result, out


def write_manifest(root: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def digit_manifest(root: Path, labels: list[str], **columns) -> Path:
    """Digits ``img/0.png..`` with a manifest labelling row i with ``labels[i]``."""
    names = write_digits(root / "img", len(labels))
    return write_manifest(root, [{"path": f"img/{n}", "label": y, **{k: v[i] for k, v in columns.items()}}
                                 for i, (n, y) in enumerate(zip(names, labels))])


# --- unreadable files: skipped with their reason, or fatal with --on-error fail -----------------------

def test_truncated_corrupt_and_empty_images_are_skipped_with_their_reason(tmp_path):
    root = two_classes(tmp_path)
    png = (root / "a" / "0.png").read_bytes()
    (root / "a" / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "a" / "garbage.png").write_bytes(b"this is not an image at all")
    (root / "b" / "zero.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipped 3 file\(s\)"):
        examples = curator.load_dataset(root)
    found = reasons(examples)
    assert found.pop("a/truncated.png").startswith("cannot decode image (OSError: image file is truncated")
    assert found == {"a/garbage.png": "not a readable image (unknown format or damaged header)",
                     "b/zero.jpg": "empty file"}
    assert sorted(examples.ids) == sorted([f"a/{i}.png" for i in range(6)] + [f"b/{i}.png" for i in range(6, 12)])


def test_on_error_fail_stops_at_an_unreadable_image_and_names_it(tmp_path):
    root = two_classes(tmp_path)
    (root / "b" / "zero.png").write_bytes(b"")
    with pytest.raises(curator.DatasetError) as err:
        curator.load_dataset(root, on_error="fail")
    assert str(err.value) == f"{root}/b/zero.png: empty file (--on-error skip leaves it out)"


def test_on_error_fail_from_the_command_line_exits_non_zero_with_no_run(tmp_path):
    root = two_classes(tmp_path / "data")
    png = (root / "a" / "0.png").read_bytes()
    (root / "a" / "cut.png").write_bytes(png[:40])
    result, out = score_cli(tmp_path, root, "--on-error", "fail")
    assert_clean_failure(result, out, "a/cut.png", "--on-error skip")


def test_an_unknown_on_error_policy_is_refused_naming_the_option(tmp_path):
    with pytest.raises(curator.ConfigError, match=r"--on-error 'ignore': expected one of skip, fail"):
        curator.load_dataset(two_classes(tmp_path), on_error="ignore")


def test_non_image_files_and_images_outside_a_class_folder_are_listed_not_used(tmp_path):
    root = two_classes(tmp_path)
    (root / "a" / "notes.txt").write_text("scanner 3")
    (root / "a" / ".DS_Store").write_bytes(b"\0\0")            # hidden: ignored, not listed
    Image.fromarray(DIGITS[50]).save(root / "loose.png")
    (root / "README.md").write_text("my dataset")               # documentation beside the classes: ignored
    examples = load(root)
    assert reasons(examples) == {"a/notes.txt": "not an image file (suffix '.txt')",
                                 "loose.png": "not inside a class folder"}
    assert len(examples) == 12


# --- image modes and sizes ---------------------------------------------------------------------------

def test_16bit_palette_rgba_cmyk_and_bilevel_images_decode_to_the_same_digit(tmp_path):
    digit = DIGITS[3]
    grey = Image.fromarray(digit)
    write_digits(tmp_path / "b", 4, start=10)
    (tmp_path / "a").mkdir()
    grey.save(tmp_path / "a" / "grey.png")
    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "a" / "sixteen.png")     # opens as I;16
    grey.convert("P").save(tmp_path / "a" / "palette.png")
    grey.convert("RGBA").save(tmp_path / "a" / "rgba.png")
    grey.convert("LA").save(tmp_path / "a" / "la.png")
    grey.convert("RGB").convert("CMYK").save(tmp_path / "a" / "cmyk.tif")
    examples = load(tmp_path)
    assert examples.skipped == [] and examples.inputs.shape == (10, 3, 8, 8)   # any colour mode -> RGB
    rows = {i: np.asarray(examples.inputs[n], dtype=int) for n, i in enumerate(examples.ids)}
    for name in ("sixteen", "palette", "rgba", "la", "cmyk"):
        assert np.abs(rows[f"a/{name}.png" if name != "cmyk" else "a/cmyk.tif"] - digit).max() <= 1, name


def test_a_dark_16bit_image_stays_dark(tmp_path):
    """16-bit pixels are scaled by the full 16-bit range, not stretched per image."""
    write_digits(tmp_path / "b", 3)
    (tmp_path / "a").mkdir()
    Image.fromarray(DIGITS[3].astype(np.uint16) * 16).save(tmp_path / "a" / "dark.png")   # max 4080 of 65535
    examples = load(tmp_path)
    dark = np.asarray(examples.inputs[examples.ids.index("a/dark.png")])
    expected = np.round(DIGITS[3].astype(float) * 16 / 257)                     # 0..15, not stretched to 0..255
    assert np.abs(dark[0] - expected).max() <= 1 and dark.max() == expected.max() == 15


MEASURE = textwrap.dedent("""
    import sys, warnings
    from PIL import Image
    from curator import load_dataset, load_plugins       # imported before the peak is reset
    adapters = load_plugins().records("adapters")        # the plugins (and torch) loaded before it too
    Image.radial_gradient("L").resize((6000, 6000)).convert("RGB").save(sys.argv[1] + "/a/huge." + sys.argv[2])
    status = lambda key: int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) // 1024
    open("/proc/self/clear_refs", "w").write("5")       # reset the peak (VmHWM) to the current size
    before = status("VmHWM")
    warnings.simplefilter("ignore")
    examples = load_dataset(sys.argv[1], adapters=adapters)
    print(examples.inputs.shape[1:], status("VmHWM") - before)
""")


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_a_6000x6000_jpeg_is_decoded_at_reduced_scale_in_bounded_memory(tmp_path):
    """A full decode needs 108 MB (6000 x 6000 RGB); JPEG draft mode decodes at 1/8 scale."""
    root = two_classes(tmp_path)
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)
    proc = subprocess.run([sys.executable, str(script), str(root), "jpg"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, check=True)
    shape, peak_rise_mb = proc.stdout.strip().rsplit(" ", 1)
    assert shape == "(3, 8, 8)"
    assert int(peak_rise_mb) < 40, proc.stdout


def test_images_over_the_decompression_bomb_limit_are_skipped_before_decoding(tmp_path, monkeypatch):
    root = two_classes(tmp_path)
    Image.new("L", (60, 60)).save(root / "a" / "big.png")          # over the limit: PIL would warn
    Image.new("L", (100, 100)).save(root / "a" / "bigger.png")     # over twice the limit: PIL refuses
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50 * 50)
    examples = load(root)
    found = reasons(examples)
    assert found["a/big.png"] == "too large (60x60 = 3600 pixels, over the decompression-bomb limit 2500)"
    assert found["a/bigger.png"].startswith("too large (DecompressionBombError: Image size (10000 pixels)")
    assert len(examples) == 12 and examples.inputs.shape[1:] == (1, 8, 8)


# --- classes -----------------------------------------------------------------------------------------

def test_an_empty_class_folder_is_no_class_and_is_listed(tmp_path):
    root = two_classes(tmp_path)
    (root / "c").mkdir()
    examples = load(root)
    assert examples.classes == ["a", "b"]
    assert reasons(examples) == {"c/": "class folder holds no images"}


def test_a_class_whose_every_image_is_unreadable_is_no_class(tmp_path):
    root = two_classes(tmp_path)
    (root / "c").mkdir()
    (root / "c" / "x.png").write_bytes(b"")
    examples = load(root)
    assert examples.classes == ["a", "b"] and set(examples.labels) == {0, 1}
    assert reasons(examples) == {"c/x.png": "empty file"}


@pytest.mark.filterwarnings("ignore:.*skipped")
def test_one_readable_class_is_a_clear_error_from_the_command_line(tmp_path):
    root = tmp_path / "data"
    write_digits(root / "cat", 4)
    (root / "dog").mkdir()
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result, out = score_cli(tmp_path, root)
    assert_clean_failure(result, out, "only one class ('cat')", "need at least 2")


@pytest.mark.filterwarnings("ignore:.*skipped")
def test_a_single_example_class_and_unicode_names_score_end_to_end(tmp_path):
    """One example in a class, spaces and non-ASCII in names, two unusable files: the run completes."""
    root = tmp_path / "data set"
    write_digits(root / "zero zéro", 12)
    write_digits(root / "один", 12, start=12, suffix=" copy.png")
    write_digits(root / "solo", 1, start=40)
    Image.fromarray(DIGITS[41]).save(os.path.join(os.fsencode(root / "solo"), b"caf\xe9.png"))   # latin-1 name
    png = (root / "один" / "12 copy.png").read_bytes()
    (root / "один" / "cut.png").write_bytes(png[: len(png) // 2])
    result = CliRunner().invoke(main, ["score", str(root), "--out", str(tmp_path / "run"), "--epochs", "1",
                                       "--scorers", "learning_speed"])
    assert result.exit_code == 0, result.output
    assert "skipped files 2" in result.output and "solo/caf\\xe9.png: file name is not valid UTF-8" in result.output
    run = curator.Run(tmp_path / "run")
    assert run.classes == ["solo", "zero zéro", "один"] and run.oof_probs.shape == (25, 3)
    assert run.scores.loc[run.scores["label"] == "solo", "id"].tolist() == ["solo/40.png"]
    assert "один/12 copy.png" in set(run.scores["id"])
    skipped = {s["path"]: s["reason"] for s in run.manifest["dataset"]["skipped_files"]}
    assert skipped.pop("один/cut.png").startswith("cannot decode image (OSError: image file is truncated")
    assert skipped == {"solo/caf\\xe9.png": "file name is not valid UTF-8; rename it"}


# --- manifests ---------------------------------------------------------------------------------------

def test_an_empty_label_in_a_manifest_names_its_row(tmp_path):
    digit_manifest(tmp_path, ["cat", "dog", "", "dog"])
    with pytest.raises(curator.DatasetError) as err:
        load(tmp_path)
    assert str(err.value) == f"{tmp_path}/manifest.csv: column 'label' is empty in row 3; every example needs a label"


def test_an_empty_label_from_the_command_line_exits_non_zero_with_no_run(tmp_path):
    root = digit_manifest(tmp_path / "data", ["cat", "dog", "cat", float("nan")])
    result, out = score_cli(tmp_path, root)
    assert_clean_failure(result, out, "manifest.csv: column 'label' is empty in row 4")


def test_labels_like_NA_null_and_007_are_class_names_not_missing_values(tmp_path):
    examples = load(digit_manifest(tmp_path, ["NA", "null", "007", "7", "NA"]))
    assert examples.classes == ["007", "7", "NA", "null"]
    assert [examples.classes[j] for j in examples.labels] == ["NA", "null", "007", "7", "NA"]


def test_a_classes_file_fixes_the_order_and_a_label_outside_it_names_no_class(tmp_path):
    digit_manifest(tmp_path, ["dog", "cat", "cat", "dog"])
    (tmp_path / "classes.txt").write_text("dog\ncat\nbird\n")
    examples = load(tmp_path)
    assert examples.classes == ["dog", "cat", "bird"] and examples.labels.tolist() == [0, 1, 1, 0]

    (tmp_path / "classes.txt").unlink()
    (tmp_path / "classes.json").write_text(json.dumps(["cat", "dog"]))
    digit_manifest(tmp_path, ["dog", "cat", "Dog", "dog"])
    with pytest.raises(curator.DatasetError) as err:
        load(tmp_path)
    assert str(err.value) == (f"{tmp_path}/manifest.csv: column 'label': label 'Dog' in row 3 names no class "
                              "in classes.json (classes: cat, dog)")


def test_manifest_paths_that_do_not_exist_are_an_error_naming_the_first_and_its_row(tmp_path):
    root = digit_manifest(tmp_path / "data", ["cat", "dog"])
    frame = pd.read_csv(root / "manifest.csv")
    frame.loc[2] = ["img/missing.png", "cat"]
    frame.to_csv(root / "manifest.csv", index=False)
    result, out = score_cli(tmp_path, root)
    assert_clean_failure(result, out, "1 path(s) in column 'path' do not exist, e.g. 'img/missing.png' in row 3")


def test_an_empty_path_cell_names_its_row(tmp_path):
    digit_manifest(tmp_path, ["cat", "dog"])
    with open(tmp_path / "manifest.csv", "a") as f:
        f.write(",cat\n")
    with pytest.raises(curator.DatasetError, match=r"column 'path' is empty in row 3$"):
        load(tmp_path)


def test_duplicate_ids_name_the_id_column_and_row(tmp_path):
    digit_manifest(tmp_path, ["cat", "dog", "cat"], id=["x1", "x2", "x1"])
    with pytest.raises(curator.DatasetError, match=r"duplicate id 'x1' in column 'id' \(row 3\)$"):
        load(tmp_path)


def test_the_same_path_twice_without_an_id_column_is_a_duplicate_id(tmp_path):
    digit_manifest(tmp_path, ["cat", "dog"])
    write_manifest(tmp_path, [{"path": "img/0.png", "label": "cat"}, {"path": "img/1.png", "label": "dog"},
                              {"path": "img/./0.png", "label": "dog"}])
    with pytest.raises(curator.DatasetError, match=r"duplicate id 'img/0.png' in column 'path' \(row 3\)$"):
        load(tmp_path)


def test_an_unreadable_image_in_a_manifest_is_skipped_with_its_metadata_row(tmp_path):
    digit_manifest(tmp_path, ["cat", "dog", "cat", "dog"], scanner=["A", "B", "C", "D"])
    (tmp_path / "img" / "1.png").write_bytes(b"")
    examples = load(tmp_path)
    assert examples.ids == ["img/0.png", "img/2.png", "img/3.png"]
    assert examples.metadata["scanner"].tolist() == ["A", "C", "D"]
    assert reasons(examples) == {"img/1.png": "empty file"}


def test_a_manifest_that_is_not_utf8_is_named(tmp_path):
    write_digits(tmp_path / "img", 2)
    (tmp_path / "manifest.csv").write_bytes("path,label\nimg/0.png,café\nimg/1.png,thé\n".encode("latin-1"))
    with pytest.raises(curator.DatasetError, match=r"manifest.csv: not UTF-8 text \(byte 0xe9 at offset 24\); "
                                                   r"save it as UTF-8$"):
        load(tmp_path)


def test_a_manifest_with_a_byte_order_mark_reads_its_path_column(tmp_path):
    write_digits(tmp_path / "img", 2)
    (tmp_path / "manifest.csv").write_bytes("path,label\nimg/0.png,a\nimg/1.png,b\n".encode("utf-8-sig"))
    assert load(tmp_path).ids == ["img/0.png", "img/1.png"]


# --- tables ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell, message", [
    ("", "column 'f1' has a missing/NaN value in row 2"),
    ("NaN", "column 'f1' has a missing/NaN value in row 2"),
    ("inf", "column 'f1' has an infinite value in row 2"),
    ("3,5", "column 'f1' is not numeric ('3,5' in row 2)"),
    ("n.a.", "column 'f1' is not numeric ('n.a.' in row 2)"),
])
def test_a_bad_cell_in_a_numeric_table_column_names_the_column_and_row(tmp_path, cell, message):
    rows = ["f0,f1,label", "0.1,0.2,a", f"0.3,\"{cell}\",b", "0.5,0.6,a"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(curator.DatasetError) as err:
        load(tmp_path / "t.csv")
    assert str(err.value) == f"{tmp_path / 't.csv'}: {message}"


def test_a_nan_in_a_table_from_the_command_line_exits_non_zero_with_no_run(tmp_path):
    pd.DataFrame({"f0": [0.1, np.nan, 0.3], "label": ["a", "b", "a"]}).to_parquet(tmp_path / "t.parquet")
    result, out = score_cli(tmp_path, tmp_path / "t.parquet")
    assert_clean_failure(result, out, "t.parquet: column 'f0' has a missing/NaN value in row 2")


# --- names and links ---------------------------------------------------------------------------------

def test_a_non_utf8_file_name_is_skipped_and_fatal_with_on_error_fail(tmp_path):
    root = two_classes(tmp_path)
    Image.fromarray(DIGITS[0]).save(os.path.join(os.fsencode(root / "a"), b"na\xefve.png"))
    assert reasons(load(root)) == {"a/na\\xefve.png": "file name is not valid UTF-8; rename it"}
    with pytest.raises(curator.DatasetError, match=r"a/na\\xefve.png: file name is not valid UTF-8"):
        load(root, on_error="fail")


def test_symlink_loops_and_dangling_links_are_listed_and_nothing_is_read_twice(tmp_path):
    root = two_classes(tmp_path)
    os.symlink(root, root / "loop")                       # a "class" that is the dataset itself
    os.symlink(root / "a", root / "a" / "again")           # a folder inside itself
    os.symlink("self.png", root / "b" / "self.png")        # a file that points at itself
    os.symlink("gone.png", root / "b" / "dangling.png")
    examples = load(root)
    assert reasons(examples) == {"loop/": "symlink loop: folder already read",
                                 "a/again/": "symlink loop: folder already read",
                                 "b/self.png": "symlink loop", "b/dangling.png": "broken symlink"}
    assert examples.classes == ["a", "b"] and len(examples) == 12


def test_a_symlinked_class_folder_outside_the_dataset_is_followed(tmp_path):
    two_classes(tmp_path / "elsewhere")
    (tmp_path / "data").mkdir()
    for cls in ("a", "b"):
        os.symlink(tmp_path / "elsewhere" / cls, tmp_path / "data" / cls)
    examples = load(tmp_path / "data")
    assert len(examples) == 12 and examples.skipped == []
