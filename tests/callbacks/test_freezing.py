"""LayerFreezing: trainable sets per epoch, BatchNorm, LRs by depth, resume, bad input."""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune.callbacks import LayerFreezing, LRSchedule
from lightning_tune.models import TimmClassifier
from lightning_tune.timm_utils import create_model, finetuning_groups

# The Lightning namespace under test (pytorch_lightning or lightning.pytorch): every test
# runs once per installed package, with `pl` set by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")

FAMILIES = {
    "test_resnet": {},
    "test_efficientnet": {},
    "test_convnext": {},
    "test_vit": {"img_size": 16},
}
IMAGE_SIZE = {"test_convnext": 32}  # its stem and downsampling need more than 16 pixels


def loader(n: int = 16, batch_size: int = 8, classes: int = 3, size: int = 16) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def make_module(name: str = "test_resnet", **kwargs: Any) -> TimmClassifier:
    pl.seed_everything(0, verbose=False)
    return TimmClassifier(name, num_classes=3, lr=1e-2, model_kwargs=FAMILIES.get(name), **kwargs)


class Recorder(dual.Callback):
    """Per epoch: trainable parameter names, the optimizer's parameter names, BN modes."""

    def __init__(self) -> None:
        self.trainable: dict[int, set[str]] = {}
        self.in_optimizer: dict[int, set[str]] = {}
        self.bn_training: dict[int, dict[str, bool]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx:
            return
        epoch = trainer.current_epoch
        names = {id(p): n for n, p in pl_module.named_parameters()}
        self.trainable[epoch] = {n for n, p in pl_module.named_parameters() if p.requires_grad}
        self.in_optimizer[epoch] = {
            names[id(p)] for g in trainer.optimizers[0].param_groups for p in g["params"]
        }
        self.bn_training[epoch] = {
            n: m.training for n, m in pl_module.named_modules() if isinstance(m, nn.BatchNorm2d)
        }


def fit(module, callbacks, trainer_kwargs, epochs: int, size: int = 16):
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=callbacks, limit_val_batches=0, **trainer_kwargs
    )
    trainer.fit(module, train_dataloaders=loader(size=size))
    return trainer


def union(freezing: LayerFreezing, indices) -> set[str]:
    groups = freezing.layer_groups()
    return {n for i in indices for n in groups[i][1]}


# --------------------------------------------------------------------------- structure
@pytest.mark.parametrize("name", list(FAMILIES))
def test_groups_cover_every_parameter_once_with_the_classifier_in_the_head(name):
    model = create_model(name, num_classes=3, **FAMILIES[name])
    groups = finetuning_groups(model)
    flat = [n for _, names in groups for n in names]
    assert sorted(flat) == sorted(n for n, _ in model.named_parameters())
    assert len(flat) == len(set(flat))
    head_params = {id(p) for p in model.get_classifier().parameters()}
    named = dict(model.named_parameters())
    assert groups[-1][0] == "head"
    assert head_params <= {id(named[n]) for n in groups[-1][1]}
    assert len(groups) >= 3


