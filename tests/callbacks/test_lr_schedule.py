"""LRSchedule in real Lightning runs: alignment, lr_scale, late groups, resume, conflicts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune import TimmClassifier
from lightning_tune.callbacks import CyclicLR, LRSchedule, OneCycle, Warmup
from lightning_tune.data import DigitsDataModule

# The Lightning namespace under test (pytorch_lightning or lightning.pytorch): every test
# runs once per installed package, with `pl` set by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")

BATCHES = 8  # training batches per epoch


class TinyModule(dual.LightningModule):
    """Two layers; the optimizer starts with two groups over ``a`` (``b`` joins later)."""

    def __init__(self, optimizer: str = "adam", scheduler: bool = False) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)
        self.optimizer_name = optimizer
        self.scheduler = scheduler

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.b(torch.relu(self.a(x))), y)

    def configure_optimizers(self) -> Any:
        groups = [
            {
                "params": [self.a.weight],
                "name": "a/weight",
                "initial_lr": 0.1,
                "lr_scale": 1.0,
                "lr": 0.1,
            },
            {"params": [self.a.bias], "name": "a/bias", "lr_scale": 0.25, "lr": 0.2},
        ]
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
        else:
            optimizer = torch.optim.Adam(groups, lr=0.1)
        if self.scheduler:
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)]
        return optimizer

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(BATCHES * 4, 4, generator=generator)
        y = torch.randint(0, 2, (BATCHES * 4,), generator=generator)
        return DataLoader(TensorDataset(x, y), batch_size=4)


class AddGroup(dual.Callback):
    """Adds layer ``b`` as a new param group at ``epoch`` (what a freezing callback does).

    Stateful like Lightning's BaseFinetuning: on resume it re-adds the group in on_fit_start,
    before Lightning restores the optimizer state.
    """

    def __init__(self, epoch: int = 1, warmup_steps: int = 3, lr: float = 0.0) -> None:
        self.epoch = epoch
        self.warmup_steps = warmup_steps
        self.lr = lr
        self.added = False

    def _add(self, trainer: pl.Trainer, pl_module: TinyModule) -> None:
        trainer.optimizers[0].add_param_group(
            {
                "params": list(pl_module.b.parameters()),
                "name": "late",
                "initial_lr": 0.05,
                "lr_scale": 0.5,
                "warmup_steps": self.warmup_steps,
                "lr": self.lr,
            }
        )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: TinyModule) -> None:
        if self.added:
            self._add(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: TinyModule) -> None:
        if trainer.current_epoch == self.epoch and not self.added:
            self._add(trainer, pl_module)
            self.added = True

    def state_dict(self) -> dict[str, Any]:
        return {"added": self.added}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.added = state_dict["added"]


class Recorder(dual.Callback):
    """The (step, lr per group, momentum per group) each optimizer update actually uses."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, tuple[float, ...], tuple[float, ...]]] = []

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: Any, optimizer: torch.optim.Optimizer
    ) -> None:
        groups = optimizer.param_groups
        moms = tuple(g["betas"][0] if "betas" in g else g["momentum"] for g in groups)
        self.rows.append((trainer.global_step, tuple(g["lr"] for g in groups), moms))


def _fit(
    trainer_kwargs: dict,
    callbacks: list,
    module: pl.LightningModule | None = None,
    ckpt_path: str | None = None,
    **kwargs: Any,
) -> tuple[pl.Trainer, Recorder]:
    recorder = Recorder()
    settings = {**trainer_kwargs, "max_epochs": 3, **kwargs}
    trainer = pl.Trainer(callbacks=[*callbacks, recorder], **settings)
    trainer.fit(module or TinyModule(), ckpt_path=ckpt_path)
    return trainer, recorder


