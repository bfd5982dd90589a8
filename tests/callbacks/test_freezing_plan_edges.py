"""LayerFreezing's plan at its edges: argument types and bounds, the plan preview in epochs and
steps, the step schedule for a new run length, the plan table, explicit groups that overlap,
and the warnings given at setup (milestones at or beyond the run, a warmup without LRSchedule)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune.callbacks import LayerFreezing, LRSchedule

# The Lightning namespace under test, set per test by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")

BATCHES = 4  # optimizer steps per epoch
GROUPS = ["body.0", "body.2", "out"]  # bottom to top: three layer groups, the head last


class Tiny(dual.LightningModule):
    """Three linear layers (40, 72 and 27 parameters); the optimizer gets the trainable ones."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.out = nn.Linear(8, 3)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.out(self.body(x)), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(BATCHES * 4, 4, generator=generator)
        y = torch.randint(0, 3, (BATCHES * 4,), generator=generator)
        return DataLoader(TensorDataset(x, y), batch_size=4)


def _freezing_warnings(trainer_kwargs, freezing: LayerFreezing, **kwargs: Any) -> list[str]:
    """Fit Tiny with ``freezing`` (and ``callbacks``); LayerFreezing's warnings, in order."""
    callbacks = [freezing, *kwargs.pop("callbacks", [])]
    trainer = pl.Trainer(callbacks=callbacks, **{**trainer_kwargs, **kwargs})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Tiny())
    return [str(w.message) for w in caught if "LayerFreezing" in str(w.message)]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("milestones", [{1, 2}, "12", 3], ids=["set", "str", "int"])
def test_milestones_that_are_not_a_list_are_refused_as_such(milestones):
    with pytest.raises(TypeError, match=r"`milestones` must be a list of ints or fractions"):
        LayerFreezing("gradual", milestones=milestones)


@pytest.mark.parametrize(
    "groups", [["body.0", []], ["body.0", ["out", 1]]], ids=["empty_entry", "non_str_item"]
)
def test_group_entries_must_be_non_empty_lists_of_str(groups):
    with pytest.raises(TypeError, match=r"`groups` entries must be str or non-empty lists of str"):
        LayerFreezing(groups=groups)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lr": 0}, ValueError, r"`lr` must be a number > 0, but got lr=0"),
        ({"lr": 0.0}, ValueError, r"`lr` must be a number > 0, but got lr=0.0"),
        ({"lr": -0.1}, ValueError, r"`lr` must be a number > 0"),
        ({"lr": True}, TypeError, r"`lr` must be a number, but got lr=True"),
        ({"lr": "0.1"}, TypeError, r"`lr` must be a number, but got lr='0.1'"),
        ({"weight_decay": -1}, ValueError, r"`weight_decay` must be a number >= 0"),
        ({"weight_decay": False}, TypeError, r"`weight_decay` must be a number, but got"),
        ({"weight_decay": "0"}, TypeError, r"`weight_decay` must be a number, but got"),
        ({"lr_decay": True}, TypeError, r"`lr_decay` must be a number, but got lr_decay=True"),
    ],
)
def test_learning_rates_of_the_wrong_type_or_out_of_range_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        LayerFreezing(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"lr": 0.5, "weight_decay": 0}, (0.5, 0.0)),  # lr below 1 and no weight decay
        ({"lr": 1e-3, "weight_decay": 0.0}, (1e-3, 0.0)),
        ({"lr": 2, "weight_decay": 0.5}, (2.0, 0.5)),
        ({}, (None, None)),  # the optimizer's own
    ],
)
def test_any_positive_lr_and_non_negative_weight_decay_are_accepted(kwargs, expected):
    freezing = LayerFreezing(**kwargs)
    assert (freezing.lr, freezing.weight_decay) == expected


# --------------------------------------------------------------------------- the plan preview
def test_a_plan_of_one_epoch():
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[0])
    assert freezing.plan(Tiny(), epochs=1) == [(0, ["head", "group_1"])]


