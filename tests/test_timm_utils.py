from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import save_file

from lightning_tune.data import DigitsDataModule
from lightning_tune.models import TimmClassifier
from lightning_tune.timm_utils import (
    WeightsFileNotFoundError,
    create_model,
    layer_groups,
    load_weights_file,
)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A small "pretrained" test_resnet: trained briefly on digits 0-4, saved three ways."""
    root = tmp_path_factory.mktemp("pretrained")
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(image_size=16, classes=[0, 1, 2, 3, 4], batch_size=32)
    module = TimmClassifier("test_resnet", num_classes=5, lr=3e-3)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=8,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    trainer.fit(module, datamodule=dm)
    paths = {
        "pth": root / "weights.pth",
        "safetensors": root / "weights.safetensors",
        "ckpt": root / "module.ckpt",
    }
    state = {k: v.contiguous() for k, v in module.model.state_dict().items()}
    torch.save(state, paths["pth"])
    save_file(state, str(paths["safetensors"]))
    trainer.save_checkpoint(paths["ckpt"])
    return module.model.eval(), paths


@pytest.mark.parametrize("kind", ["pth", "safetensors", "ckpt"])
def test_local_weights_load_with_identical_outputs(pretrained, kind):
    source, paths = pretrained
    model = create_model("test_resnet", num_classes=5, pretrained=paths[kind]).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_other_head_size_is_reinitialised_with_a_message(pretrained, caplog):
    source, paths = pretrained
    with caplog.at_level(logging.WARNING, logger="lightning_tune"):
        model = create_model("test_resnet", num_classes=3, pretrained=paths["pth"])
    assert "5-class classifier (fc)" in caplog.text and "re-initialised" in caplog.text
    assert model.fc.out_features == 3
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    for name, value in model.state_dict().items():
        if name in backbone:
            assert torch.equal(value, backbone[name]), name


def test_weights_of_another_architecture_name_the_mismatched_keys(pretrained):
    _, paths = pretrained
    with pytest.raises(
        ValueError, match=r"does not fit `model_name='test_efficientnet'`.*missing keys.*conv_stem"
    ):
        create_model("test_efficientnet", num_classes=5, pretrained=paths["pth"])


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsFileNotFoundError, match="is not a file"):
        create_model("test_resnet", pretrained=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="is not a file"):
        load_weights_file(tmp_path / "nope.safetensors")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "callable": print}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_weights_file(path)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match=r"Did you mean one of \['resnet18'"):
        create_model("resnet_18")


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_num_classes_must_be_positive(bad):
    with pytest.raises(
        ValueError, match=f"`num_classes` must be an int >= 1, but got num_classes={bad}"
    ):
        create_model("test_resnet", num_classes=bad)


@pytest.mark.parametrize(
    ("name", "kwargs", "head"),
    [
        ("test_resnet", {}, ["fc.weight", "fc.bias"]),
        ("test_efficientnet", {}, ["classifier.weight", "classifier.bias"]),
        ("test_convnext", {}, ["head.fc.weight", "head.fc.bias"]),
        ("test_vit", {"img_size": 16}, ["head.weight", "head.bias"]),
    ],
)
def test_layer_groups_cover_every_parameter_once_stem_first_head_last(name, kwargs, head):
    model = create_model(name, num_classes=4, **kwargs)
    groups = layer_groups(model)
    names = [n for _, group in groups for n in group]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(groups) >= 3
    assert set(head) <= set(groups[-1][1])
    first = groups[0][1][0]
    assert any(
        first.startswith(p) for p in ("conv1", "conv_stem", "stem", "cls_token", "pos_embed")
    )
