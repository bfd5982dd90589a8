"""Moments at their edges: the fraction 0.0 (allowed for a moment) and 1.0 (never), the steps
per epoch under gradient accumulation, and a fraction of a run of exactly one optimizer step."""

from __future__ import annotations

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

GROUPS = ["body.0", "body.2", "out"]  # bottom to top, the head last


class Tiny(dual.LightningModule):
    """Three linear layers over ``batches`` batches of 4 samples."""

    def __init__(self, batches: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.out = nn.Linear(8, 3)
        self.batches = batches

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.out(self.body(x)), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(self.batches * 4, 4, generator=generator)
        y = torch.randint(0, 3, (self.batches * 4,), generator=generator)
        return DataLoader(TensorDataset(x, y), batch_size=4)


class PerStep(dual.Callback):
    """The LR and the trainable parameter names at each optimizer step."""

    def __init__(self) -> None:
        self.lr: dict[int, float] = {}
        self.trainable: dict[int, set[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        self.lr.setdefault(step, trainer.optimizers[0].param_groups[0]["lr"])
        self.trainable.setdefault(
            step, {n for n, p in pl_module.named_parameters() if p.requires_grad}
        )


# --------------------------------------------------------------------------- the fraction range
@pytest.mark.parametrize(
    "options",
    [
        {"unfreeze_at": 0.0},
        {"milestones": [0.0, 0.5]},
        {"unfreeze_at": 0, "warmup_steps": 0.0},
    ],
    ids=["unfreeze_at", "milestones", "warmup_steps"],
)
def test_the_fraction_zero_is_a_moment_the_start_of_the_run(options, trainer_kwargs):
    record = PerStep()
    freezing = LayerFreezing("gradual", groups=GROUPS, **options)
    trainer = pl.Trainer(max_epochs=2, callbacks=[freezing, record], **trainer_kwargs)
    trainer.fit(Tiny(batches=2))
    assert {"body.2.weight", "out.weight"} <= record.trainable[0]  # the first group, at once
    assert "body.0.weight" not in record.trainable[0]


@pytest.mark.parametrize(
    ("options", "interval"),
    [
        ({"unfreeze_at": 1.0}, "[0, 1)"),
        ({"milestones": [0.5, 1.0]}, "[0, 1)"),
        ({"warmup_steps": 1.0}, "[0, 1)"),
        ({"unfreeze_at": 0, "unfreeze_every": 1.0}, "(0, 1)"),
    ],
    ids=["unfreeze_at", "milestones", "warmup_steps", "unfreeze_every"],
)
def test_the_fraction_one_is_not_a_moment_nor_a_length(options, interval):
    with pytest.raises(ValueError, match=rf"float in \{interval[0]}0, 1\) .* got .*=1\.0"):
        LayerFreezing("gradual", groups=GROUPS, **options)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_moment_is_refused_with_what_is_accepted(value):
    with pytest.raises(ValueError, match=r"`unfreeze_at` must be an int >= 0 \(epochs\) or a "
                       r"float in \[0, 1\) \(a fraction of the run\), but got unfreeze_at="):  # fmt: skip
        LayerFreezing("gradual", groups=GROUPS, unfreeze_at=value)


# --------------------------------------------------------------------------- run lengths
def test_an_epoch_of_warmup_counts_optimizer_steps_under_gradient_accumulation(trainer_kwargs):
    # 5 batches, 2 per optimizer step: steps after batches 2, 4 and 5, 3 steps per epoch.
    record = PerStep()
    schedule = LRSchedule("constant", warmup=1, warmup_unit="epoch", warmup_start_factor=0.1)
    trainer = pl.Trainer(
        max_epochs=2, accumulate_grad_batches=2, callbacks=[schedule, record], **trainer_kwargs
    )
    trainer.fit(Tiny(batches=5))
    assert trainer.global_step == 6
    lrs = [record.lr[s] for s in range(6)]
    assert lrs[:3] == pytest.approx([0.01, 0.04, 0.07])  # linear from 0.1 x 0.1 over 3 steps
    assert lrs[3:] == pytest.approx([0.1] * 3)


def test_a_fraction_of_a_one_step_run_is_its_only_step(trainer_kwargs):
    # A run of one optimizer step has a known length: 0.5 of it is step round(0.5) = 0.
    record = PerStep()
    freezing = LayerFreezing("freeze_then_unfreeze", groups=GROUPS, unfreeze_at=0.5)
    trainer = pl.Trainer(max_epochs=1, callbacks=[freezing, record], **trainer_kwargs)
    trainer.fit(Tiny(batches=1))
    assert trainer.global_step == 1
    assert [step for step, _ in freezing.step_schedule()] == [0]
    assert record.trainable[0] == {n for n, _ in Tiny(1).named_parameters()}
