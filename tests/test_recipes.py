"""The fine-tuning preset: its choices for short and long runs, and that it trains as planned."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.callbacks import LRSchedule
from lightning_tune.lr_probe import candidate_lrs, lr_probe
from lightning_tune.range_test import lr_range_test
from lightning_tune.recipes import PROBE_STEPS, SHORT_RUN_STEPS, finetune, plan_finetuning
from lightning_tune.schedules import StableDecay


def test_short_run_keeps_the_lr_at_its_peak():
    plan = plan_finetuning(30, train_size=31, lr=1e-3)
    assert (plan.total_steps, plan.train_size, plan.lr, plan.lr_source) == (30, 31, 1e-3, "given")
    assert (plan.warmup_steps, plan.decay_fraction) == (0, 0.0)
    (schedule,) = plan.callbacks
    assert isinstance(schedule, LRSchedule)
    assert schedule.preview(total_steps=30, lr=1e-3) == [1e-3] * 30
    assert "short run" in str(plan)


def test_long_run_warms_up_keeps_the_peak_and_anneals():
    plan = plan_finetuning(1000, lr=3e-3)
    assert (plan.warmup_steps, plan.warmup_start_factor, plan.decay_fraction) == (50, 0.1, 0.2)
    (schedule,) = plan.callbacks
    assert schedule.schedule == StableDecay(decay=0.2)
    lrs = schedule.preview(total_steps=1000, lr=3e-3)
    assert lrs[0] == pytest.approx(3e-4)  # warmup from 0.1x
    assert lrs[50] == pytest.approx(3e-3)  # the peak right after the warmup ...
    assert lrs[809] == pytest.approx(3e-3)  # ... kept until the last 20 % of the schedule
    assert lrs[910] < 3e-3 / 2 and lrs[-1] < 3e-5  # half way down the decay at 905
    assert "cosine to 0 over the last 20%" in str(plan)


def test_the_boundary_between_short_and_long_runs():
    assert plan_finetuning(SHORT_RUN_STEPS - 1).decay_fraction == 0.0
    long = plan_finetuning(SHORT_RUN_STEPS)
    assert (long.warmup_steps, long.decay_fraction) == (round(0.05 * SHORT_RUN_STEPS), 0.2)
    assert long.lr is None and long.lr_source == "module"


def test_run_length_comes_from_the_datamodule(trainer_kwargs):
    data = DigitsDataModule(image_size=8, batch_size=32, train_fraction=0.2)
    train = data.split_sizes()["train"]
    plan = finetune(None, data, max_epochs=7, lr=1e-3)
    assert plan.train_size == train
    assert plan.total_steps == 7 * math.ceil(train / 32)
    accumulated = finetune(None, data, max_epochs=7, lr=1e-3, accumulate_grad_batches=2)
    assert accumulated.total_steps == 7 * math.ceil(math.ceil(train / 32) / 2)
    assert finetune(total_steps=500, lr=1e-3).warmup_steps == 25


def test_short_run_with_the_preset_is_plain_fine_tuning(trainer_kwargs):
    def train(callbacks: list) -> dict[str, torch.Tensor]:
        pl.seed_everything(0, verbose=False)
        data = DigitsDataModule(image_size=8, batch_size=64, train_fraction=0.1, seed=0)
        module = TimmClassifier("test_resnet", lr=2e-3)
        trainer = pl.Trainer(
            max_epochs=3, callbacks=callbacks, limit_val_batches=0, **trainer_kwargs
        )
        trainer.fit(module, datamodule=data)
        return module.state_dict()

    data = DigitsDataModule(image_size=8, batch_size=64, train_fraction=0.1, seed=0)
    plan = finetune(None, data, max_epochs=3, lr=2e-3)
    assert plan.decay_fraction == 0.0
    plain, preset = train([]), train(plan.callbacks)
    assert all(torch.equal(plain[k], preset[k]) for k in plain)


def test_long_run_follows_the_planned_lrs(trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(image_size=8, batch_size=16, train_fraction=0.5, seed=0)
    module = TimmClassifier("test_resnet", lr=1.0)  # the plan's LR replaces the module's
    plan = finetune(module, data, max_epochs=3, lr=2e-3)
    assert plan.total_steps >= SHORT_RUN_STEPS
    seen: list[float] = []

    class Record(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen.append(optimizer.param_groups[0]["lr"])

    trainer = pl.Trainer(
        max_epochs=3, callbacks=[*plan.callbacks, Record()], limit_val_batches=0, **trainer_kwargs
    )
    trainer.fit(module, datamodule=data)
    expected = plan.callbacks[0].preview(total_steps=plan.total_steps, lr=2e-3)
    assert seen == pytest.approx(expected)


def test_without_an_lr_the_probe_picks_it(trainer_kwargs, caplog):
    """The default search: five LRs around the module's, each running the plan's own schedule
    for min(total_steps, 50) steps, judged on the validation accuracy."""
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(image_size=8, batch_size=64, train_fraction=0.2)
    module = TimmClassifier("test_resnet", lr=2e-3)
    with caplog.at_level("INFO", logger="lightning_tune.lr_probe"):
        plan = finetune(module, data, max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "lightning_tune.lr_probe"]
    assert len(lines) == 5 and all(", 8 steps: val_acc=" in line for line in lines)  # all of it
    assert plan.lr_source == "probe" and plan.total_steps == 8
    probe = lr_probe(
        module,
        data,
        num_steps=8,
        callbacks=lambda peak: plan_finetuning(8, lr=peak).callbacks,
        monitor="val_acc",
        mode="max",
        tie_break="val_loss",
    )
    assert probe.lrs == pytest.approx(candidate_lrs(2e-3))
    assert plan.lr == probe.suggestion
    assert max(probe.values) == probe.values[probe.lrs.index(plan.lr)]
    kept = finetune(TimmClassifier("test_resnet"), data, max_epochs=2, range_test=False)
    assert (kept.lr, kept.lr_source) == (None, "module")


def test_the_probe_of_a_long_run_is_its_first_120_steps(trainer_kwargs, caplog):
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(image_size=8, batch_size=8, train_fraction=0.2)  # 32 batches
    module = TimmClassifier("test_resnet")
    with caplog.at_level("INFO", logger="lightning_tune.lr_probe"):
        plan = finetune(module, data, max_epochs=4, monitor="val_loss", mode="min")
    lines = [r.getMessage() for r in caplog.records if r.name == "lightning_tune.lr_probe"]
    assert len(lines) == 5 and all(", 120 steps: val_loss=" in line for line in lines)
    assert plan.total_steps == 128 and plan.lr_source == "probe"
    probe = lr_probe(
        module,
        data,
        num_steps=PROBE_STEPS,
        callbacks=lambda peak: plan_finetuning(PROBE_STEPS, lr=peak).callbacks,
    )
    assert PROBE_STEPS == 120 and plan.lr == probe.suggestion


def test_trainer_arguments_reach_the_lr_search():
    data = DigitsDataModule(image_size=8, batch_size=64, train_fraction=0.2)
    with pytest.raises(ValueError, match=r"lr_probe sets the Trainer's \['max_steps'\]"):
        finetune(TimmClassifier("test_resnet"), data, max_epochs=2, trainer_kwargs={"max_steps": 3})
    with pytest.raises(TypeError, match=r"`trainer_kwargs` must be a dict.*trainer_kwargs='cpu'"):
        finetune(TimmClassifier("test_resnet"), data, max_epochs=2, trainer_kwargs="cpu")


def test_the_range_test_judges_the_lr_by_the_named_metric(trainer_kwargs):
    """lr_search="range_test": the ramp follows `monitor` (the training loss with None)."""
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(image_size=8, batch_size=64, train_fraction=0.2)
    with pytest.raises(ValueError, match=r"monitor='val_f1'\): the module logged no such"):
        finetune(TimmClassifier("test_resnet"), data, max_epochs=2, monitor="val_f1")
    by_train = finetune(
        TimmClassifier("test_resnet"), data, max_epochs=2, lr_search="range_test", monitor=None
    )
    assert by_train.lr_source == "range test" and 1e-6 <= by_train.lr <= 1.0
    module = TimmClassifier("test_resnet")
    pl.seed_everything(1, verbose=False)
    by_loss = finetune(
        module, data, max_epochs=2, lr_search="range_test", monitor="val_loss", mode="min"
    )
    pl.seed_everything(1, verbose=False)
    assert by_loss.lr == lr_range_test(module, data, monitor="val_loss").suggestion
    with pytest.raises(ValueError, match=r"`monitor` must name a validation metric.*got None"):
        finetune(module, data, max_epochs=2, monitor=None)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda d: finetune(None, d, lr=1e-3), ValueError, r"pass `max_epochs`.*or `total_steps`"),
        (
            lambda d: finetune(None, d, max_epochs=2, total_steps=5),
            ValueError,
            "exactly one, but got max_epochs=2, total_steps=5",
        ),
        (lambda d: finetune(max_epochs=2, lr=1e-3), ValueError, "`max_epochs` needs `datamodule`"),
        (lambda d: finetune(None, d, max_epochs=2), ValueError, "needs `module` and `datamodule`"),
        (
            lambda d: finetune(total_steps=9, lr_search="grid"),
            ValueError,
            r"`lr_search` must be one of \['probe', 'range_test'\], but got lr_search='grid'",
        ),
        (
            lambda d: finetune(total_steps=9, mode="best"),
            ValueError,
            r"`mode` must be one of \['min', 'max'\]",
        ),
        (lambda d: finetune(total_steps=0), ValueError, r"`total_steps` must be an int >= 1"),
        (lambda d: finetune(total_steps=9, lr=-1.0), ValueError, r"`lr` must be a number > 0"),
        (lambda d: finetune(total_steps=9, lr="1e-3"), TypeError, r"`lr` must be a number"),
        (
            lambda d: plan_finetuning(9, train_size=0),
            ValueError,
            r"`train_size` must be an int >= 1, but got train_size=0",
        ),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(DigitsDataModule(image_size=8))


def test_the_probe_runs_a_module_of_either_lightning_package(lightning_ns, trainer_kwargs):
    class Linear(lightning_ns.LightningModule):  # a user's module of the package under test
        def __init__(self, lr: float = 1e-2) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(3 * 8 * 8, 10)

        def _step(self, batch, stage):
            x, y = batch
            logits = self.layer(x.flatten(1))
            loss = torch.nn.functional.cross_entropy(logits, y)
            self.log(f"{stage}_loss", loss)
            self.log(f"{stage}_acc", (logits.argmax(1) == y).float().mean())
            return loss

        def training_step(self, batch, batch_idx):
            return self._step(batch, "train")

        def validation_step(self, batch, batch_idx):
            self._step(batch, "val")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    data = DigitsDataModule(image_size=8, batch_size=64, train_fraction=0.2)
    module = Linear()
    plan = finetune(module, data, max_epochs=2)
    assert plan.lr_source == "probe"
    assert any(plan.lr == pytest.approx(c) for c in candidate_lrs(1e-2))
    trainer = lightning_ns.Trainer(max_epochs=2, callbacks=plan.callbacks, **trainer_kwargs)
    trainer.fit(module, data)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(plan.lr)
