"""LRSchedule at its edges: epoch interval, tiny runs, skipped epochs, resume at step 1, logging."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune.callbacks import LRSchedule
from lightning_tune.schedules import Cyclic

# The Lightning namespace under test, set per test by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")

BATCHES = 8  # training batches per epoch


class Plain(dual.LightningModule):
    """One layer, one param group without ``lr_scale`` or ``initial_lr`` (lr 0.1)."""

    def __init__(self, groups: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)
        self.groups = groups

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self) -> Any:
        groups = [{"params": list(self.layer.parameters()), **(self.groups or [{}])[0]}]
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(BATCHES * 4, 4, generator=generator)
        y = torch.randint(0, 2, (BATCHES * 4,), generator=generator)
        return DataLoader(TensorDataset(x, y), batch_size=4)


class TwoOptimizers(Plain):
    """Manual optimization over two SGD optimizers; ``scheduler``: a StepLR on optimizer 0."""

    def __init__(self, scheduler: bool = False) -> None:
        super().__init__()
        self.other = nn.Linear(4, 2)
        self.automatic_optimization = False
        self.scheduler = scheduler

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        loss = nn.functional.cross_entropy(self.layer(x) + self.other(x), y)
        for optimizer in self.optimizers():
            optimizer.zero_grad()
        self.manual_backward(loss)
        for optimizer in self.optimizers():
            optimizer.step()

    def configure_optimizers(self) -> Any:
        first = torch.optim.SGD(self.layer.parameters(), lr=0.1)
        second = torch.optim.SGD(self.other.parameters(), lr=0.2)
        if self.scheduler:
            return [first, second], [torch.optim.lr_scheduler.StepLR(first, step_size=2)]
        return [first, second]


class Recorder(dual.Callback):
    """The (step, epoch, LR of group 0) each optimizer update of optimizer 0 uses."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, float]] = []

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if optimizer is trainer.optimizers[0]:
            lr = optimizer.param_groups[0]["lr"]
            self.rows.append((trainer.global_step, trainer.current_epoch, lr))


def _fit(trainer_kwargs: dict, callbacks: list, module: Any = None, **kwargs: Any) -> Recorder:
    recorder = Recorder()
    ckpt_path = kwargs.pop("ckpt_path", None)
    settings = {**trainer_kwargs, "max_epochs": 1, **kwargs}
    trainer = pl.Trainer(callbacks=[*callbacks, recorder], **settings)
    trainer.fit(module or Plain(), ckpt_path=ckpt_path)
    return recorder


def _memory_logger() -> Any:
    class Memory(pl.loggers.Logger):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[int, dict[str, float]]] = []

        @property
        def name(self) -> str:
            return "memory"

        @property
        def version(self) -> int:
            return 0

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.calls.append((step, dict(metrics)))

    return Memory()


# ------------------------------------------------------------------------------ pure API
def test_a_run_of_length_zero_is_a_run_of_unknown_length():
    assert LRSchedule("constant", warmup=2).lengths(0) == (2, None)
    assert LRSchedule("exponential").lengths(0) == (0, None)
    with pytest.raises(ValueError, match="needs the run length"):
        LRSchedule("cosine").lengths(0)


def test_cycled_momentum_starts_after_the_warmup():
    callback = LRSchedule("cyclic", step_size_up=2, warmup=1, cycle_momentum=True)
    cyclic = Cyclic(step_size_up=2)
    moms = [callback.momentum(t, 1, None) for t in range(8)]
    assert moms == [cyclic.momentum(max(0, t - 1), None, 0.8, 0.9) for t in range(8)]
    assert moms[:4] == pytest.approx([0.9, 0.9, 0.85, 0.8])


# ------------------------------------------------------------------ run length and units
@pytest.mark.parametrize("max_epochs", [1, 3])
def test_epoch_interval_lays_a_schedule_over_max_epochs(trainer_kwargs, max_epochs):
    callback = LRSchedule("cosine", interval="epoch", min_factor=0.1)
    recorder = _fit(trainer_kwargs, [callback], max_epochs=max_epochs)
    curve = callback.preview(max_epochs)
    assert [lr for _, _, lr in recorder.rows] == [
        0.1 * curve[epoch] for epoch in range(max_epochs) for _ in range(BATCHES)
    ]


def test_a_smoke_run_with_epoch_interval(trainer_kwargs):
    callback = LRSchedule("linear", interval="epoch", warmup=0.1)
    recorder = _fit(trainer_kwargs, [callback], fast_dev_run=2)
    # laid over a nominal run of 1000 epochs: epoch 0 is the warmup's start
    assert [lr for _, _, lr in recorder.rows] == [0.0, 0.0]


def test_an_epoch_of_warmup_over_epochs_of_one_batch(trainer_kwargs):
    callback = LRSchedule("constant", warmup=1, warmup_unit="epoch")
    recorder = _fit(trainer_kwargs, [callback], max_epochs=3, limit_train_batches=1)
    assert [lr for _, _, lr in recorder.rows] == [0.0, 0.1, 0.1]


