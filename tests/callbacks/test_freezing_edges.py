"""LayerFreezing at its edges: the plan on resume, run-length warnings, per-step verification,
the logged trainable count, unfreezing mid-epoch, and what ``state_dict`` holds."""

from __future__ import annotations

import logging
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
    """Three linear layers; the optimizer gets the parameters that train at the start."""

    def __init__(self, tamper_at: int | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.out = nn.Linear(8, 3)
        self.tamper_at = tamper_at  # the global step at which a frozen weight is moved

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.global_step == self.tamper_at:
            with torch.no_grad():
                self.body[0].weight.add_(1.0)  # group "body.0" never trains
        x, y = batch
        return nn.functional.cross_entropy(self.out(self.body(x)), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(BATCHES * 4, 4, generator=generator)
        y = torch.randint(0, 3, (BATCHES * 4,), generator=generator)
        return DataLoader(TensorDataset(x, y), batch_size=4)


class Trainable(dual.Callback):
    """The trainable parameter names at each optimizer step (after LayerFreezing's hook)."""

    def __init__(self) -> None:
        self.per_step: dict[int, set[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.per_step[trainer.global_step] = {
            n for n, p in pl_module.named_parameters() if p.requires_grad
        }


def _fit(trainer_kwargs, callbacks, epochs: int = 2, module=None, **kwargs) -> Any:
    ckpt_path = kwargs.pop("ckpt_path", None)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, **{**trainer_kwargs, **kwargs})
    trainer.fit(module or Tiny(), ckpt_path=ckpt_path)
    return trainer


def _late_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "LayerFreezing: unfreeze steps" in str(w.message)]


HEAD = {"out.weight", "out.bias"}
MIDDLE = {"body.2.weight", "body.2.bias"}


# --------------------------------------------------------------------------- the plan table
@pytest.mark.parametrize("same_instance", [False, True], ids=["new_callback", "same_callback"])
def test_a_resumed_fit_does_not_print_the_plan_again(
    same_instance, tmp_path, trainer_kwargs, caplog
):
    settings = {**trainer_kwargs, "enable_checkpointing": True}

    def run(freezing: LayerFreezing, ckpt_path: str | None = None) -> str:
        saver = pl.callbacks.ModelCheckpoint(
            dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}"
        )
        callbacks = [freezing] if ckpt_path else [freezing, saver]
        caplog.clear()
        with (
            caplog.at_level(logging.INFO),
            caplog.at_level(logging.INFO, logger="pytorch_lightning"),
            caplog.at_level(logging.INFO, logger="lightning.pytorch"),
        ):
            _fit(settings, callbacks, epochs=2, ckpt_path=ckpt_path)
        return caplog.text

    first = LayerFreezing("gradual", groups=GROUPS, milestones=[1])
    assert "LayerFreezing plan" in run(first)  # a fresh fit shows it
    again = first if same_instance else LayerFreezing("gradual", groups=GROUPS, milestones=[1])
    text = run(again, str(tmp_path / "ckpt" / "epoch=0.ckpt"))
    assert "unfroze ['group_1']" in text  # the resumed fit did run (and logged at INFO)
    assert "LayerFreezing plan" not in text
    assert again.unfrozen_groups == ["head", "group_1"]


# --------------------------------------------------------------------------- run length
def test_a_fractional_warmup_is_a_fraction_of_the_whole_run(trainer_kwargs):
    freezing = LayerFreezing("freeze_then_unfreeze", groups=GROUPS, warmup_steps=0.5)
    trainer = _fit(trainer_kwargs, [freezing, LRSchedule("constant")], epochs=2)
    added = [g for g in trainer.optimizers[0].param_groups if "warmup_steps" in g]
    assert added and {g["warmup_steps"] for g in added} == {4}  # half of 2 x 4 steps


@pytest.mark.parametrize(("milestone", "late"), [(8, True), (7, False)])
def test_step_milestones_at_or_beyond_the_runs_last_step_warn(milestone, late, trainer_kwargs):
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[milestone], unit="step")
    recorder = Trainable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(trainer_kwargs, [freezing, recorder], epochs=2)  # 8 optimizer steps: 0 .. 7
    expected = [
        f"LayerFreezing: unfreeze steps [({milestone}, ['group_1'])] are at or beyond the run's "
        "8 optimizer steps; those groups stay frozen for the whole run"
    ]
    assert _late_warnings(caught) == (expected if late else [])
    assert (recorder.per_step[7] == HEAD | MIDDLE) is not late


def test_an_epoch_milestone_beyond_the_run_warns_once_in_epochs(trainer_kwargs):
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(trainer_kwargs, [freezing], epochs=2)
    assert _late_warnings(caught) == [
        "LayerFreezing: unfreeze steps [(3, ['group_1'])] are at or beyond max_epochs=2; "
        "those groups stay frozen for the whole run"
    ]


# --------------------------------------------------------------------------- when groups unfreeze
def test_step_milestones_unfreeze_at_their_step_in_the_middle_of_an_epoch(trainer_kwargs):
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[3, 6], unit="step")
    recorder = Trainable()
    trainer = _fit(trainer_kwargs, [freezing, recorder], epochs=2)
    everything = {n for n, _ in Tiny().named_parameters()}
    assert [recorder.per_step[s] for s in range(8)] == (
        [HEAD] * 3 + [HEAD | MIDDLE] * 3 + [everything] * 2
    )
    in_optimizer = sum(len(g["params"]) for g in trainer.optimizers[0].param_groups)
    assert in_optimizer == len(everything)


def test_the_logged_trainable_count_is_the_epochs_count_after_its_unfreeze(trainer_kwargs):
    freezing = LayerFreezing("freeze_then_unfreeze", groups=GROUPS, unfreeze_at_epoch=1)
    trainer = _fit(trainer_kwargs, [freezing], epochs=2)
    everything = sum(p.numel() for p in trainer.lightning_module.parameters())
    assert trainer.callback_metrics["freezing/trainable_params"].item() == everything