# --------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("name", list(FAMILIES))
def test_gradual_unfreezes_top_down_one_group_per_epoch(name, trainer_kwargs):
    freezing, recorder = LayerFreezing("gradual", milestones=[1, 2]), Recorder()
    fit(
        make_module(name),
        [freezing, recorder],
        trainer_kwargs,
        epochs=3,
        size=IMAGE_SIZE.get(name, 16),
    )
    n = len(freezing.group_names)
    head = n - 1
    for epoch, expected in {0: [head], 1: [head, head - 1], 2: [head, head - 1, head - 2]}.items():
        assert recorder.trainable[epoch] == union(freezing, expected), epoch
        assert recorder.in_optimizer[epoch] == recorder.trainable[epoch], epoch


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # resnet has 6 groups: stem, layer1..layer4 and the head (5)
        (
            {"strategy": "gradual", "unfreeze_at_epoch": 1, "groups_per_step": 2},
            {0: [5], 1: [5, 4, 3], 2: [5, 4, 3, 2, 1], 3: [5, 4, 3, 2, 1, 0]},
        ),
        (
            {"strategy": "gradual", "milestones": [1, 3]},
            {0: [5], 1: [5, 4], 2: [5, 4], 3: [5, 4, 3]},
        ),
        (
            {"strategy": "gradual", "unfreeze_at_epoch": 0, "unfreeze_every": 2, "keep_frozen": 3},
            {0: [5, 4], 1: [5, 4], 2: [5, 4, 3], 3: [5, 4, 3]},
        ),
        (
            {"strategy": "freeze_then_unfreeze", "unfreeze_at_epoch": 2},
            {0: [5], 1: [5], 2: [0, 1, 2, 3, 4, 5], 3: [0, 1, 2, 3, 4, 5]},
        ),
        (
            {"strategy": "freeze_then_unfreeze", "unfreeze_at_epoch": 1, "keep_frozen": 5},
            {0: [5], 1: [5], 2: [5], 3: [5]},
        ),
        (
            {"strategy": "none", "keep_frozen": 2},
            {0: [2, 3, 4, 5], 1: [2, 3, 4, 5], 2: [2, 3, 4, 5], 3: [2, 3, 4, 5]},
        ),
    ],
)
def test_exact_trainable_parameters_per_epoch(kwargs, expected, trainer_kwargs):
    freezing, recorder = LayerFreezing(**kwargs), Recorder()
    fit(make_module(), [freezing, recorder], trainer_kwargs, epochs=4)
    assert len(freezing.group_names) == 6
    for epoch, indices in expected.items():
        assert recorder.trainable[epoch] == union(freezing, indices), epoch
        assert recorder.in_optimizer[epoch] == recorder.trainable[epoch], epoch


def test_parameters_frozen_by_the_user_stay_frozen(trainer_kwargs):
    module = make_module()
    module.model.layer2[0].conv1.weight.requires_grad_(False)
    freezing, recorder = LayerFreezing("freeze_then_unfreeze", unfreeze_at_epoch=1), Recorder()
    fit(module, [freezing, recorder], trainer_kwargs, epochs=2)
    everything = {n for n, _ in module.named_parameters()}
    assert recorder.trainable[1] == everything - {"model.layer2.0.conv1.weight"}


# --------------------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("train_bn", [False, True])
def test_frozen_weights_and_batchnorm_statistics(train_bn, trainer_kwargs):
    module = make_module()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    freezing, recorder = LayerFreezing("none", keep_frozen=5, train_bn=train_bn), Recorder()
    fit(module, [freezing, recorder], trainer_kwargs, epochs=1)
    after = module.state_dict()
    head = set(freezing.layer_groups()[-1][1])
    bn_stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    bn_params = {
        f"{m}.{n}"
        for m, mod in module.named_modules()
        if isinstance(mod, nn.BatchNorm2d)
        for n, _ in mod.named_parameters()
    }
    frozen_weights = [k for k, _ in module.named_parameters() if k not in head | bn_params]
    assert frozen_weights and bn_stats
    assert all(torch.equal(before[k], after[k]) for k in frozen_weights)
    assert not any(torch.equal(before[k], after[k]) for k in head)
    if train_bn:
        assert all(recorder.bn_training[0].values())
        assert not any(torch.equal(before[k], after[k]) for k in bn_stats)
        assert recorder.trainable[0] == head | bn_params
    else:
        assert not any(recorder.bn_training[0].values())
        assert all(torch.equal(before[k], after[k]) for k in bn_stats)
        assert recorder.trainable[0] == head


def test_unfrozen_batchnorm_trains_again(trainer_kwargs):
    freezing, recorder = LayerFreezing("gradual", milestones=[1]), Recorder()
    fit(make_module(), [freezing, recorder], trainer_kwargs, epochs=2)
    assert not any(recorder.bn_training[0].values())
    assert recorder.bn_training[1]["model.layer4.0.bn1"]
    assert not recorder.bn_training[1]["model.layer3.0.bn1"]


def test_verify_frozen_fails_loudly_when_a_frozen_weight_moves(trainer_kwargs):
    class Tampering(TimmClassifier):
        def training_step(self, batch, batch_idx):
            with torch.no_grad():
                self.model.conv1[0].weight.add_(1.0)
            return super().training_step(batch, batch_idx)

    pl.seed_everything(0, verbose=False)
    module = Tampering("test_resnet", num_classes=3)
    with pytest.raises(RuntimeError, match=r"frozen tensors changed.*model\.conv1\.0\.weight"):
        fit(module, [LayerFreezing("gradual")], trainer_kwargs, epochs=1)