# -------------------------------------------------------------------------- alignment
@pytest.mark.parametrize("accumulate", [1, 3])
def test_each_update_uses_the_previewed_lr_times_each_groups_scale(trainer_kwargs, accumulate):
    callback = LRSchedule("cosine", warmup=0.2, min_factor=0.05)
    trainer, recorder = _fit(trainer_kwargs, [callback], accumulate_grad_batches=accumulate)
    total = 3 * math.ceil(BATCHES / accumulate)
    assert trainer.global_step == total
    curve = callback.preview(total, lr=1.0)
    assert [row[0] for row in recorder.rows] == list(range(total))
    # a/weight: initial_lr 0.1, scale 1; a/bias: initial_lr taken from its lr (0.2), scale 0.25
    assert [row[1] for row in recorder.rows] == [(0.1 * f, 0.2 * 0.25 * f) for f in curve]
    assert max(row[1][0] for row in recorder.rows) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "make_callback",
    [
        lambda: LRSchedule("cosine", warmup=3, warmup_start_lr=0.01, eta_min=0.02),
        lambda: LRSchedule("linear", min_lr=[0.05, 0.1]),
        lambda: CyclicLR(base_lr=[0.01, 0.02], max_lr=[0.08, 0.3], step_size_up=2),
        lambda: OneCycle(max_lr=[0.5, 0.25]),
    ],
    ids=["shared-floor", "per-group-floor", "cyclic-lists", "one-cycle-list"],
)
def test_absolute_floors_and_per_group_bounds_drive_each_group(trainer_kwargs, make_callback):
    callback = make_callback()
    trainer, recorder = _fit(trainer_kwargs, [callback])
    total = 3 * BATCHES
    # a/weight: initial_lr 0.1, scale 1; a/bias: initial_lr 0.2 (from its lr), scale 0.25
    expected = [callback.preview(total, lr=lr, group=j) for j, lr in enumerate((0.1, 0.2))]
    assert [row[1] for row in recorder.rows] == [(a, 0.25 * b) for a, b in zip(*expected)]
    groups = trainer.optimizers[0].param_groups
    assert [g["initial_lr"] for g in groups] == [0.1, 0.2]  # never overwritten


def test_warmup_start_lr_above_a_groups_peak_fails_naming_the_group(trainer_kwargs):
    with pytest.raises(
        ValueError, match=r"param group 'a/weight'.*`warmup_start_lr=0.15` is above"
    ):
        _fit(trainer_kwargs, [LRSchedule("cosine", warmup=2, warmup_start_lr=0.15)])
    with pytest.raises(ValueError, match=r"`warmup_start_lr=0.2` is above the peak LR"):
        LRSchedule("cosine", warmup=2, warmup_start_lr=0.2, max_lr=0.1)
    with pytest.raises(ValueError, match=r"param group 'a/bias'.*`min_lr=0.3` must be <= the peak"):
        _fit(trainer_kwargs, [LRSchedule("cosine", min_lr=[0.01, 0.3])])


@pytest.mark.parametrize("name", ["warmup_start_factor", "warmup_start_lr"])
def test_a_warmup_start_without_a_warmup_is_refused(name):
    with pytest.raises(ValueError, match=rf"`{name}=0.1` is where a warmup starts, but warmup=0"):
        LRSchedule("cosine", warmup=0, **{name: 0.1})


def test_max_steps_sets_the_run_length(trainer_kwargs):
    callback = LRSchedule("linear", warmup=2)
    trainer, recorder = _fit(trainer_kwargs, [callback], max_steps=10, max_epochs=-1)
    assert trainer.global_step == 10
    assert [row[1][0] for row in recorder.rows] == [0.1 * f for f in callback.preview(10)]


def test_epoch_interval_changes_the_lr_once_per_epoch(trainer_kwargs):
    callback = LRSchedule(
        "step", warmup=1, interval="epoch", step_size=1, gamma=0.5, warmup_start_factor=0.5
    )
    _, recorder = _fit(trainer_kwargs, [callback], max_epochs=4)
    per_epoch = [recorder.rows[e * BATCHES][1][0] for e in range(4)]
    assert per_epoch == pytest.approx([0.05, 0.1, 0.05, 0.025])
    assert {row[1][0] for row in recorder.rows[:BATCHES]} == {0.05}


def test_warmup_in_epochs_with_a_step_schedule(trainer_kwargs):
    callback = Warmup(1, warmup_unit="epoch")
    _, recorder = _fit(trainer_kwargs, [callback], max_epochs=2)
    lrs = [row[1][0] for row in recorder.rows]
    assert lrs[:BATCHES] == pytest.approx([0.1 * t / BATCHES for t in range(BATCHES)])
    assert lrs[BATCHES:] == [0.1] * BATCHES


@pytest.mark.parametrize("accumulate", [2, 4])
def test_an_epoch_of_warmup_counts_optimizer_steps_under_accumulation(trainer_kwargs, accumulate):
    callback = Warmup(1, warmup_unit="epoch")
    trainer, recorder = _fit(
        trainer_kwargs, [callback], max_epochs=3, accumulate_grad_batches=accumulate
    )
    per_epoch = BATCHES // accumulate  # optimizer steps, not batches
    assert trainer.global_step == 3 * per_epoch
    assert callback.lengths(3 * per_epoch, per_epoch) == (per_epoch, 2 * per_epoch)
    lrs = [row[1][0] for row in recorder.rows]
    assert lrs[:per_epoch] == pytest.approx([0.1 * t / per_epoch for t in range(per_epoch)])
    assert lrs[per_epoch:] == [0.1] * (2 * per_epoch)


