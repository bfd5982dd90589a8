"""EarlyStopping edge cases: argument checks, when a check runs or is skipped, the exact stop
boundaries, smoothing of non-finite values, where best weights come from, old state dicts.

Each test drives the callback with a scripted metric sequence (``Scripted`` of
test_early_stopping.py) and a real Trainer of each installed Lightning package.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import pathlib
import pickle
import random
import socket
import time
import warnings

import pytest
import torch
from test_early_stopping import Scripted, TrainEpochMetric

import lightning_tune._lightning as dual
from lightning_tune.callbacks import EarlyStopping
from lightning_tune.callbacks.early_stopping import EarlyStoppingReason

pl = dual.NAMESPACES[0]  # set per test by the fixture (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")

LOGGER = "lightning_tune.callbacks.early_stopping"
RESUME_WARNING = "ignore:Be aware that when using `ckpt_path`"


def fit(trainer_kwargs, values, callbacks, module=None, **kwargs):
    """``fit`` of test_early_stopping.py with this module's ``pl`` (the package under test)."""
    module = Scripted(values) if module is None else module
    settings = {
        **trainer_kwargs,
        "max_epochs": len(values),
        "limit_train_batches": 2,
        "num_sanity_val_steps": 0,
        **kwargs,
    }
    trainer = pl.Trainer(callbacks=callbacks, **settings)
    trainer.fit(module)
    return trainer, module


def assert_weights_of(module, weights):
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)


# ------------------------------------------------------------------------------ arguments
def test_an_empty_monitor_is_refused():
    with pytest.raises(TypeError, match=r"`monitor` must be a non-empty metric name.*monitor=''"):
        EarlyStopping("")


@pytest.mark.parametrize(
    ("kwargs", "attribute", "value"),
    [
        ({"stopping_threshold": -math.inf}, "stopping_threshold", -math.inf),
        ({"divergence_threshold": math.inf}, "divergence_threshold", math.inf),
    ],
)
def test_infinite_thresholds_are_accepted_and_never_stop(trainer_kwargs, kwargs, attribute, value):
    early = EarlyStopping("val_loss", patience=10, **kwargs)
    assert getattr(early, attribute) == value
    trainer, _ = fit(trainer_kwargs, [5, 4, 1e30, -1e30], [early])
    assert trainer.current_epoch == 4
    assert early.stopping_reason == EarlyStoppingReason.NOT_STOPPED


# ------------------------------------------------------------------ when a check runs at all
def test_a_first_non_finite_value_counts_from_a_wait_of_zero(trainer_kwargs):
    # check_finite=False: NaN is one check without improvement (wait 1 < patience 2), not a stop
    early = EarlyStopping("val_loss", patience=2, check_finite=False)
    fit(trainer_kwargs, [math.nan, 5, 4, 3], [early])
    assert early.stopping_reason == EarlyStoppingReason.NOT_STOPPED
    assert (early.best_epoch, early.wait_count) == (3, 0)


def test_a_missing_metric_fails_at_the_first_check(trainer_kwargs):
    # a fresh callback has not been restored from a checkpoint: nothing excuses the first check
    early = EarlyStopping("val_acc")
    with pytest.raises(RuntimeError, match="no metric 'val_acc'"):
        fit(trainer_kwargs, [1], [early])