# --------------------------------------------------------------------------- learning rates
def test_param_group_lrs_follow_decay_to_the_power_of_depth(trainer_kwargs):
    freezing = LayerFreezing(
        "freeze_then_unfreeze", unfreeze_at_epoch=1, lr_decay=0.5, warmup_steps=3
    )
    with pytest.warns(UserWarning, match="only `lightning_tune.callbacks.LRSchedule` applies"):
        trainer = fit(make_module(weight_decay=0.1), [freezing], trainer_kwargs, epochs=2)
    depth_of = {
        n: freezing.depth(i) for i, (_, names) in enumerate(freezing.layer_groups()) for n in names
    }
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 2 + 2 * 5  # the head's two groups, then decay/no_decay per layer group
    for group in groups:
        depths = {depth_of[n] for n in group["param_names"]}
        assert len(depths) == 1, group["name"]
        assert group["lr_scale"] == 0.5 ** depths.pop()
        assert group["initial_lr"] == 1e-2
        assert group["lr"] == pytest.approx(1e-2 * group["lr_scale"])
        decays = any(n.endswith("weight") and "bn" not in n for n in group["param_names"])
        assert group["weight_decay"] == (0.1 if group["name"].endswith("/decay") else 0.0)
        if group["name"].endswith("/decay"):
            assert decays
    assert [g.get("warmup_steps") for g in groups] == [None, None] + [3] * 10
    assert groups[2]["name"] == "layer4/decay"


def test_strategy_none_splits_the_optimizer_groups_by_depth(trainer_kwargs):
    freezing = LayerFreezing("none", lr_decay=0.5)
    trainer = fit(make_module(), [freezing], trainer_kwargs, epochs=1)
    groups = trainer.optimizers[0].param_groups
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales == [0.5**d for d in range(5, -1, -1)]
    depth_of = {
        n: freezing.depth(i) for i, (_, names) in enumerate(freezing.layer_groups()) for n in names
    }
    for group in groups:
        assert {0.5 ** depth_of[n] for n in group["param_names"]} == {group["lr_scale"]}


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    ("kwargs", "unfrozen"),
    [
        # epoch=1.ckpt: layer4 was unfrozen at epoch 1; epochs 2 and 3 unfreeze one more each
        ({"unfreeze_at_epoch": 1}, ["head", "layer4", "layer3", "layer2"]),
        # nothing changes at epoch 2, so the resumed run must restore layer4 by itself
        ({"milestones": [1, 3]}, ["head", "layer4", "layer3"]),
    ],
)
def test_resume_mid_schedule_matches_the_uninterrupted_run(
    kwargs, unfrozen, tmp_path, trainer_kwargs
):
    def run(epochs: int, ckpt_path: str | None = None):
        pl.seed_everything(0, verbose=False)
        module = TimmClassifier("test_resnet", num_classes=3, lr=1e-2)
        freezing = LayerFreezing("gradual", lr_decay=0.5, **kwargs)
        saver = pl.callbacks.ModelCheckpoint(
            dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}"
        )
        recorder = Recorder()
        trainer = pl.Trainer(
            max_epochs=epochs,
            callbacks=[freezing, recorder, saver],
            limit_val_batches=0,
            deterministic=True,
            **{**trainer_kwargs, "enable_checkpointing": True},
        )
        trainer.fit(module, train_dataloaders=loader(), ckpt_path=ckpt_path)
        return module, trainer, freezing, recorder

    full, full_trainer, full_freezing, full_rec = run(4)
    resumed, trainer, freezing, rec = run(4, str(tmp_path / "ckpt" / "epoch=1.ckpt"))
    assert set(rec.trainable) == {2, 3}
    for epoch in (2, 3):
        assert rec.trainable[epoch] == full_rec.trainable[epoch]
        assert rec.in_optimizer[epoch] == full_rec.in_optimizer[epoch]
    assert freezing.unfrozen_groups == full_freezing.unfrozen_groups == unfrozen
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    strip = [
        {k: v for k, v in g.items() if k != "params"}
        for g in full_trainer.optimizers[0].param_groups
    ]
    assert [
        {k: v for k, v in g.items() if k != "params"} for g in trainer.optimizers[0].param_groups
    ] == strip
    full_state = full_trainer.optimizers[0].state_dict()["state"]
    state = trainer.optimizers[0].state_dict()["state"]
    assert full_state.keys() == state.keys()
    for idx in full_state:
        assert torch.equal(full_state[idx]["exp_avg"], state[idx]["exp_avg"])