def test_the_lr_scale_of_each_planned_group_is_lr_decay_to_its_depth():
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[1, 2], lr_decay=0.5)
    freezing.plan(Tiny(), epochs=1)  # resolves the groups
    assert [freezing.lr_scale(g) for g in ("head", "group_1", "group_0")] == [1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match=r"unknown group 'body'; the groups are \["):
        freezing.lr_scale("body")


def test_the_plan_in_epochs_ignores_the_steps_per_epoch():
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[1, 3])
    assert freezing.plan(Tiny(), epochs=4, steps_per_epoch=5) == [
        (0, ["head"]),
        (1, ["head", "group_1"]),
        (2, ["head", "group_1"]),
        (3, ["head", "group_1", "group_0"]),  # head first
    ]


def test_the_plan_in_steps_shows_each_epochs_first_step():
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[4, 8], unit="step")
    assert freezing.plan(Tiny(), epochs=3, steps_per_epoch=4) == [
        (0, ["head"]),
        (1, ["head", "group_1"]),  # step 4
        (2, ["head", "group_1", "group_0"]),  # step 8
    ]
    assert freezing.step_schedule() == [(4, ["group_1"]), (8, ["group_0"])]


def test_the_step_schedule_follows_a_new_run_length():
    freezing = LayerFreezing("freeze_then_unfreeze", groups=GROUPS, unfreeze_at=0.5)
    module = Tiny()
    freezing.plan(module, epochs=4)
    assert freezing.step_schedule() == [(2, ["group_1", "group_0"])]
    freezing.plan(module, epochs=10)
    assert freezing.step_schedule() == [(5, ["group_1", "group_0"])]
    assert freezing.describe_schedule() == ["at 50% of the run (step 5 of 10)"]


def test_gradual_fractions_step_from_the_first_unfreeze_by_at_least_one_step():
    # unfreeze_every=1% of 30 steps rounds to 0 steps: one step apart, not 0.11 * 30 -> 3 again
    freezing = LayerFreezing("gradual", groups=GROUPS, unfreeze_at=0.1, unfreeze_every=0.01)
    freezing.plan(Tiny(), epochs=30)
    assert freezing.step_schedule() == [(3, ["group_1"]), (4, ["group_0"])]


def test_the_plan_table_names_the_step_of_each_unfreeze_and_the_ones_after_the_run():
    freezing = LayerFreezing(
        "gradual", groups=GROUPS, milestones=[4, 20], unit="step", lr_decay=0.5
    )
    module = Tiny()
    freezing.plan(module, epochs=3, steps_per_epoch=4)  # a run of 12 steps
    assert freezing.plan_table(module).splitlines() == [
        "LayerFreezing plan (strategy='gradual', lr_decay=0.5):",
        "group    params  trains from                             LR scale",
        "head     27      step 0                                  1",
        "group_1  72      step 4 (step 4 of 12)                   0.5",
        "group_0  40      step 20 (step 20 of 12, after the run)  0.25",
    ]


def test_the_plan_table_gives_the_step_of_a_fraction_of_an_epoch_run():
    freezing = LayerFreezing("freeze_then_unfreeze", groups=GROUPS, unfreeze_at=0.25)
    freezing.plan(Tiny(), epochs=8)
    assert freezing.plan_table().splitlines() == [  # without the module: counts of tensors
        "LayerFreezing plan (strategy='freeze_then_unfreeze', lr_decay=1):",
        "group    params     trains from                   LR scale",
        "head     2 tensors  epoch 0                       1",
        "group_1  2 tensors  25% of the run (step 2 of 8)  1",
        "group_0  2 tensors  25% of the run (step 2 of 8)  1",
    ]