def test_a_missing_metric_warns_once(trainer_kwargs):
    early = EarlyStopping("val_acc", strict=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _ = fit(trainer_kwargs, [1, 2, 3, 4], [early])
    assert trainer.current_epoch == 4
    assert len([w for w in caught if "no metric 'val_acc'" in str(w.message)]) == 1


@pytest.mark.parametrize("check_on_train_epoch_end", [None, True])
def test_check_at_train_epoch_end_sees_the_metric_logged_there(
    trainer_kwargs, check_on_train_epoch_end
):
    # None: validation runs once per epoch, so the check runs at train-epoch end (after the
    # module logged its metric); True: also when validation runs only every other epoch.
    every = 1 if check_on_train_epoch_end is None else 2
    early = EarlyStopping(
        "train_metric", patience=1, check_on_train_epoch_end=check_on_train_epoch_end
    )
    values = [3, 2, 2, 2, 2, 2]
    trainer, _ = fit(
        trainer_kwargs, values, [early], TrainEpochMetric(values), check_val_every_n_epoch=every
    )
    assert early.stopped_epoch == 2 and trainer.current_epoch == 3


@pytest.mark.parametrize("where", ["sanity check", "fast_dev_run", "validate"])
def test_no_check_outside_fitting(trainer_kwargs, where):
    early = EarlyStopping("val_loss", patience=0, check_on_train_epoch_end=False)
    module = Scripted([5, 6, 7])
    if where == "validate":
        trainer = pl.Trainer(callbacks=[early], **trainer_kwargs)
        trainer.validate(module)
    else:
        kwargs = {"num_sanity_val_steps": 1} if where == "sanity check" else {"fast_dev_run": True}
        # Scripted logs nothing during the sanity check: a check there would fail (strict)
        fit(trainer_kwargs, [5, 6, 7], [early], module, **kwargs)
    if where == "sanity check":
        assert early.stopped_epoch == 1  # 5 then 6: patience 0 stops at the second epoch
    else:
        assert early.best_epoch is None and early.best_score == math.inf


# --------------------------------------------------------------------------- stop boundary
def test_a_stop_before_the_first_optimizer_step_is_honoured(trainer_kwargs):
    # validation after every batch, one optimizer step per two batches: the first check is at
    # global_step 0 in the middle of epoch 0; neither min_epochs nor min_steps was set
    early = EarlyStopping("val_loss", stopping_threshold=1.0, check_on_train_epoch_end=False)
    trainer, module = fit(
        trainer_kwargs,
        [0.5] * 8,
        [early],
        max_epochs=2,
        limit_train_batches=4,
        accumulate_grad_batches=2,
        val_check_interval=1,
    )
    assert early.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD
    assert (module.validations, trainer.global_step, early.stopped_epoch) == (1, 0, 0)


def test_min_steps_allows_the_stop_exactly_at_that_step(trainer_kwargs):
    early = EarlyStopping("val_loss", patience=1)
    # two steps per epoch: the check of epoch 1 (no improvement) is at global_step 4 == min_steps
    trainer, module = fit(trainer_kwargs, [5, 6, 6, 6, 6, 6], [early], min_steps=4)
    assert (early.stopped_epoch, trainer.global_step, module.validations) == (1, 4, 2)


def test_patience_message_names_the_best_epoch(trainer_kwargs):
    early = EarlyStopping("val_loss", patience=2)
    fit(trainer_kwargs, [5, 4, 3, 3.5, 3.5, 3.5], [early])
    assert early.stopped_epoch == 4
    assert "best was 3 at epoch 2. Stopping." in early.stopping_reason_message


def test_min_delta_in_max_mode_raises_the_bar(trainer_kwargs):
    early = EarlyStopping("val_acc", mode="max", patience=1, min_delta=0.5)
    module = Scripted([1.0, 1.2, 1.3, 2.0], metric="val_acc")
    fit(trainer_kwargs, [1.0, 1.2, 1.3, 2.0], [early], module)
    assert (early.best_epoch, early.stopped_epoch) == (0, 1)


def test_smoothing_skips_a_non_finite_value(trainer_kwargs):
    # check_finite=False: the NaN check counts as no improvement but does not enter the EMA
    early = EarlyStopping("val_loss", patience=2, smoothing=0.5, check_finite=False)
    fit(trainer_kwargs, [5, math.nan, 4, 3, 2], [early])
    assert early.stopping_reason == EarlyStoppingReason.NOT_STOPPED
    assert early.best_epoch == 4
    assert early.smoothed == pytest.approx(((5 * 0.5 + 4 * 0.5) * 0.5 + 3 * 0.5) * 0.5 + 2 * 0.5)


# -------------------------------------------------------------------------------- restoring
# Raw best at epoch 1; the smoothed (0.5) best keeps improving: 5, 4.5, 4.3, 4.2, 4.15.
RESTORE_VALUES = [5, 4, 4.1, 4.1, 4.1]


@pytest.mark.parametrize(
    ("kwargs", "checkpoint", "source", "restored"),
    [
        # a ModelCheckpoint with the same monitor and mode, but memory was asked for
        ({"restore_from": "memory"}, {"monitor": "val_loss"}, "memory", 1),
        # auto: a ModelCheckpoint of another mode is no source of the best weights
        ({}, {"monitor": "val_loss", "mode": "max"}, "memory", 1),
        # auto: smoothing makes the two "best" differ, so the memory copy is used
        ({"smoothing": 0.5}, {"monitor": "val_loss"}, "memory", 4),
        # asked for explicitly: the checkpoint is read even with smoothing (and warned about)
        ({"smoothing": 0.5, "restore_from": "checkpoint"}, {"monitor": "val_loss"}, "file", 1),
    ],
)
def test_where_the_best_weights_come_from(
    trainer_kwargs, tmp_path, kwargs, checkpoint, source, restored
):
    if source == "memory":
        values = RESTORE_VALUES if kwargs.get("smoothing") else [5, 4, 4.5, 4.6, 4.7]
    else:
        values = RESTORE_VALUES
    early = EarlyStopping("val_loss", patience=10, restore_best_weights=True, **kwargs)
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", **checkpoint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, module = fit({**trainer_kwargs, "enable_checkpointing": True}, values, [early, saver])
    mismatch = [w for w in caught if "best check was at epoch" in str(w.message)]
    assert early.restored_epoch == restored
    assert_weights_of(module, module.weights_at[restored])
    assert ("best_weights" in early.state_dict()) == (source == "memory")
    if source == "file":
        assert early.best_epoch == 4
        assert len(mismatch) == 1 and "is from epoch 1" in str(mismatch[0].message)
    else:
        assert early.best_epoch == restored and not mismatch


def test_restore_from_checkpoint_needs_nothing_without_restore_best_weights(trainer_kwargs):
    # restore_from="checkpoint" only matters with restore_best_weights=True
    early = EarlyStopping("val_loss", patience=1, restore_from="checkpoint")
    fit(trainer_kwargs, [5, 6, 6], [early])
    assert early.stopped_epoch == 1 and early.restored_epoch is None


def test_nothing_is_restored_without_a_best_check(trainer_kwargs, tmp_path):
    # the grace period outlasts the run: no check, so no "best" to restore, even though the
    # ModelCheckpoint has a best file
    early = EarlyStopping(
        "val_loss", restore_best_weights=True, restore_from="checkpoint", start_from_epoch=10
    )
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss")
    _, module = fit({**trainer_kwargs, "enable_checkpointing": True}, [5, 1, 3], [early, saver])
    assert saver.best_model_path and early.best_epoch is None
    assert early.restored_epoch is None
    assert_weights_of(module, module.weights_at[2])  # the last weights


class DeleteBest(dual.Callback):
    """Removes the ModelCheckpoint's best file at train end (before EarlyStopping restores)."""

    def on_train_end(self, trainer, pl_module):
        os.remove(trainer.checkpoint_callback.best_model_path)


def test_a_vanished_best_checkpoint_warns_and_keeps_the_last_weights(trainer_kwargs, tmp_path):
    early = EarlyStopping("val_loss", restore_best_weights=True)
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss")
    with pytest.warns(UserWarning, match="the ModelCheckpoint has no best checkpoint"):
        _, module = fit(
            {**trainer_kwargs, "enable_checkpointing": True},
            [5, 1, 3],
            [DeleteBest(), early, saver],
        )
    assert early.restored_epoch is None
    assert_weights_of(module, module.weights_at[2])


SGD = functools.partial(torch.optim.SGD, lr=0.1)


class WithOptimizerFactory(Scripted):
    """Saves a ``functools.partial`` hyperparameter, as modules taking an optimizer factory do."""

    def __init__(self, values, optimizer=SGD):
        super().__init__(values)
        self.save_hyperparameters()


def test_restore_reads_a_full_lightning_checkpoint(trainer_kwargs, tmp_path):
    # the checkpoint holds more than tensors (a partial in hparams): it must still be read
    early = EarlyStopping("val_loss", restore_best_weights=True)
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss")
    values = [5, 1, 3]
    module = WithOptimizerFactory(values)
    fit({**trainer_kwargs, "enable_checkpointing": True}, values, [early, saver], module)
    assert "best_weights" not in early.state_dict()
    assert early.restored_epoch == 1
    assert_weights_of(module, module.weights_at[1])


@pytest.mark.parametrize("verbose", [True, False])
def test_verbose_logs_the_restored_epoch(trainer_kwargs, caplog, verbose):
    early = EarlyStopping("val_loss", patience=1, restore_best_weights=True, verbose=verbose)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        fit(trainer_kwargs, [5, 3, 4, 4], [early])
    restored = [r.getMessage() for r in caplog.records if "restored the weights" in r.getMessage()]
    assert early.restored_epoch == 1
    assert restored == (["EarlyStopping: restored the weights of epoch 1"] if verbose else [])


# ------------------------------------------------------------------------- state and resume
def test_load_state_dict_of_an_old_partial_state(trainer_kwargs):
    early = EarlyStopping("val_loss", patience=2)
    early.load_state_dict({"best_score": 3.0, "best_epoch": 1, "best_step": 4})
    assert (early.wait_count, early.stopped_epoch) == (0, 0)
    assert early.stopping_reason == EarlyStoppingReason.NOT_STOPPED
    assert early.stopping_reason_message is None and early.smoothed is None
    # continues from that best: 3.5 and 3.2 do not beat 3 -> stop at the second of them
    fit(trainer_kwargs, [3.5, 3.2, 3.1, 3.0], [early])
    assert (early.best_epoch, early.stopped_epoch) == (1, 1)


def resume_after_validation(trainer_kwargs, tmp_path, **kwargs):
    """An uninterrupted run with a ModelCheckpoint saving at every validation end, and a run
    resumed from its checkpoint of epoch 1. On resume, Lightning ends that validation (and,
    if due, the train epoch) again without running the validation: no metric is logged."""
    values = [5, 4, 4.5, 4.6, 4.7]
    saver = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "all",
        filename="{epoch}",
        monitor="val_loss",
        save_top_k=-1,
        save_on_train_epoch_end=False,
    )
    full = EarlyStopping("val_loss", patience=2, **kwargs)
    fit({**trainer_kwargs, "enable_checkpointing": True}, values, [full, saver])
    assert full.stopped_epoch == 3
    resumed = EarlyStopping("val_loss", patience=2, **kwargs)
    module = Scripted(values)
    module.validations = 2
    trainer = pl.Trainer(
        callbacks=[resumed],
        max_epochs=len(values),
        limit_train_batches=2,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(module, ckpt_path=tmp_path / "all" / "epoch=1.ckpt")
    return trainer, full, resumed


@pytest.mark.filterwarnings(RESUME_WARNING)
@pytest.mark.parametrize("check_on_train_epoch_end", [None, False])
def test_resume_from_a_checkpoint_written_at_validation_end(
    trainer_kwargs, tmp_path, check_on_train_epoch_end
):
    # None (checks at train-epoch end): the replayed train-epoch end has no metric; it must not
    # fail as a missing metric (strict). False: the checkpoint, written after the check, holds it.
    trainer, full, resumed = resume_after_validation(
        trainer_kwargs, tmp_path, check_on_train_epoch_end=check_on_train_epoch_end
    )
    assert resumed.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED
    if check_on_train_epoch_end is False:
        assert trainer.current_epoch == 4
        assert resumed.state_dict() == full.state_dict()


@pytest.mark.filterwarnings(RESUME_WARNING)
def test_resume_after_validation_with_checks_at_train_epoch_end(trainer_kwargs, tmp_path):
    trainer, full, resumed = resume_after_validation(trainer_kwargs, tmp_path)
    assert resumed.state_dict() == full.state_dict()
    assert trainer.current_epoch == 4


@pytest.mark.filterwarnings(RESUME_WARNING)
def test_after_the_first_check_since_resume_a_missing_metric_is_reported(trainer_kwargs, tmp_path):
    # checks at train-epoch end, the metric is logged by a validation every 4 epochs: the first
    # check after resuming may miss it (see above), a later one is reported again
    values = [5, 4, 3]
    kwargs = {"patience": 5, "strict": False, "check_on_train_epoch_end": True}
    saver = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "all", filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=True
    )
    settings = {**trainer_kwargs, "check_val_every_n_epoch": 4}
    with pytest.warns(UserWarning, match="found no metric 'val_loss'"):
        fit(
            {**settings, "enable_checkpointing": True},
            values,
            [EarlyStopping("val_loss", **kwargs), saver],
            max_epochs=4,
        )
    resumed = EarlyStopping("val_loss", **kwargs)
    trainer = pl.Trainer(
        callbacks=[resumed], max_epochs=4, limit_train_batches=2, num_sanity_val_steps=0, **settings
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Scripted(values), ckpt_path=tmp_path / "all" / "epoch=0.ckpt")
    missing = [w for w in caught if "found no metric 'val_loss'" in str(w.message)]
    assert len(missing) == 1  # at epoch 2 (the check of epoch 1 was the first since resume)
    assert resumed.best_epoch == 3


