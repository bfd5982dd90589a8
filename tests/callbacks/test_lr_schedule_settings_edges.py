"""LRSchedule's arguments at their bounds: the warmup, the momentum range, optimizer indices,
and a warmup that starts at the peak."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune.callbacks import LRSchedule

# The Lightning namespace under test, set per test by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")

BATCHES = 4  # optimizer steps per epoch


class Plain(dual.LightningModule):
    """One layer, one SGD param group with LR 0.1 and momentum 0.9."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(BATCHES * 4, 4, generator=generator)
        y = torch.randint(0, 2, (BATCHES * 4,), generator=generator)
        return DataLoader(TensorDataset(x, y), batch_size=4)


class Recorder(dual.Callback):
    """The (LR, momentum) of the single param group at each optimizer update."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float]] = []

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        group = optimizer.param_groups[0]
        self.rows.append((group["lr"], group["momentum"]))


def _lrs(trainer_kwargs: dict, callback: LRSchedule, epochs: int = 1) -> list[float]:
    recorder = Recorder()
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback, recorder], **trainer_kwargs)
    trainer.fit(Plain())
    return [lr for lr, _ in recorder.rows]


# ------------------------------------------------------------------------------ warmup
def test_a_warmup_fraction_must_be_below_one():
    with pytest.raises(ValueError, match=r"a float in \(0, 1\) .*but got warmup=1\.0"):
        LRSchedule("constant", warmup=1.0)


def test_an_int_warmup_of_one_step_is_a_length(trainer_kwargs):
    lrs = _lrs(trainer_kwargs, LRSchedule("constant", warmup=1))
    assert lrs == pytest.approx([0.0, 0.1, 0.1, 0.1])


def test_a_warmup_in_steps_needs_a_step_interval():
    with pytest.raises(ValueError, match=r"warmup_unit='step' needs interval='step'.*'epoch'"):
        LRSchedule("constant", warmup=2, warmup_unit="step", interval="epoch")


def test_a_warmup_in_steps_with_a_step_interval_warms_up_by_steps(trainer_kwargs):
    callback = LRSchedule("constant", warmup=2, warmup_unit="step", interval="step")
    assert _lrs(trainer_kwargs, callback) == pytest.approx([0.0, 0.05, 0.1, 0.1])


@pytest.mark.parametrize("with_max_lr", [False, True], ids=["group_lr", "max_lr"])
def test_a_warmup_may_start_at_the_peak_lr(with_max_lr, trainer_kwargs):
    peak = {"max_lr": 0.1} if with_max_lr else {}  # the peak is the group's own 0.1 otherwise
    callback = LRSchedule("constant", warmup=2, warmup_start_lr=0.1, **peak)
    assert _lrs(trainer_kwargs, callback) == pytest.approx([0.1] * BATCHES)
    assert callback.preview(4, lr=0.1) == pytest.approx([0.1] * 4)


# ------------------------------------------------------------------------------ momentum
@pytest.mark.parametrize("name", ["base_momentum", "max_momentum"])
def test_a_momentum_of_one_is_refused_by_its_own_bound(name):
    with pytest.raises(ValueError, match=rf"`{name}` must be a number >= 0 and < 1, but got"):
        LRSchedule("cyclic", cycle_momentum=True, **{name: 1.0})


def test_momentum_just_below_one_cycles_the_sgd_momentum(trainer_kwargs):
    callback = LRSchedule(
        "cyclic", step_size_up=2, cycle_momentum=True, base_momentum=0.9, max_momentum=0.99
    )
    recorder = Recorder()
    pl.Trainer(max_epochs=1, callbacks=[callback, recorder], **trainer_kwargs).fit(Plain())
    momenta = [m for _, m in recorder.rows]
    assert momenta == pytest.approx([0.99, 0.945, 0.9, 0.945])


# ------------------------------------------------------------------------------ optimizers
def test_optimizer_index_zero_schedules_the_first_optimizer(trainer_kwargs):
    callback = LRSchedule("constant", warmup=2, optimizers=[0])
    assert callback.optimizers == (0,)
    assert _lrs(trainer_kwargs, callback) == pytest.approx([0.0, 0.05, 0.1, 0.1])


def test_a_negative_optimizer_index_is_refused():
    with pytest.raises(ValueError, match=r"ints >= 0\), but got optimizers=\(-1,\)"):
        LRSchedule("constant", optimizers=[-1])


# ------------------------------------------------------------------------------ per-group values
def test_a_zero_lr_in_a_per_group_list_is_refused_by_its_index():
    with pytest.raises(ValueError, match=r"`max_lr\[1\]` must be a number > 0, but got"):
        LRSchedule("cosine", max_lr=[0.1, 0.0])


def test_a_param_group_past_the_per_group_list_is_named_not_an_index_error(trainer_kwargs):
    # two values for the single group of Plain plus one more group: the third group has none
    class ThreeGroups(Plain):
        def configure_optimizers(self) -> Any:
            w, b = self.layer.weight, self.layer.bias
            extra = nn.Parameter(torch.zeros(1))
            return torch.optim.SGD([{"params": [w]}, {"params": [b]}, {"params": [extra]}], lr=0.1)

    callback = LRSchedule("cosine", max_lr=[0.1, 0.05])
    trainer = pl.Trainer(max_epochs=1, callbacks=[callback], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"`max_lr` has 2 entries .* param group 2 needs one"):
        trainer.fit(ThreeGroups())


def test_equal_base_and_max_momentum_hold_the_momentum_still(trainer_kwargs):
    callback = LRSchedule(
        "cyclic", step_size_up=2, cycle_momentum=True, base_momentum=0.9, max_momentum=0.9
    )
    recorder = Recorder()
    pl.Trainer(max_epochs=1, callbacks=[callback, recorder], **trainer_kwargs).fit(Plain())
    assert [m for _, m in recorder.rows] == pytest.approx([0.9] * BATCHES)