# --------------------------------------------------------------------------- pretrained file
def test_pretrained_local_file_with_a_new_head_trains(tmp_path, trainer_kwargs):
    source = create_model("test_resnet", num_classes=5)
    path = tmp_path / "pretrained.pth"
    torch.save(source.state_dict(), path)
    module = TimmClassifier("test_resnet", num_classes=3, pretrained=str(path), lr=1e-2)
    assert torch.equal(module.model.conv1[0].weight, source.conv1[0].weight)
    head_before = module.model.fc.weight.clone()
    trainer = fit(module, [LayerFreezing("gradual", milestones=[1])], trainer_kwargs, epochs=2)
    assert module.model.fc.weight.shape == (3, module.model.fc.in_features)
    assert not torch.equal(module.model.fc.weight, head_before)
    assert torch.equal(module.model.conv1[0].weight, source.conv1[0].weight)
    assert not torch.equal(module.model.layer4[0].conv1.weight, source.layer4[0].conv1.weight)
    assert trainer.callback_metrics["freezing/trainable_params"] > 0


# --------------------------------------------------------------------------- non-timm modules
class Plain(dual.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(768, 8), nn.ReLU(), nn.Linear(8, 8))
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.body(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def test_explicit_groups_for_a_plain_module(trainer_kwargs):
    freezing = LayerFreezing("gradual", groups=["body.1", r"body\.3\.", "out"], lr_decay=0.5)
    recorder = Recorder()
    trainer = fit(Plain(), [freezing, recorder], trainer_kwargs, epochs=3)
    assert recorder.trainable[0] == {"out.weight", "out.bias"}
    assert recorder.trainable[1] == {"out.weight", "out.bias", "body.3.weight", "body.3.bias"}
    assert recorder.trainable[2] == {n for n, _ in Plain().named_parameters()}
    assert [g["lr_scale"] for g in trainer.optimizers[0].param_groups] == [
        1.0,
        0.5,
        0.5,
        0.25,
        0.25,
    ]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"strategy": "all"}, ValueError, r"`strategy` must be one of \['gradual'"),
        (
            {"lr_decay": 0.0},
            ValueError,
            r"`lr_decay` must be a number > 0 and <= 1, but got lr_decay=0.0",
        ),
        ({"lr_decay": 1.5}, ValueError, r"`lr_decay` must be a number > 0 and <= 1"),
        ({"lr_decay": "0.5"}, TypeError, r"`lr_decay` must be a number"),
        ({"weight_decay": -0.1}, ValueError, r"`weight_decay` must be a number >= 0"),
        # NaN would turn every weight NaN at the first decayed step.
        ({"weight_decay": float("nan")}, ValueError, r"`weight_decay` must be a number >= 0"),
        ({"lr": float("nan")}, ValueError, r"`lr` must be a number > 0"),
        ({"milestones": [2, 2]}, ValueError, r"strictly increasing.*milestones=\[2, 2\]"),
        ({"milestones": [1], "unfreeze_at_epoch": 1}, ValueError, "either `milestones` or"),
        (
            {"strategy": "freeze_then_unfreeze", "milestones": [1]},
            ValueError,
            "`milestones` is for strategy='gradual'",
        ),
        ({"strategy": "none", "unfreeze_at_epoch": 2}, ValueError, "strategy='none'"),
        ({"keep_frozen": -1}, ValueError, r"`keep_frozen` must be an int >= 0, but got keep"),
        ({"groups_per_step": 1.5}, TypeError, r"`groups_per_step` must be an int"),
        ({"unfreeze_every": 0}, ValueError, r"`unfreeze_every` must be an int >= 1"),
        ({"train_bn": "yes"}, TypeError, r"`train_bn` must be a bool"),
        ({"groups": ["only_one"]}, ValueError, r"`groups` must be a list of at least 2"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs, error, match):
    with pytest.raises(error, match=match):
        LayerFreezing(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep_frozen": 6}, r"`keep_frozen=6` is out of range: the model has 6 layer groups"),
        (
            {"milestones": [1, 2, 3, 4], "groups_per_step": 2},
            r"has 4 steps, but the model has 6 layer groups, 5 to unfreeze 2 at a time: at most 3",
        ),
        ({"groups_per_step": 9}, r"`groups_per_step=9` is out of range: the model has 6 layer"),
    ],
)
def test_out_of_range_groups_name_the_number_of_groups(kwargs, match, trainer_kwargs):
    with pytest.raises(ValueError, match=match):
        fit(make_module(), [LayerFreezing(**kwargs)], trainer_kwargs, epochs=1)