def test_the_main_schedule_length_is_the_run_minus_the_warmup():
    assert LRSchedule("linear", warmup=4).lengths(10) == (4, 6)
    assert LRSchedule("linear", warmup=0.25).lengths(100) == (25, 75)
    assert LRSchedule("linear", warmup=4).preview(10) == pytest.approx(
        [0.0, 0.25, 0.5, 0.75, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    )


@pytest.mark.parametrize("mode", ["linear", "cosine", "exponential"])
def test_warmup_start_lr_during_training_is_what_preview_shows(trainer_kwargs, mode):
    callback = LRSchedule("cosine", warmup=5, warmup_start_lr=0.01, warmup_mode=mode)
    _, recorder = _fit(trainer_kwargs, [callback], max_epochs=2)
    total = 2 * BATCHES
    weight = [row[1][0] for row in recorder.rows]
    bias = [row[1][1] for row in recorder.rows]
    # a/weight peaks at 0.1 (scale 1); a/bias at 0.2 with lr_scale 0.25: the start LR is
    # absolute before the scale, as in timm
    assert weight == pytest.approx(callback.preview(total, lr=0.1), rel=1e-12)
    assert bias == pytest.approx([0.25 * lr for lr in callback.preview(total, lr=0.2)], rel=1e-12)
    assert (weight[0], bias[0]) == pytest.approx((0.01, 0.25 * 0.01))
    assert weight[5] == pytest.approx(0.1) and bias[5] == pytest.approx(0.05)


# ----------------------------------------------------------------- groups added mid-run
def test_late_group_is_scheduled_from_its_first_step_with_its_own_warmup(trainer_kwargs):
    callback = LRSchedule("cosine", warmup=4)
    _, recorder = _fit(trainer_kwargs, [AddGroup(epoch=1, warmup_steps=3), callback])
    curve = callback.preview(3 * BATCHES)
    assert all(len(row[1]) == 2 for row in recorder.rows[:BATCHES])
    late = [row[1][2] for row in recorder.rows[BATCHES:]]
    own = [0.0, 1 / 3, 2 / 3] + [1.0] * (2 * BATCHES - 3)
    assert late == pytest.approx(
        [0.05 * 0.5 * w * f for w, f in zip(own, curve[BATCHES:])], rel=1e-15
    )


def _resume_run(tmp_path: Path, trainer_kwargs: dict, make_callback, stop_at: int):
    def callbacks() -> list:
        return [AddGroup(epoch=1, warmup_steps=5), make_callback()]

    _, full = _fit(trainer_kwargs, callbacks())
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=stop_at, save_top_k=-1, filename="{step}"
    )
    settings = {**trainer_kwargs, "enable_checkpointing": True}
    _fit(settings, [*callbacks(), checkpoint], max_steps=stop_at)
    path = tmp_path / "ckpt" / f"step={stop_at}.ckpt"
    _, resumed = _fit(trainer_kwargs, callbacks(), ckpt_path=str(path))
    return full.rows, resumed.rows


@pytest.mark.parametrize("stop_at", [5, 11])
@pytest.mark.parametrize(
    "make_callback",
    [
        lambda: LRSchedule("cosine", warmup=0.25, min_factor=0.01),
        lambda: CyclicLR(
            base_lr=0.01,
            max_lr=0.1,
            step_size_up=3,
            step_size_down=4,
            mode="triangular2",
            warmup=2,
            warmup_start_factor=0.1,
        ),
    ],
    ids=["warmup-cosine", "cyclic-momentum"],
)
def test_resume_from_checkpoint_is_bit_for_bit(tmp_path, trainer_kwargs, make_callback, stop_at):
    full, resumed = _resume_run(tmp_path, trainer_kwargs, make_callback, stop_at)
    assert len(full) == 3 * BATCHES
    assert resumed[0][0] == stop_at
    assert resumed == full[stop_at:]  # exact float equality, late group and momentum included
    assert len(full[-1][1]) == 3


