from __future__ import annotations

import logging
import re

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


def _train_and_save(root, name, num_classes, **model_kwargs):
    """Train a tiny timm model for a few steps and save it as .pth, .safetensors and .ckpt."""
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(image_size=16, classes=list(range(num_classes)), batch_size=32)
    module = TimmClassifier(name, num_classes=num_classes, lr=3e-3, model_kwargs=model_kwargs)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(root),
    )
    trainer.fit(module, datamodule=dm)
    paths = {
        "pth": root / f"{name}.pth",
        "safetensors": root / f"{name}.safetensors",
        "ckpt": root / f"{name}.ckpt",
    }
    state = {k: v.contiguous() for k, v in module.model.state_dict().items()}
    torch.save(state, paths["pth"])
    save_file(state, str(paths["safetensors"]))
    trainer.save_checkpoint(paths["ckpt"])
    return module.model.eval(), paths


@pytest.fixture(scope="module")
def other_architecture(tmp_path_factory):
    """A trained test_efficientnet with a 5-class head, saved three ways."""
    return _train_and_save(tmp_path_factory.mktemp("other"), "test_efficientnet", 5)


@pytest.mark.parametrize("kind", ["pth", "safetensors", "ckpt"])
def test_local_weights_load_with_identical_outputs(pretrained, kind, caplog):
    source, paths = pretrained
    with caplog.at_level(logging.INFO, logger="lightning_tune"):
        model = create_model("test_resnet", num_classes=5, pretrained=paths[kind]).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    assert "loaded 92/92 tensors" in caplog.text and "re-initialised" not in caplog.text


@pytest.mark.parametrize("kind", ["pth", "safetensors", "ckpt"])
def test_other_head_size_loads_all_but_the_classifier(pretrained, kind, caplog):
    source, paths = pretrained
    with caplog.at_level(logging.WARNING, logger="lightning_tune"):
        model = create_model("test_resnet", num_classes=3, pretrained=paths[kind])
    assert "loaded 90/92 tensors" in caplog.text
    assert "(classifier re-initialised)" in caplog.text
    assert re.search(r"the file's fc\.(weight|bias) is \(5,( 96)?\), the model's \(3,", caplog.text)
    assert model.fc.out_features == 3
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in backbone.items())
    assert loaded["fc.weight"].shape == (3, 96) and loaded["fc.weight"].std() > 0


@pytest.mark.parametrize("kind", ["pth", "safetensors", "ckpt"])
@pytest.mark.parametrize("num_classes", [5, 3])
def test_weights_of_another_architecture_fail_naming_the_keys(
    other_architecture, kind, num_classes
):
    _, paths = other_architecture
    with pytest.raises(
        ValueError,
        match=r"does not fit `model_name='test_resnet'`: only 1/90 backbone tensors match.*"
        r"85 missing keys: \['conv1\.0\.weight'.*83 unexpected keys: \[.*"
        r"4 shape-mismatched keys: \['bn1\.weight: file \(24,\) vs model \(32,\)'",
    ):
        create_model("test_resnet", num_classes=num_classes, pretrained=paths[kind])


def test_partial_backbone_fails_unless_strict_false(pretrained, tmp_path, caplog):
    _, paths = pretrained
    state = load_weights_file(paths["pth"])
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    missing = len(state) - len(partial)
    with pytest.raises(ValueError, match=rf"only {90 - missing}/90 backbone tensors.*layer4\."):
        create_model("test_resnet", num_classes=5, pretrained=path)
    with caplog.at_level(logging.WARNING, logger="lightning_tune"):
        model = create_model("test_resnet", num_classes=5, pretrained=path, strict=False)
    assert f"strict=False: {missing} backbone tensors keep their random init" in caplog.text
    assert torch.equal(model.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    with pytest.raises(TypeError, match="`strict` must be true or false, but got strict='no'"):
        create_model("test_resnet", pretrained=path, strict="no")


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsFileNotFoundError, match="is not a file"):
        create_model("test_resnet", pretrained=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="is not a file"):
        load_weights_file(tmp_path / "nope.safetensors")


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match=r"Did you mean one of \['resnet18'"):
        create_model("resnet_18")


@pytest.mark.parametrize(
    ("bad", "rule"), [(0, "an int >= 1"), (-3, "an int >= 1"), (2.5, "an int")]
)
def test_num_classes_must_be_positive(bad, rule):
    with pytest.raises(
        ValueError, match=f"`num_classes` must be {rule}, but got num_classes={bad}"
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
