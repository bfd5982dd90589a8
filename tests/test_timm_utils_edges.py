"""Edges of loading a local "pretrained" file with ``create_model``.

Covers: the first convolution adapted by timm when the file has another number of input
channels than the model (3 -> 1, 1 -> 3, 3 -> 4, 4 -> 2; resnet, efficientnet, convnext, vit),
first convs that cannot be adapted (other kernel, other out channels, not 4-d) reported as
shape mismatches, which tensors load unchanged, the exact log line and its level (full load,
unused file tensors, another head size, a file without a head, a custom head, a partial
backbone with ``strict=False``), the model's ``pretrained_cfg`` after a load (no copy of the
file, no sentinel), and ``pretrained=True`` going through timm's pretrained loading.
"""

from __future__ import annotations

import logging

import pytest
import timm
import torch
from timm.models import adapt_input_conv

from lightning_tune.timm_utils import create_model

LOGGER = "lightning_tune.timm_utils"


def _file(tmp_path, state):
    path = tmp_path / "weights.pth"
    torch.save({k: v.contiguous() for k, v in state.items()}, path)
    return path


def _records(caplog):
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


@pytest.fixture(scope="module")
def resnet5():
    """A random 5-class test_resnet (its state dict is the "pretrained" file's content)."""
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=5).state_dict()


@pytest.mark.parametrize(
    ("name", "kwargs", "file_chans", "model_chans"),
    [
        ("test_resnet", {}, 3, 1),
        ("test_resnet", {}, 1, 3),
        ("test_resnet", {}, 1, None),  # the model's default in_chans (3), not the file's
        ("test_efficientnet", {}, 4, 2),
        ("test_convnext", {}, 3, 4),
        ("test_vit", {"img_size": 32}, 3, 1),
    ],
    ids=[
        "resnet_3to1",
        "resnet_1to3",
        "resnet_1to_default",
        "effnet_4to2",
        "convnext_3to4",
        "vit_3to1",
    ],
)
def test_first_conv_is_adapted_to_the_models_in_chans(
    tmp_path, caplog, name, kwargs, file_chans, model_chans
):
    torch.manual_seed(1)
    source = timm.create_model(name, num_classes=4, in_chans=file_chans, **kwargs)
    state = source.state_dict()
    path = _file(tmp_path, state)
    conv = f"{source.pretrained_cfg['first_conv']}.weight"
    if model_chans is None:
        model_chans = 3
    else:
        kwargs = {**kwargs, "in_chans": model_chans}
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = create_model(name, num_classes=4, pretrained=path, **kwargs).eval()
    loaded = model.state_dict()
    expected = adapt_input_conv(model_chans, state[conv], base_chans=file_chans)
    assert loaded[conv].shape == (state[conv].shape[0], model_chans, *state[conv].shape[2:])
    assert torch.allclose(loaded[conv], expected)
    if model_chans == 1:
        assert torch.allclose(loaded[conv], state[conv].sum(dim=1, keepdim=True))
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k != conv)
    assert _records(caplog) == [
        (
            logging.INFO,
            f"lightning_tune: {name}: loaded {len(state)}/{len(state)} tensors from {path}",
        )
    ]
    size = kwargs.get("img_size", 32)
    with torch.no_grad():
        assert model(torch.randn(2, model_chans, size, size)).shape == (2, 4)


@pytest.mark.parametrize(
    ("file_shape", "in_chans"),
    [
        ((16, 3, 5, 5), 1),  # other kernel
        ((8, 3, 3, 3), 1),  # other out channels
        ((16, 3, 3), 1),  # not a 4-d conv weight
        ((16, 3, 5, 5), 3),  # same in channels, other kernel
    ],
    ids=["kernel", "out_channels", "3d", "same_in_chans_kernel"],
)
def test_a_first_conv_that_cannot_be_adapted_is_a_shape_mismatch(
    tmp_path, resnet5, file_shape, in_chans
):
    state = dict(resnet5)
    state["conv1.0.weight"] = torch.randn(file_shape)
    path = _file(tmp_path, state)
    mismatch = f"conv1.0.weight: file {file_shape} vs model (16, {in_chans}, 3, 3)"
    with pytest.raises(ValueError) as info:
        create_model("test_resnet", num_classes=5, pretrained=path, in_chans=in_chans)
    assert str(info.value) == (
        f"`pretrained={str(path)!r}` does not fit `model_name='test_resnet'`: only 89/90 "
        f"backbone tensors match by name and shape; 1 shape-mismatched keys: [{mismatch!r}]. "
        "Was it saved from another architecture?"
    )