# --------------------------------------------------------------------------- explicit groups
@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (  # a module and a regex naming the same weight: listed once
            [["body.0", r"body\.0\.weight"], "body.2", "out"],
            [
                ("group_0", ["body.0.weight", "body.0.bias"]),
                ("group_1", ["body.2.weight", "body.2.bias"]),
                ("head", ["out.weight", "out.bias"]),
            ],
        ),
        (  # a later entry naming parameters an earlier one claimed: they stay in the earlier
            ["body", ["body.2", "out"]],
            [
                ("group_0", ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"]),
                ("head", ["out.weight", "out.bias"]),
            ],
        ),
    ],
    ids=["same_entry", "earlier_entry"],
)
def test_each_parameter_belongs_to_one_group_once(groups, expected):
    freezing = LayerFreezing("gradual", groups=groups)
    freezing.plan(Tiny(), epochs=1)
    assert freezing.layer_groups() == expected


# --------------------------------------------------------------------------- setup checks
def test_as_many_milestones_as_unfreeze_steps_are_accepted(trainer_kwargs):
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[1, 2])  # 2 groups, 2 steps
    assert _freezing_warnings(trainer_kwargs, freezing, max_epochs=3) == []
    assert freezing.unfrozen_groups == ["head", "group_1", "group_0"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"keep_frozen": 1, "groups_per_step": 2},
            r"`groups_per_step=2` is out of range: the model has 3 layer groups and 1 of them",
        ),
        (
            {"keep_frozen": 1, "milestones": [1, 2]},
            r"`milestones=\[1, 2\]` has 2 steps, .* 1 to unfreeze 1 at a time: at most 1",
        ),
    ],
    ids=["groups-per-step", "milestones"],
)
def test_groups_kept_frozen_are_not_counted_as_unfreezable(kwargs, match, trainer_kwargs):
    # 2 groups below the head, 1 kept frozen: one group can be unfrozen, in one step
    freezing = LayerFreezing("gradual", groups=GROUPS, **kwargs)
    with pytest.raises(ValueError, match=match):
        pl.Trainer(max_epochs=3, callbacks=[freezing], **trainer_kwargs).fit(Tiny())


@pytest.mark.parametrize(
    ("kwargs", "trainer", "late"),
    [
        (
            {"milestones": [2]},
            {"max_epochs": 2},
            "[(2, ['group_1'])] are at or beyond max_epochs=2",
        ),
        (
            {"milestones": [1]},
            {"max_epochs": 0},
            "[(1, ['group_1'])] are at or beyond max_epochs=0",
        ),
        ({"milestones": [1]}, {"max_epochs": 2}, None),
        ({"milestones": [1]}, {"max_epochs": None, "max_steps": 8}, None),  # no epoch count
        ({"milestones": [1]}, {"max_epochs": -1, "max_steps": 8}, None),  # no epoch count
        # steps are compared with the run's 8 steps, not with max_epochs
        ({"milestones": [5, 6], "unit": "step"}, {"max_epochs": 2}, None),
    ],
    ids=["at_max_epochs", "max_epochs_0", "before", "max_steps", "max_epochs_-1", "in_steps"],
)
def test_epoch_milestones_at_or_beyond_max_epochs_warn(kwargs, trainer, late, trainer_kwargs):
    freezing = LayerFreezing("gradual", groups=GROUPS, **kwargs)
    expected = (
        [f"LayerFreezing: unfreeze steps {late}; those groups stay frozen for the whole run"]
        if late
        else []
    )
    assert _freezing_warnings(trainer_kwargs, freezing, **trainer) == expected


@pytest.mark.parametrize(
    ("warmup_steps", "callbacks", "warns"),
    [(0, [], False), (2, [], True), (2, [LRSchedule("constant")], False)],
    ids=["no_warmup", "warmup_alone", "warmup_with_lr_schedule"],
)
def test_a_warmup_without_lr_schedule_warns(warmup_steps, callbacks, warns, trainer_kwargs):
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[1], warmup_steps=warmup_steps)
    caught = _freezing_warnings(trainer_kwargs, freezing, max_epochs=2, callbacks=callbacks)
    expected = [
        f"LayerFreezing(warmup_steps={warmup_steps}) marks new groups with 'warmup_steps', which "
        "only `lightning_tune.callbacks.LRSchedule` applies; without it new groups start at "
        "their full LR"
    ]
    assert caught == (expected if warns else [])