def test_unfreeze_beyond_max_epochs_warns(trainer_kwargs):
    with pytest.warns(UserWarning, match=re.escape("unfreeze steps [(5, ['layer4'])] are at or")):
        fit(make_module(), [LayerFreezing("gradual", milestones=[5])], trainer_kwargs, epochs=1)


def test_no_classifier_found_says_what_was_searched(trainer_kwargs):
    module = make_module()
    module.model.reset_classifier(0)  # get_classifier() is now an Identity without parameters
    with pytest.raises(
        ValueError,
        match=r"no classifier found in ResNet: searched "
        r"`get_classifier\(\)` \(returned Identity\)",
    ):
        fit(module, [LayerFreezing()], trainer_kwargs, epochs=1)


def test_non_timm_module_without_groups_is_explained(trainer_kwargs):
    with pytest.raises(ValueError, match=r"no timm model .* found in Plain.*pass `groups="):
        fit(Plain(), [LayerFreezing()], trainer_kwargs, epochs=1)


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        (["body.2", "out"], r"`groups\[0\]`: module 'body.2' has no parameters"),
        (
            ["nothing_here", "out"],
            r"'nothing_here' is neither a module of Plain.*\['body', 'out'\]",
        ),
    ],
)
def test_explicit_groups_that_claim_nothing_are_errors(groups, match, trainer_kwargs):
    with pytest.raises(ValueError, match=match):
        fit(Plain(), [LayerFreezing(groups=groups)], trainer_kwargs, epochs=1)


def test_no_trainable_parameter_left_is_an_error(trainer_kwargs):
    module = Plain()
    module.out.requires_grad_(False)
    with pytest.raises(ValueError, match=r"no trainable parameter at the start.*\['head'\]"):
        fit(module, [LayerFreezing(groups=["body", "out"])], trainer_kwargs, epochs=1)


