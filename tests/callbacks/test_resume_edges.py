"""Which checkpoint points lose a validation on resume, at their edges: only an epoch's last
batch (not the batches before it, not the epoch's end, not the validation), only when a
validation is due there (``limit_val_batches``, no ``validation_step``, ``check_val_every_n_epoch``
of 3 or None), after a fit that stopped in that batch's hooks, and the warning of
``warn_if_resume_skips_validation``: once at the last batch, never at the other points."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune.callbacks import LRSchedule
from lightning_tune.callbacks._resume import resume_skips_validation

# The Lightning namespace under test, set per test by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")

BATCHES = 4  # training batches (= optimizer steps) per epoch
SKIPS = "skips that validation"  # in the warning's text


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCHES * 4, 4, generator=generator)
    y = torch.randint(0, 2, (BATCHES * 4,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=4)


class NoValidation(dual.LightningModule):
    """One linear layer; no ``validation_step`` (Lightning's own placeholder stays)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)
        self.validated: list[int] = []  # the epoch of each validation run

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return _loader()


class Net(NoValidation):
    """With a validation step over the same batches."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self.validated.append(self.current_epoch)

    def val_dataloader(self) -> DataLoader:
        return _loader()


class Flags(dual.Callback):
    """``resume_skips_validation`` at each batch end, epoch end and validation start;
    ``fail_at``: the ``(epoch, batch_idx)`` whose ``on_train_batch_end`` raises."""

    def __init__(self, fail_at: tuple[int, int] | None = None) -> None:
        self.rows: list[tuple[str, int, bool]] = []
        self.fail_at = fail_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((f"batch {batch_idx}", trainer.current_epoch, _flag(trainer)))
        if (trainer.current_epoch, batch_idx) == self.fail_at:
            raise RuntimeError("stopped in the last batch's hooks")

    def on_train_epoch_end(self, trainer, pl_module):
        self.rows.append(("epoch end", trainer.current_epoch, _flag(trainer)))

    def on_validation_start(self, trainer, pl_module):
        self.rows.append(("validation", trainer.current_epoch, _flag(trainer)))

    def flagged(self) -> list[tuple[str, int]]:
        return [(hook, epoch) for hook, epoch, flag in self.rows if flag]


def _flag(trainer: Any) -> bool:
    return resume_skips_validation(trainer)


def _trainer(trainer_kwargs, callbacks, epochs: int = 2, **kwargs) -> Any:
    settings = {"num_sanity_val_steps": 0, "limit_val_batches": 2, **kwargs}
    return pl.Trainer(max_epochs=epochs, callbacks=callbacks, **{**trainer_kwargs, **settings})


# --------------------------------------------------------------------------- where in the epoch
def test_only_the_last_batch_before_a_due_validation_is_flagged(trainer_kwargs):
    flags = Flags()
    module = Net()
    _trainer(trainer_kwargs, [flags], limit_val_batches=1).fit(module)  # one batch is due too
    assert module.validated == [0, 1]
    last = f"batch {BATCHES - 1}"
    assert flags.flagged() == [(last, 0), (last, 1)]
    # the batches before it, the epoch's end and the validation itself are not flagged
    assert [(hook, epoch) for hook, epoch, _ in flags.rows if epoch == 0] == [
        *((f"batch {i}", 0) for i in range(BATCHES)),
        ("validation", 0),
        ("epoch end", 0),
    ]


@pytest.mark.parametrize(
    ("module_class", "settings"),
    [(Net, {"limit_val_batches": 0}), (NoValidation, {})],
    ids=["limit_val_batches=0", "no_validation_step"],
)
def test_the_last_batch_is_not_flagged_without_a_validation(trainer_kwargs, module_class, settings):
    flags = Flags()
    module = module_class()
    _trainer(trainer_kwargs, [flags], **settings).fit(module)
    assert module.validated == []
    assert len(flags.rows) == 2 * (BATCHES + 1) and flags.flagged() == []


@pytest.mark.parametrize(
    ("settings", "validated", "flagged"),
    [
        ({"check_val_every_n_epoch": 3}, [2], [2]),
        ({"check_val_every_n_epoch": None, "val_check_interval": BATCHES}, [0, 1, 2], [0, 1, 2]),
        # steps 3, 6, 9 and 12: only the last one is an epoch's last batch (epoch 2)
        ({"check_val_every_n_epoch": None, "val_check_interval": 3}, [0, 1, 2, 2], [2]),
        # after batch 3 of each epoch, never at its last batch (4): nothing is skipped
        ({"val_check_interval": 3}, [0, 1, 2], []),
        ({"val_check_interval": 0.5}, [0, 0, 1, 1, 2, 2], [0, 1, 2]),  # batches 2 and 4
    ],
    ids=[
        "every_3_epochs",
        "every_4_steps",
        "every_3_steps",
        "batch_3_of_each_epoch",
        "twice_an_epoch",
    ],
)
def test_the_last_batch_is_flagged_in_the_epochs_that_validate_there(
    trainer_kwargs, settings, validated, flagged
):
    flags = Flags()
    module = Net()
    _trainer(trainer_kwargs, [flags], epochs=3, **settings).fit(module)
    assert module.validated == validated
    assert flags.flagged() == [(f"batch {BATCHES - 1}", epoch) for epoch in flagged]


class Stream(torch.utils.data.IterableDataset):
    """``BATCHES`` batches with no length: Lightning's ``val_check_batch`` is ``inf``."""

    def __iter__(self):
        return iter(list(_loader()))


class StreamNet(Net):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(Stream(), batch_size=None)


def test_without_a_length_the_last_batch_is_flagged(trainer_kwargs):
    flags, captured = Flags(), []

    class Capture(dual.Callback):
        def on_train_start(self, trainer, pl_module):
            captured.append(trainer.val_check_batch)

    module = StreamNet()
    _trainer(trainer_kwargs, [flags, Capture()]).fit(module)
    assert captured == [float("inf")]
    assert module.validated == [0, 1]
    assert flags.flagged() == [(f"batch {BATCHES - 1}", 0), (f"batch {BATCHES - 1}", 1)]


# --------------------------------------------------------------------------- after a failed fit
def test_a_checkpoint_after_a_fit_that_failed_in_the_last_batch_is_flagged(
    trainer_kwargs, tmp_path
):
    # The fit stopped after the last batch's step, before its validation: the trainer is no
    # longer training, but a checkpoint written now holds the same loops' state as one
    # written in that batch's hooks, and its resume skips epoch 0's validation.
    trainer = _trainer(trainer_kwargs, [Flags(fail_at=(0, BATCHES - 1)), LRSchedule("constant")])
    with pytest.raises(RuntimeError, match="stopped in the last batch's hooks"):
        trainer.fit(Net())
    assert not trainer.training and resume_skips_validation(trainer)
    path = tmp_path / "after_failure.ckpt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.save_checkpoint(path)
    messages = [str(w.message) for w in caught if SKIPS in str(w.message)]
    assert len(messages) == 1 and "last training batch of epoch 0 (step 4)" in messages[0]

    resumed = Net()
    _trainer(trainer_kwargs, [LRSchedule("constant")]).fit(resumed, ckpt_path=str(path))
    assert resumed.validated == [1]  # epoch 0's validation is lost, as warned


# --------------------------------------------------------------------------- the warning
@pytest.mark.parametrize(
    ("checkpoint", "warned"),
    [
        ({"every_n_train_steps": BATCHES}, 1),  # steps 4 and 8: both last batches, one warning
        ({"every_n_train_steps": BATCHES - 1}, 0),  # steps 3 and 6: inside an epoch
        ({"every_n_epochs": 1, "save_on_train_epoch_end": True}, 0),
        ({"every_n_epochs": 1, "save_on_train_epoch_end": False}, 0),  # after the validation
    ],
    ids=["last_batch", "mid_epoch", "epoch_end", "after_validation"],
)
def test_only_a_checkpoint_at_the_last_batch_warns(trainer_kwargs, tmp_path, checkpoint, warned):
    saver = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "checkpoints", filename="{step}", save_top_k=-1, **checkpoint
    )
    trainer = _trainer(
        {**trainer_kwargs, "enable_checkpointing": True}, [LRSchedule("constant"), saver]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Net())
    assert len(list((tmp_path / "checkpoints").iterdir())) == 2  # each writes two checkpoints
    assert sum(SKIPS in str(w.message) for w in caught) == warned
