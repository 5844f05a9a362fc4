import curator_jsonl


def test_the_jsonl_format_detects_its_file_and_the_dataset_jsonl_of_a_folder(tmp_path):
    (tmp_path / "dataset.jsonl").write_text('{"path": "a.png", "label": "x"}\n')
    (tmp_path / "other.csv").write_text("path,label\n")
    assert curator_jsonl.detect_jsonl(tmp_path / "dataset.jsonl") == tmp_path / "dataset.jsonl"
    assert curator_jsonl.detect_jsonl(tmp_path) == tmp_path / "dataset.jsonl"
    assert curator_jsonl.detect_jsonl(tmp_path / "other.csv") is None