# --------------------------------------------------------------------------- verify_frozen
@pytest.mark.parametrize(
    ("tamper_at", "detected"),
    [
        (0, True),  # the first step of the run is checked
        (1, False),  # later steps are not: one checksum pass per change
        (BATCHES, True),  # the first step after the unfreeze at epoch 1 is checked again
        (BATCHES + 1, False),
    ],
)
def test_verify_frozen_checks_the_first_step_after_each_change(tamper_at, detected, trainer_kwargs):
    module = Tiny(tamper_at=tamper_at)
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[1])
    if detected:
        with pytest.raises(RuntimeError, match=r"1 frozen tensors changed.*'body\.0\.weight'"):
            _fit(trainer_kwargs, [freezing], epochs=2, module=module)
    else:
        trainer = _fit(trainer_kwargs, [freezing], epochs=2, module=module)
        assert trainer.global_step == 2 * BATCHES
        assert freezing.unfrozen_groups == ["head", "group_1"]


# --------------------------------------------------------------------------- state
def test_state_dict_before_any_fit_is_empty():
    assert LayerFreezing(groups=GROUPS).state_dict() == {"unfrozen": [], "optimizers": []}


def test_state_dict_keeps_every_setting_of_each_param_group(trainer_kwargs):
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[1], lr_decay=0.5)
    trainer = _fit(trainer_kwargs, [freezing], epochs=2)
    module = trainer.lightning_module
    names_of = {id(p): n for n, p in module.named_parameters()}
    groups = trainer.optimizers[0].param_groups
    state = freezing.state_dict()
    assert state["unfrozen"] == ["head", "group_1"]
    assert state["optimizers"] == [
        [
            {
                **{k: v for k, v in g.items() if k != "params"},
                "params": [names_of[id(p)] for p in g["params"]],
            }
            for g in groups
        ]
    ]
    saved = state["optimizers"][0]
    assert [g["lr_scale"] for g in saved] == [1.0] + [0.5] * (len(saved) - 1)
    assert all(g["initial_lr"] == 0.1 and "momentum" in g for g in saved)


class WithLooseTensor(Tiny):
    """An optimizer that also holds a tensor the module does not register (a plain attribute,
    like a loss's own parameter): in a group of its own with lr 0, so it stays 1."""

    def __init__(self) -> None:
        super().__init__()
        self.temperature = torch.ones(1, requires_grad=True)  # not a Parameter: unnamed

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.out(self.body(x)) / self.temperature, y)

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(
            [{"params": trainable}, {"params": [self.temperature], "lr": 0.0}], lr=0.1
        )


def test_an_optimizer_tensor_the_module_does_not_register_is_saved_and_resumed(
    tmp_path, trainer_kwargs
):
    def run(ckpt_path: str | None = None) -> Any:
        pl.seed_everything(0, verbose=False)
        saver = pl.callbacks.ModelCheckpoint(
            dirpath=tmp_path / ("resumed" if ckpt_path else "full"),
            save_top_k=-1,
            every_n_epochs=1,
            filename="{epoch}",
        )
        freezing = LayerFreezing("gradual", groups=GROUPS, lr_decay=0.5)
        trainer = _fit(
            {**trainer_kwargs, "enable_checkpointing": True},
            [freezing, saver],
            epochs=3,
            module=WithLooseTensor(),
            ckpt_path=ckpt_path,
        )
        return trainer, freezing

    full, freezing = run()  # saving a checkpoint with the loose tensor does not fail
    saved = freezing.state_dict()["optimizers"][0]
    assert [g["params"] for g in saved if g["lr"] == 0.0] == [[0]]  # the first unnamed tensor
    resumed, _ = run(str(tmp_path / "full" / "epoch=0.ckpt"))
    module = resumed.lightning_module
    groups = resumed.optimizers[0].param_groups
    loose = [p for g in groups if g["lr"] == 0.0 for p in g["params"]]
    assert len(loose) == 1 and loose[0] is module.temperature  # the resumed run's own tensor
    assert [{k: v for k, v in g.items() if k != "params"} for g in groups] == [
        {k: v for k, v in g.items() if k != "params"} for g in full.optimizers[0].param_groups
    ]
    for key, value in full.lightning_module.state_dict().items():
        assert torch.equal(value, module.state_dict()[key]), key


class NamedLoose(WithLooseTensor):
    """The optimizer gets names (torch's named parameters) for the module's parameters and
    for the loose tensor, all in one group."""

    def configure_optimizers(self) -> Any:
        named = [*self.named_parameters(), ("temperature", self.temperature)]
        return torch.optim.SGD(named, lr=0.0)  # lr 0: nothing moves, only the groups matter


def test_groups_split_by_depth_keep_the_names_the_optimizer_was_given(trainer_kwargs):
    freezing = LayerFreezing("none", groups=GROUPS, lr_decay=0.5)
    trainer = _fit(trainer_kwargs, [freezing], epochs=1, module=NamedLoose())
    groups = trainer.optimizers[0].param_groups
    by_scale = {g["lr_scale"]: g["param_names"] for g in groups}
    # the loose tensor belongs to no layer group: it trains with the head
    assert by_scale == {
        1.0: ["out.weight", "out.bias", "temperature"],
        0.5: ["body.2.weight", "body.2.bias"],
        0.25: ["body.0.weight", "body.0.bias"],
    }
    module = trainer.lightning_module
    for group in groups:
        named = dict(module.named_parameters()) | {"temperature": module.temperature}
        assert all(p is named[n] for n, p in zip(group["param_names"], group["params"]))