def test_state_dict_names_groups_and_their_first_step(trainer_kwargs):
    callback = LRSchedule("cosine")
    _fit(trainer_kwargs, [AddGroup(epoch=1), callback], max_epochs=2)
    assert callback.state_dict() == {
        "groups": {0: [["a/weight", 0], ["a/bias", 0], ["late", BATCHES]]},
        "manual_steps": 0,
    }


# ---------------------------------------------------------------------- momentum / max_lr
def test_one_cycle_cycles_sgd_momentum_and_sets_max_lr(trainer_kwargs):
    callback = OneCycle(max_lr=0.4, pct_start=0.25)
    _, recorder = _fit(trainer_kwargs, [callback], module=TinyModule("sgd"))
    total = 3 * BATCHES
    curve = callback.preview(total)
    assert [row[1][0] for row in recorder.rows] == curve
    assert [row[1][1] for row in recorder.rows] == [lr * 0.25 for lr in curve]
    moms = [row[2][0] for row in recorder.rows]
    assert moms[0] == 0.95
    assert min(moms) == pytest.approx(0.85, abs=0.01)
    assert moms == [callback.momentum(t, 0, total) for t in range(total)]


# ------------------------------------------------------------------------------ logging
def test_lrs_are_logged_beside_learning_rate_monitor(tmp_path, trainer_kwargs):
    logger = pl.loggers.CSVLogger(tmp_path, name="logs")
    settings = {**trainer_kwargs, "logger": logger, "log_every_n_steps": 4}
    callback = LRSchedule("cosine", warmup=2)
    _fit(settings, [callback, pl.callbacks.LearningRateMonitor("step")], max_epochs=1)
    import pandas as pd

    metrics = pd.read_csv(Path(logger.log_dir) / "metrics.csv")
    ours = metrics.dropna(subset=["lr/a/weight"])
    assert list(ours["step"]) == [0, 4]
    curve = callback.preview(BATCHES)
    assert list(ours["lr/a/weight"]) == pytest.approx([0.1 * curve[0], 0.1 * curve[4]])
    assert "lr/a/bias" in metrics.columns
    monitor = [c for c in metrics.columns if c.startswith("lr-Adam")]
    assert monitor, metrics.columns


# ------------------------------------------------------------ multiple / manual optimizers
class ManualTwoOptimizers(TinyModule):
    def __init__(self, with_optimizers: bool = True) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.with_optimizers = with_optimizers

    def training_step(self, batch: Any, batch_idx: int) -> None:
        for optimizer in self.optimizers():
            optimizer.zero_grad()
        self.manual_backward(super().training_step(batch, batch_idx))
        for optimizer in self.optimizers():
            optimizer.step()

    def configure_optimizers(self) -> Any:
        if not self.with_optimizers:
            return None
        return [
            torch.optim.SGD(self.a.parameters(), lr=0.1),
            torch.optim.SGD(self.b.parameters(), lr=0.2),
        ]


def test_manual_optimization_schedules_only_the_chosen_optimizer(trainer_kwargs):
    callback = LRSchedule("linear", optimizers=[1])
    trainer = pl.Trainer(callbacks=[callback], max_epochs=2, **trainer_kwargs)
    module = ManualTwoOptimizers()
    seen: list[tuple[float, float]] = []
    original = module.training_step

    def step(batch: Any, batch_idx: int) -> None:
        seen.append(tuple(o.param_groups[0]["lr"] for o in trainer.optimizers))
        original(batch, batch_idx)

    module.training_step = step
    trainer.fit(module)
    total = 2 * BATCHES  # one schedule step per batch, though two optimizers step
    assert [s[1] for s in seen] == pytest.approx([0.2 * (1 - t / total) for t in range(total)])
    assert {s[0] for s in seen} == {0.1}
    assert callback.state_dict()["manual_steps"] == total


def test_manual_optimization_without_optimizer_fails(trainer_kwargs):
    trainer = pl.Trainer(callbacks=[LRSchedule("cosine")], max_epochs=1, **trainer_kwargs)
    with pytest.raises(ValueError, match=r"found no optimizer.*manual optimization"):
        trainer.fit(ManualTwoOptimizers(with_optimizers=False))


# -------------------------------------------------------------------- run-time errors
def test_module_scheduler_and_callback_fail_with_the_fix(trainer_kwargs):
    trainer = pl.Trainer(callbacks=[LRSchedule("cosine")], max_epochs=1, **trainer_kwargs)
    with pytest.raises(ValueError, match=r"Two owners.*StepLR.*remove the scheduler"):
        trainer.fit(TinyModule(scheduler=True))


