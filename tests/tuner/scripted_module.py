"""A tiny scripted LightningModule for the tuner tests: validation i logs ``values[i]``.

``ScriptedModule`` is a ``pytorch_lightning`` module, ``UnifiedScriptedModule`` the same one
from ``lightning.pytorch`` (``SCRIPTED`` maps each package name to its class).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

import lightning.pytorch as unified
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class _Scripted:
    """A 2->1 linear model whose ``metric`` at validation i is ``values[i]`` (the last repeats)."""

    def __init__(
        self, values: Sequence[float] = (1.0,), metric: str = "val_loss", batch_size: int = 4
    ) -> None:
        super().__init__()
        self.values = list(values)
        self.metric = metric
        self.batch_size = batch_size
        self.layer = nn.Linear(2, 1)
        self.validations = 0

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        return None

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        value = self.values[min(self.validations, len(self.values) - 1)]
        self.validations += 1
        self.log(self.metric, torch.tensor(float(value)))
        self.log("other_metric", torch.tensor(0.0))

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["scripted_validations"] = self.validations

    def on_load_checkpoint(self, checkpoint) -> None:
        self.validations = checkpoint["scripted_validations"]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def _loader(self, batch_size: int) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(8, 2, generator=g)), batch_size=batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(4)


class ScriptedModule(_Scripted, pl.LightningModule):
    """The scripted module of ``pytorch_lightning``."""


class UnifiedScriptedModule(_Scripted, unified.LightningModule):
    """The scripted module of ``lightning.pytorch``."""


SCRIPTED = {"pytorch_lightning": ScriptedModule, "lightning.pytorch": UnifiedScriptedModule}


class SlowSteps(pl.Callback):
    """Makes each training step last ``seconds``, so a run can be killed in the middle of a trial.

    ``hold``: a file path; while that file exists, the first training step (of epoch
    ``hold_epoch``, or of any epoch) waits, after writing ``<hold>.reached``, so a test kills
    the run in the middle of a trial however loaded the machine is (see
    :func:`kill_in_the_middle_of_a_trial`), then deletes the file for the rerun.
    """

    def __init__(
        self, seconds: float = 0.3, hold: str | None = None, hold_epoch: int | None = None
    ) -> None:
        self.seconds = seconds
        self.hold = hold
        self.hold_epoch = hold_epoch

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        # not in the tuner's pre-flight batch (fast_dev_run), which comes before any trial
        if (
            self.hold is not None
            and not trainer.fast_dev_run
            and self.hold_epoch in (None, trainer.current_epoch)
            and os.path.exists(self.hold)
        ):
            with open(f"{self.hold}.reached", "w"):
                pass
            while os.path.exists(self.hold):
                time.sleep(0.05)
        time.sleep(self.seconds)


def kill_in_the_middle_of_a_trial(process, hold, seconds_after: float = 0.0, timeout=480) -> None:
    """SIGKILL ``process`` (a ``Popen`` whose trials run :class:`SlowSteps` with ``hold``) once
    a trial holds in its first training step, ``seconds_after`` later; then delete ``hold`` so
    that a rerun trains through."""
    reached = f"{hold}.reached"
    end = time.monotonic() + timeout
    try:
        while not os.path.exists(reached):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < end, f"no trial reached its first step in {timeout} s"
            time.sleep(0.1)
        time.sleep(seconds_after)  # e.g. a heartbeat recorded meanwhile; the trial cannot end
        assert process.poll() is None, process.stderr.read()
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        for path in (hold, reached):
            if os.path.exists(path):
                os.remove(path)


class SumModule(ScriptedModule):
    """Logs ``val_loss = x + y`` (and ``size = n``) at every validation: a known optimum for
    sampler, grid and multi-objective tests."""

    def __init__(
        self, x: float = 0.0, y: float = 0.0, n: int = 1, opt: str = "a", batch_size: int = 4
    ) -> None:
        super().__init__(values=[x + y], batch_size=batch_size)
        self.n = n

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking:
            self.log("size", torch.tensor(float(self.n)))


class _DigitsNet:
    """A linear classifier of DigitsDataModule images (3x8x8) that logs ``val_loss``."""

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0, num_classes: int = 10):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


class DigitsNet(_DigitsNet, pl.LightningModule):
    """A user's digits classifier on ``pytorch_lightning``."""


class UnifiedDigitsNet(_DigitsNet, unified.LightningModule):
    """The same on ``lightning.pytorch``."""


DIGITS_NETS = {"pytorch_lightning": DigitsNet, "lightning.pytorch": UnifiedDigitsNet}