# ------------------------------------------------------------------------------ distributed
def test_pickles_for_spawned_processes(trainer_kwargs):
    # ddp_spawn pickles the callbacks: the copy must work like the original
    early = pickle.loads(pickle.dumps(EarlyStopping("val_acc", mode="max", patience=1)))
    fit(trainer_kwargs, [1, 2, 2, 2], [early], Scripted([1, 2, 2, 2], metric="val_acc"))
    assert (early.best_epoch, early.stopped_epoch) == (1, 2)


def free_port() -> int:
    """A free TCP port below the ephemeral range (see ddp_main_port in test_workers.py)."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(max(1024, low - 12000), low))
    random.Random(os.getpid() ^ time.monotonic_ns()).shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class RankMetric(Scripted):
    """Rank 0 keeps improving, rank 1 never improves after its first value; each rank writes
    what it saw at the end of fit to <directory>/rank<k>.json."""

    def __init__(self, directory: str) -> None:
        super().__init__([5, 4, 3, 2, 1, 0])
        self.directory = directory

    def on_validation_epoch_end(self):
        if self.trainer.global_rank == 1:
            self.values = [5] * 6
        super().on_validation_epoch_end()

    def on_fit_end(self):
        early = self.trainer.early_stopping_callback
        report = {
            "epoch": self.trainer.current_epoch,
            "stopped_epoch": early.stopped_epoch,
            "best_epoch": early.best_epoch,
        }
        path = pathlib.Path(self.directory) / f"rank{self.trainer.global_rank}.json"
        path.write_text(json.dumps(report))


@pytest.mark.slow
@pytest.mark.timeout(180)  # before the fix, ranks that improved never joined the stop vote
@pytest.mark.filterwarnings("ignore:It is recommended to use `self.log")
def test_ddp_any_rank_that_stops_stops_all(trainer_kwargs, tmp_path, monkeypatch):
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    early = EarlyStopping("val_loss", patience=1)
    fit(
        {**trainer_kwargs, "devices": 2, "strategy": "ddp_spawn"},
        [0] * 6,
        [early],
        RankMetric(str(tmp_path)),
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # rank 1 stops at epoch 1 (patience 1); rank 0, still improving, stops with it
    assert ranks == [
        {"epoch": 2, "stopped_epoch": 1, "best_epoch": 1},
        {"epoch": 2, "stopped_epoch": 1, "best_epoch": 0},
    ]
