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