def test_full_load_logs_one_info_line(tmp_path, caplog, resnet5):
    path = _file(tmp_path, resnet5)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = create_model("test_resnet", num_classes=5, pretrained=path)
    assert _records(caplog) == [
        (logging.INFO, f"lightning_tune: test_resnet: loaded 92/92 tensors from {path}")
    ]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in resnet5.items())


def test_unused_file_tensors_are_listed_and_the_rest_loads(tmp_path, caplog, resnet5):
    path = _file(tmp_path, {**resnet5, "extra.weight": torch.ones(2)})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = create_model("test_resnet", num_classes=5, pretrained=path)
    assert _records(caplog) == [
        (
            logging.INFO,
            f"lightning_tune: test_resnet: loaded 92/92 tensors from {path}; "
            "1 file tensors unused: ['extra.weight']",
        )
    ]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in resnet5.items())


def test_another_head_size_is_reinitialised_with_a_warning_naming_the_shapes(
    tmp_path, caplog, resnet5
):
    """A 1-class model from a 5-class file (1 is the class count closest to the sentinel)."""
    path = _file(tmp_path, resnet5)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = create_model("test_resnet", num_classes=1, pretrained=path)
    assert _records(caplog) == [
        (
            logging.WARNING,
            f"lightning_tune: test_resnet: loaded 90/92 tensors from {path} (classifier "
            "re-initialised); the file's fc.weight is (5, 96), the model's (1, 96)",
        )
    ]
    loaded = model.state_dict()
    assert model.fc.out_features == 1
    assert all(torch.equal(loaded[k], v) for k, v in resnet5.items() if not k.startswith("fc."))


@pytest.mark.parametrize(
    "head",
    [
        {},  # a backbone-only file
        # a file fine-tuned with a custom head (nn.Sequential(nn.Dropout(), nn.Linear(96, 5)))
        {"fc.1.weight": torch.ones(5, 96), "fc.1.bias": torch.zeros(5)},
    ],
    ids=["no_head", "custom_head"],
)
def test_a_file_without_the_models_head_loads_the_backbone(tmp_path, caplog, resnet5, head):
    backbone = {k: v for k, v in resnet5.items() if not k.startswith("fc.")}
    path = _file(tmp_path, {**backbone, **head})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = create_model("test_resnet", num_classes=5, pretrained=path)
    # Head-named tensors are the classifier's: neither "unused" nor a shape to report.
    assert _records(caplog) == [
        (
            logging.WARNING,
            f"lightning_tune: test_resnet: loaded 90/92 tensors from {path} "
            "(classifier re-initialised)",
        )
    ]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in backbone.items())


def test_partial_backbone_reinitialises_the_head_and_says_so(tmp_path, caplog, resnet5):
    partial = {k: v for k, v in resnet5.items() if not k.startswith("layer4.")}
    path = _file(tmp_path, partial)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = create_model("test_resnet", num_classes=5, pretrained=path, strict=False)
    ((level, message),) = _records(caplog)
    assert level == logging.WARNING
    assert message.startswith(
        f"lightning_tune: test_resnet: loaded 72/92 tensors from {path} (classifier "
        "re-initialised); strict=False: 18 backbone tensors keep their random initialisation "
        "(18 missing keys: ['layer4.0.conv1.weight'"
    )
    # timm loads a partial file non-strictly only without the classifier: the head is new,
    # and the log names no head shape (the file's head has the model's shape).
    assert message.endswith("(+13 more))")
    loaded = model.state_dict()
    assert not torch.equal(loaded["fc.weight"], resnet5["fc.weight"])
    assert all(torch.equal(loaded[k], v) for k, v in partial.items() if not k.startswith("fc."))


@pytest.mark.parametrize(
    ("num_classes", "in_chans"), [(5, 3), (2, 3), (5, 1)], ids=["same", "head", "in_chans"]
)
def test_the_models_pretrained_cfg_holds_no_copy_of_the_file(
    tmp_path, resnet5, num_classes, in_chans
):
    path = _file(tmp_path, resnet5)
    model = create_model("test_resnet", num_classes=num_classes, pretrained=path, in_chans=in_chans)
    fresh = timm.create_model("test_resnet", num_classes=num_classes, in_chans=in_chans)
    assert "state_dict" not in model.pretrained_cfg
    assert model.pretrained_cfg == fresh.pretrained_cfg
    assert model.default_cfg is model.pretrained_cfg


def test_pretrained_true_goes_through_timms_pretrained_loading(tmp_path, resnet5):
    """``pretrained=True`` is timm's (here pointed at a local file by timm's own overlay)."""
    path = _file(tmp_path, resnet5)
    model = create_model(
        "test_resnet",
        num_classes=5,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path), "num_classes": 5},
    )
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in resnet5.items())