def test_two_schedules_on_one_optimizer_fail(trainer_kwargs):
    trainer = pl.Trainer(
        callbacks=[LRSchedule("cosine"), Warmup(3)], max_epochs=1, **trainer_kwargs
    )
    with pytest.raises(ValueError, match="Two LRSchedule callbacks"):
        trainer.fit(TinyModule())


@pytest.mark.parametrize(
    ("callback", "kwargs", "match"),
    [
        (
            LRSchedule("cosine"),
            {"max_epochs": -1, "max_steps": -1},
            "needs the run length.*max_epochs=-1.*total_steps",
        ),
        (
            LRSchedule("constant", warmup=0.5),
            {"max_epochs": -1, "max_steps": -1},
            "fraction of the run.*unknown",
        ),
        (
            LRSchedule("cosine", warmup=30),
            {"max_epochs": 3},
            r"warmup \(30 steps\) must be shorter",
        ),
        (LRSchedule("cosine", optimizers=[2]), {"max_epochs": 1}, r"names optimizer\(s\) \[2\]"),
    ],
)
def test_run_time_errors(trainer_kwargs, callback, kwargs, match):
    trainer = pl.Trainer(callbacks=[callback], **{**trainer_kwargs, **kwargs})
    with pytest.raises(ValueError, match=match):
        trainer.fit(TinyModule())


def test_cycle_momentum_needs_an_optimizer_with_momentum(trainer_kwargs):
    class Plain(TinyModule):
        def configure_optimizers(self) -> Any:
            return torch.optim.Adagrad(self.parameters(), lr=0.1)

    trainer = pl.Trainer(callbacks=[CyclicLR(step_size_up=2)], max_epochs=1, **trainer_kwargs)
    with pytest.raises(ValueError, match="neither `momentum` nor `betas`"):
        trainer.fit(Plain())


def test_infinite_run_with_a_schedule_that_needs_no_length(trainer_kwargs):
    callback = LRSchedule("exponential", warmup=2, gamma=0.5)
    _, recorder = _fit(trainer_kwargs, [callback], max_epochs=-1, max_steps=5)
    assert [row[1][0] for row in recorder.rows] == pytest.approx([0.0, 0.05, 0.1, 0.05, 0.025])


# ------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"warmup": -1}, ValueError, "`warmup` must be an int >= 0.*warmup=-1"),
        ({"warmup": 1.5}, ValueError, r"a float in \(0, 1\).*warmup=1.5"),
        ({"warmup": "10"}, TypeError, "`warmup` must be an int or a float"),
        (
            {"warmup_mode": "quadratic"},
            ValueError,
            r"`warmup_mode` must be one of \['linear', 'cosine', 'exponential'\]",
        ),
        ({"warmup": 3, "warmup_mode": "exponential"}, ValueError, "warmup_start_factor` > 0"),
        (
            {"warmup_start_factor": -0.1},
            ValueError,
            r"`warmup_start_factor` must be a number >= 0 and <= 1",
        ),
        ({"warmup_start_factor": 0.1, "warmup_start_lr": 1e-4}, ValueError, "not both"),
        ({"interval": "batch"}, ValueError, r"`interval` must be one of \['step', 'epoch'\]"),
        ({"total_steps": 0}, ValueError, "`total_steps` must be an int >= 1"),
        ({"total_steps": 10.0}, TypeError, "`total_steps` must be an int"),
        ({"max_lr": -1.0}, ValueError, "`max_lr` must be a number > 0"),
        (
            {"cycle_momentum": True},
            ValueError,
            "cycle_momentum=True needs.*'cyclic' or 'one_cycle'",
        ),
        ({"optimizers": []}, ValueError, "`optimizers` must be None"),
        ({"schedule": "warm"}, ValueError, r"`schedule` must be one of \['constant'"),
        ({"gamma": 0.5}, TypeError, r"unexpected argument\(s\) \['gamma'\]"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"schedule": "cosine", **kwargs}
    with pytest.raises(error, match=match):
        LRSchedule(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_lr": 0.1, "max_lr": 0.01}, "`max_lr` must be > 0 and >= `base_lr`.*swap"),
        ({"base_lr": 0.1}, "give both `base_lr` and `max_lr`"),
        ({"mode": "sawtooth"}, r"`mode` must be one of \['triangular'"),
        ({"base_momentum": 0.95, "max_momentum": 0.9}, "`base_momentum` must be <= `max_momentum`"),
    ],
)
def test_cyclic_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CyclicLR(**kwargs)