def test_an_epoch_skipped_by_the_module_still_moves_the_epoch_schedule(trainer_kwargs):
    class SkipsFirstEpoch(Plain):
        def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
            return -1 if self.current_epoch == 0 else None  # Lightning: skip the epoch

    callback = LRSchedule("step", interval="epoch", step_size=1, gamma=0.5)
    recorder = _fit(trainer_kwargs, [callback], SkipsFirstEpoch(), max_epochs=3)
    # epoch 0 made no optimizer step: epoch 1 starts at step 0, with epoch 1's LR
    assert recorder.rows[0][:2] == (0, 1)
    assert [lr for _, _, lr in recorder.rows] == [0.05] * BATCHES + [0.025] * BATCHES


def test_resume_after_the_first_step_is_exact(tmp_path, trainer_kwargs):
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}"
    )
    settings = {**trainer_kwargs, "enable_checkpointing": True}
    full = _fit(settings, [LRSchedule("linear", warmup=3), checkpoint])
    path = tmp_path / "ckpt" / "step=1.ckpt"
    resumed = _fit(trainer_kwargs, [LRSchedule("linear", warmup=3)], ckpt_path=str(path))
    assert resumed.rows[0][0] == 1
    assert resumed.rows == full.rows[1:]
    assert resumed.rows[0][2] == pytest.approx(0.1 / 3)


def test_a_checkpoint_without_manual_steps_resumes_manual_optimization_at_step_zero(
    trainer_kwargs,
):
    callback = LRSchedule("linear", warmup=2, optimizers=[0])
    callback.load_state_dict({"groups": {}})  # written before "manual_steps" was saved
    recorder = _fit(trainer_kwargs, [callback], TwoOptimizers())
    assert [lr for _, _, lr in recorder.rows] == [0.1 * f for f in callback.preview(BATCHES)]


# -------------------------------------------------------------------- group settings
def test_a_group_without_lr_scale_warms_up_to_its_own_lr(trainer_kwargs):
    callback = LRSchedule("linear", warmup=3)
    recorder = _fit(trainer_kwargs, [callback], max_epochs=2)
    lrs = [lr for _, _, lr in recorder.rows]
    assert lrs == [0.1 * f for f in callback.preview(2 * BATCHES)]
    assert lrs[1] == pytest.approx(0.1 / 3)


@pytest.mark.parametrize("warm", [-1, 2.5, True, "3"])
def test_a_groups_own_warmup_must_be_a_count_of_steps(trainer_kwargs, warm):
    module = Plain(groups=[{"name": "body", "warmup_steps": warm}])
    with pytest.raises(
        ValueError, match=r"param group 'body' of optimizer 0: `warmup_steps` must be an int"
    ):
        _fit(trainer_kwargs, [LRSchedule("cosine")], module)


# ------------------------------------------------------------------- optimizer choice
def test_an_optimizer_index_one_past_the_last_is_refused(trainer_kwargs):
    with pytest.raises(ValueError, match=r"names optimizer\(s\) \[1\].*returned 1"):
        _fit(trainer_kwargs, [LRSchedule("cosine", optimizers=[1])])


def test_a_scheduler_of_another_optimizer_is_not_a_second_owner(trainer_kwargs):
    callback = LRSchedule("linear", optimizers=[1])
    recorder = _fit(trainer_kwargs, [callback], TwoOptimizers(scheduler=True))
    assert len(recorder.rows) == BATCHES
    with pytest.raises(ValueError, match=r"Two owners for the learning rate of optimizer 0"):
        _fit(trainer_kwargs, [LRSchedule("linear", optimizers=[0])], TwoOptimizers(True))


# ---------------------------------------------------------------------- writes and logs
def test_the_lr_is_written_once_per_step_at_the_batch_start(trainer_kwargs):
    class Halves(Plain):
        def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
            # runs after the callbacks' hook: LRSchedule must not undo it before the update
            self.trainer.optimizers[0].param_groups[0]["lr"] *= 0.5

    callback = LRSchedule("linear")
    recorder = _fit(trainer_kwargs, [callback], Halves())
    assert [lr for _, _, lr in recorder.rows] == [0.05 * f for f in callback.preview(BATCHES)]


def test_epoch_interval_logs_each_step_once_under_accumulation(trainer_kwargs):
    logger = _memory_logger()
    settings = {**trainer_kwargs, "logger": logger, "log_every_n_steps": 1}
    callback = LRSchedule("step", interval="epoch", step_size=1, gamma=0.5)
    _fit(settings, [callback], max_epochs=2, accumulate_grad_batches=2)
    ours = [(step, metrics) for step, metrics in logger.calls if "lr/pg0" in metrics]
    assert [step for step, _ in ours] == list(range(BATCHES))  # 4 steps per epoch
    assert [m["lr/pg0"] for _, m in ours] == [0.1] * 4 + [0.05] * 4


def test_two_scheduled_optimizers_log_under_their_own_names(trainer_kwargs):
    logger = _memory_logger()
    settings = {**trainer_kwargs, "logger": logger, "log_every_n_steps": 1}
    _fit(settings, [LRSchedule("constant")], TwoOptimizers(), max_steps=1)
    logged = [m for _, m in logger.calls if any(k.startswith("lr/") for k in m)]
    assert logged == [{"lr/opt0/pg0": 0.1, "lr/opt1/pg0": 0.2}]