# --------------------------------------------------------------------------- with LRSchedule
class LRRecorder(dual.Callback):
    """The LR of every named group right before each optimizer step."""

    def __init__(self) -> None:
        self.lrs: dict[int, dict[str, float]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs[trainer.global_step] = {g["name"]: g["lr"] for g in optimizer.param_groups}


def test_lr_schedule_drives_new_groups_with_lr_scale_and_their_own_warmup(trainer_kwargs):
    freezing = LayerFreezing("gradual", unfreeze_at_epoch=1, lr_decay=0.5, warmup_steps=2)
    recorder = LRRecorder()
    fit(make_module(), [freezing, LRSchedule("constant"), recorder], trainer_kwargs, epochs=3)
    lr = 1e-2
    expected = {
        0: {"head/decay": lr, "head/no_decay": lr},
        2: {"head/decay": lr, "layer4/decay": 0.0, "layer4/no_decay": 0.0},
        3: {"head/decay": lr, "layer4/decay": lr * 0.5 * 0.5},
        4: {"layer4/decay": lr * 0.5, "layer3/decay": 0.0},
        5: {"layer4/no_decay": lr * 0.5, "layer3/no_decay": lr * 0.25 * 0.5},
    }
    for step, lrs in expected.items():
        for name, value in lrs.items():
            assert recorder.lrs[step][name] == pytest.approx(value), (step, name)
    assert len(recorder.lrs[1]) == 2 and len(recorder.lrs[5]) == 6


def test_resume_with_lr_schedule_matches_the_uninterrupted_run(tmp_path, trainer_kwargs):
    def run(ckpt_path: str | None = None):
        pl.seed_everything(0, verbose=False)
        module = TimmClassifier("test_resnet", num_classes=3, lr=1e-2)
        recorder = LRRecorder()
        callbacks = [
            LayerFreezing("gradual", milestones=[1, 3], lr_decay=0.5, warmup_steps=3),
            LRSchedule("cosine", warmup=2),
            recorder,
            pl.callbacks.ModelCheckpoint(
                dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{epoch}"
            ),
        ]
        trainer = pl.Trainer(
            max_epochs=5,
            callbacks=callbacks,
            limit_val_batches=0,
            deterministic=True,
            **{**trainer_kwargs, "enable_checkpointing": True},
        )
        trainer.fit(module, train_dataloaders=loader(), ckpt_path=ckpt_path)
        return module, recorder

    full, full_rec = run()
    # epoch=1.ckpt: stops inside layer4's own warmup (3 steps from step 2)
    resumed, rec = run(str(tmp_path / "ckpt" / "epoch=1.ckpt"))
    assert sorted(rec.lrs) == [4, 5, 6, 7, 8, 9]
    assert all(rec.lrs[s] == full_rec.lrs[s] for s in rec.lrs)
    assert rec.lrs[4]["layer4/decay"] < 1e-2 * 0.5  # still warming up, and restored as such
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


# --------------------------------------------------------------------------- visible plan
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("test_resnet", ["stem", "layer1", "layer2", "layer3", "layer4", "head"]),
        ("test_convnext", ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]),
        ("test_vit", ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4"]),
    ],
)
def test_groups_are_named_after_the_models_stages(name, expected):
    groups = finetuning_groups(create_model(name, num_classes=3, **FAMILIES[name]))
    assert [g for g, _ in groups][: len(expected)] == expected
    assert groups[-1][0] == "head"


def test_the_plan_table_is_printed_at_fit_start_and_the_head_group_is_named(trainer_kwargs, caplog):
    module = TimmClassifier("test_resnet", num_classes=3, lr=1e-2)
    freezing = LayerFreezing("gradual", unfreeze_at_epoch=1, lr_decay=0.5, keep_frozen=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with (
            caplog.at_level(logging.INFO),
            caplog.at_level(logging.INFO, logger="pytorch_lightning"),
            caplog.at_level(logging.INFO, logger="lightning.pytorch"),
        ):  # Lightning's rank-zero INFO log (conftest quiets both packages' loggers)
            trainer = fit(module, [freezing], trainer_kwargs, epochs=2)
    table = caplog.text[caplog.text.index("LayerFreezing plan") :]
    assert re.search(r"group +params +trains from +LR scale", table)
    head = sum(p.numel() for p in module.model.fc.parameters())
    assert re.search(rf"head +{head:,} +epoch 0 +1\b", table)
    assert re.search(r"layer4 +[\d,]+ +epoch 1 +0\.5\b", table)
    assert re.search(r"layer3 +[\d,]+ +epoch 2 \(after the run\) +0\.25\b", table)
    assert re.search(r"stem +[\d,]+ +never +0\.03125\b", table)
    names = [g["name"] for g in trainer.optimizers[0].param_groups]
    assert names[:2] == ["head/decay", "head/no_decay"] and "layer4/decay" in names
    assert not [w for w in caught if "already in the optimizer" in str(w.message)]


class WithTorchScheduler(TimmClassifier):
    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)]


def test_a_torch_scheduler_with_added_groups_is_refused_with_the_fix(trainer_kwargs):
    module = WithTorchScheduler("test_resnet", num_classes=3)
    with pytest.raises(ValueError, match=r"torch LR scheduler StepLR.*LRSchedule.*strategy='none'"):
        fit(module, [LayerFreezing("gradual")], trainer_kwargs, epochs=2)
    fit(
        WithTorchScheduler("test_resnet", num_classes=3), [LayerFreezing("none")], trainer_kwargs, 1
    )