# ------------------------------------------------------------------ timm fine-tuning
def test_timm_layer_decay_groups_keep_their_scales(trainer_kwargs):
    torch.manual_seed(0)
    module = TimmClassifier("test_resnet", num_classes=10, lr=1e-2, layer_decay=0.5)
    datamodule = DigitsDataModule(image_size=16, batch_size=16)
    callback = LRSchedule("cosine", warmup=2)
    recorder = Recorder()
    trainer = pl.Trainer(
        callbacks=[callback, recorder],
        max_epochs=1,
        limit_train_batches=5,
        limit_val_batches=1,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=datamodule)
    groups = trainer.optimizers[0].param_groups
    curve = callback.preview(5)
    for t, (_, lrs, _) in enumerate(recorder.rows):
        assert lrs == tuple(1e-2 * g["lr_scale"] * curve[t] for g in groups)
    assert len({g["lr_scale"] for g in groups}) > 2


def test_group_added_after_the_batch_start_hook_is_scheduled_before_its_first_update(
    trainer_kwargs,
):
    class AddLate(AddGroup):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: TinyModule) -> None:
            pass

        def on_train_batch_start(
            self, trainer: pl.Trainer, pl_module: TinyModule, batch: Any, batch_idx: int
        ) -> None:  # runs after LRSchedule's hook
            if trainer.global_step == 3 and not self.added:
                self._add(trainer, pl_module)
                self.added = True

    callback = LRSchedule("linear")
    # the group arrives with lr=123.0: its first update must already use the scheduled LR
    _, recorder = _fit(trainer_kwargs, [callback, AddLate(warmup_steps=0, lr=123.0)], max_epochs=1)
    curve = callback.preview(BATCHES)
    late = [row[1][2] for row in recorder.rows[3:]]
    assert late == pytest.approx([0.05 * 0.5 * f for f in curve[3:]], rel=1e-15)


def test_with_layer_freezing_new_groups_warm_up_and_resume_exactly(tmp_path, trainer_kwargs):
    from lightning_tune.callbacks import LayerFreezing

    def run(extra: list, ckpt_path: str | None = None, **kwargs: Any) -> list:
        pl.seed_everything(0, verbose=False)
        recorder = Recorder()
        callbacks = [
            LayerFreezing("gradual", milestones=[1, 2], lr_decay=0.5, warmup_steps=3),
            LRSchedule("cosine", warmup=2),
            *extra,
            recorder,
        ]
        settings = {**trainer_kwargs, "enable_checkpointing": bool(extra), **kwargs}
        trainer = pl.Trainer(
            max_epochs=3,
            limit_train_batches=4,
            limit_val_batches=0,
            callbacks=callbacks,
            **settings,
        )
        trainer.fit(
            TimmClassifier("test_resnet", num_classes=10, lr=0.01),
            DigitsDataModule(image_size=16, batch_size=8),
            ckpt_path=ckpt_path,
        )
        return [(row[0], row[1]) for row in recorder.rows]

    full = run([])
    sizes = [len(lrs) for _, lrs in full]
    first = sizes.index(max(sizes))
    assert first == 8 and sizes[4] > sizes[3]  # groups join at epochs 1 and 2 (4 steps each)
    assert all(lr == 0.0 for lr in full[first][1][sizes[first - 1] :])  # own warmup starts at 0
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=-1, filename="{step}"
    )
    run([checkpoint], max_steps=5)
    resumed = run([], ckpt_path=str(tmp_path / "ckpt" / "step=5.ckpt"))
    assert resumed == full[5:]


def test_a_fast_dev_run_smoke_test_accepts_a_warmup_fraction():
    # the tuner's pre-flight and users' smoke tests run one batch: the schedule must not refuse
    from lightning_tune import DigitsDataModule, TimmClassifier

    schedule = LRSchedule("cosine", warmup=0.1)
    trainer = pl.Trainer(
        fast_dev_run=1, callbacks=[schedule], enable_progress_bar=False, accelerator="cpu"
    )
    trainer.fit(TimmClassifier("test_resnet", num_classes=10), DigitsDataModule(image_size=16))
    assert trainer.global_step == 1
    with pytest.raises(ValueError, match="must be shorter than the run"):
        pl.Trainer(
            max_steps=1, callbacks=[LRSchedule("cosine", warmup=0.1)], enable_progress_bar=False
        ).fit(TimmClassifier("test_resnet", num_classes=10), DigitsDataModule(image_size=16))
