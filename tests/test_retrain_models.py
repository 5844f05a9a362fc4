"""The final models (--model) and the training augmentation (--augment) of curator retrain."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from curator.cli import main
from curator.engine.models import ModelSpec
from curator.errors import ConfigError
from curator.retrain import RetrainConfig, load_model
from curator.retrain.augment import Augment, make_augment
from curator.retrain.models import FinalModelSpec, build_final_model

IMAGE = ModelSpec(kind="cnn", input_shape=(3, 12, 12), n_classes=5, width=8)


@pytest.mark.parametrize("architecture", ["proxy", "wide", "resnet"])
def test_every_architecture_maps_images_to_class_logits_through_one_linear_head(architecture):
    model = build_final_model(FinalModelSpec(architecture, IMAGE)).eval()
    x = torch.randn(4, 3, 12, 12)
    logits, h = model.forward_features(x)
    assert logits.shape == (4, 5) and h.shape == (4, model.head.in_features)
    torch.testing.assert_close(model.head(h), logits)
    torch.testing.assert_close(model(x), logits)


def test_the_wide_cnn_and_the_resnet_grow_with_the_width():
    def size(architecture, width):
        spec = FinalModelSpec(architecture, ModelSpec("cnn", (1, 28, 28), 10, width))
        return sum(p.numel() for p in build_final_model(spec).parameters())
    for architecture in ("wide", "resnet"):
        assert size(architecture, 32) > 3 * size(architecture, 16)


def test_a_spec_without_architecture_is_the_proxy_one():
    """model.json written before --model existed rebuilds as before."""
    spec = FinalModelSpec.from_dict(ModelSpec("cnn", (1, 8, 8), 10, 16).to_dict())
    assert spec.architecture == "proxy"
    assert FinalModelSpec.from_dict(FinalModelSpec("resnet", IMAGE).to_dict()) == FinalModelSpec("resnet", IMAGE)


def test_a_convolutional_model_for_vectors_names_the_option():
    with pytest.raises(ConfigError, match="--model resnet.*proxy"):
        build_final_model(FinalModelSpec("resnet", ModelSpec("mlp", (20,), 3, 16)))


def test_an_unknown_model_names_the_option():
    with pytest.raises(ConfigError, match="--model 'vit'"):
        RetrainConfig(model="vit")


# --- augmentation -----------------------------------------------------------------------------------

def _distinct_images(n=16, side=10):
    return torch.arange(n * side * side, dtype=torch.float32).view(n, 1, side, side)


def test_a_crop_shifts_each_image_by_at_most_pad_pixels_and_repeats_the_edge():
    x = _distinct_images()
    out = Augment(crop=True, flip=False, pad=2, seed=0)(x)
    assert out.shape == x.shape
    shifts = set()
    for original, shifted in zip(x, out):
        padded = torch.nn.functional.pad(original[None], (2, 2, 2, 2), mode="replicate")[0]
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(padded[:, dy:dy + 10, dx:dx + 10], shifted)]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 4                                   # drawn per image, not once per batch


def test_a_flip_mirrors_about_half_of_the_images_left_right():
    x = _distinct_images(200)
    out = Augment(crop=False, flip=True, seed=0)(x)
    mirrored = np.array([torch.equal(o, i.flip(2)) for o, i in zip(out, x)])
    kept = np.array([torch.equal(o, i) for o, i in zip(out, x)])
    assert (mirrored ^ kept).all()
    assert 70 < mirrored.sum() < 130


def test_auto_crops_images_and_leaves_vectors_alone():
    auto = make_augment("auto", "image")
    assert auto.crop and not auto.flip
    assert make_augment("none", "image") is None
    assert make_augment("auto", "vector") is None
    with pytest.raises(ConfigError, match="--augment crop"):
        make_augment("crop", "vector")


def test_retrain_records_the_model_augmentation_and_epochs_and_reloads_the_model(noisy_digits, tmp_path):
    root, _ = noisy_digits
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["retrain", str(root), "--method", "erm", "--model", "resnet", "--width", "8",
                                       "--augment", "crop-flip", "--epochs", "1", "--out", str(out), "--quiet",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["architecture"] == "resnet" and metrics["model"]["width"] == 8
    assert metrics["model"]["augment"] == "crop-flip" and metrics["model"]["epochs"] == 1
    assert metrics["config"]["model"] == "resnet" and metrics["config"]["augment"] == "crop-flip"
    model, _, classes = load_model(out)
    assert type(model).__name__ == "SmallResNet" and len(classes) == 10


# --- pretrained final models ------------------------------------------------------------------------

def _pretrained(size=32, weights=None):
    return FinalModelSpec("efficientnet_lite0", ModelSpec("cnn", (1, 8, 8), 10, 16, backbone={
        "name": "efficientnet_lite0", "weights": weights, "input_size": size}))


def test_a_pretrained_final_model_starts_from_the_published_weights_and_trains_every_block():
    from curator.engine.backbones import load_backbone

    model = build_final_model(_pretrained())
    published = torch.nn.Sequential(*load_backbone("efficientnet_lite0").chain).state_dict()
    # body[0] resizes and normalises the images; body[1:] is the backbone's chain
    body = {f"{int(k.split('.', 1)[0]) - 1}.{k.split('.', 1)[1]}": v for k, v in model.body.state_dict().items()}
    assert body.keys() == published.keys()
    for name, value in published.items():
        torch.testing.assert_close(body[name], value)
    assert all(p.requires_grad for p in model.parameters())
    logits, h = model.eval().forward_features(torch.randint(0, 256, (2, 1, 8, 8)).float())
    assert logits.shape == (2, 10) and h.shape == (2, model.head.in_features) == (2, 1280)


def test_a_finetuned_pretrained_model_learns_digits_and_reloads_from_its_run_folder(noisy_digits, tmp_path):
    root, _ = noisy_digits
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["retrain", str(root), "--method", "erm", "--model", "efficientnet_lite0",
                                       "--model-size", "32", "--lr", "0.01", "--epochs", "4", "--out", str(out),
                                       "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["architecture"] == "efficientnet_lite0"
    assert metrics["model"]["backbone"] == {"name": "efficientnet_lite0", "weights": None, "input_size": 32}
    # 10% of the labels are flipped; chance is 0.1
    assert metrics["results"]["erm"]["accuracy"] > 0.7
    model, normalizer, classes = load_model(out)
    assert type(model).__name__ == "PretrainedNet" and normalizer.kind == "identity" and len(classes) == 10
    from curator.data import load_dataset

    examples = load_dataset(root)
    with torch.no_grad():
        predicted = model(normalizer(torch.from_numpy(np.array(examples.inputs[:200])))).argmax(1).numpy()
    assert (predicted == examples.labels[:200]).mean() > 0.7


@pytest.mark.parametrize("argv, needle", [
    (["--model", "torchvision:no_such_net"], "--model torchvision:no_such_net: torchvision has no model builder"),
    (["--model", "efficientnet_lite0", "--model-weights", "missing.pt"], "--model-weights missing.pt: file not found"),
    (["--model", "wide", "--model-size", "32"], "--model-weights/--model-size: only for a pretrained --model"),
])
def test_a_bad_pretrained_model_is_one_line_naming_the_option(noisy_digits, tmp_path, argv, needle):
    root, _ = noisy_digits
    result = CliRunner().invoke(main, ["retrain", str(root), "--method", "erm", "--epochs", "1",
                                       "--out", str(tmp_path / "out"), "--quiet", *argv])
    assert result.exit_code != 0
    assert needle in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
