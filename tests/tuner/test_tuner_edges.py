"""One trial of the Tuner at its edges: what a completed, failed, pruned or diagnosis-pruned
trial records (durations, ``fail_reason`` cut at 4000 characters, ``error_log``), the lease of
a trial on a journal storage, each trial's quiet seeding with seeded dataloader workers, no
Lightning default logger with ``loggers=()``, checkpoints removed from stopped trials, and
trials where only one Lightning package is installed.

One sweep per Lightning package (a module-scoped fixture) runs a trial of each kind; the tests
read its study.
"""

from __future__ import annotations

import logging
import math
import os
import time
from types import ModuleType
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune.tuner.trials as trials
from lightning_tune import Tuner
from lightning_tune._lightning import NAMESPACES
from lightning_tune.tuner import Categorical
from lightning_tune.tuner.recovery import LEASE_ATTR

# What each trial of the sweep does (the suggest function picks by trial number). Validation
# runs every 2nd epoch, so "nan_at_once" is stopped by diagnostics before any checkpoint exists
# and "nan_after_checkpoint" (NaN loss from epoch 2) after its first validation saved one.
MODES = ["complete", "raise", "prune", "nan_after_checkpoint", "nan_at_once"]
LONG_MESSAGE = "bad\n value " * 500  # 6000 characters, whitespace collapsed in fail_reason
pytestmark = pytest.mark.filterwarnings("ignore:TrainingDiagnostics:UserWarning")
SEED_LOGGERS = ("lightning_fabric.utilities.seed", "lightning.fabric.utilities.seed")


class _Probe:
    """A 2->1 linear model; ``mode`` says how its trial ends (see ``MODES``)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.mode == "raise":
            raise RuntimeError(LONG_MESSAGE)
        loss = self.layer(batch[0]).pow(2).mean()
        nan = self.mode == "nan_at_once" or (
            self.mode == "nan_after_checkpoint" and self.current_epoch >= 2
        )
        return loss * math.nan if nan else loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        value = 10.0 if self.mode == "prune" else 1.0 / (1 + self.current_epoch)
        self.log("val_loss", torch.tensor(value))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def _loader(self) -> DataLoader:
        x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x), batch_size=4)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()


def _recorder_class(pl: ModuleType) -> type:
    class Recorder(pl.Callback):
        """What each trial's Trainer saw at the start of training."""

        seen: list[dict[str, Any]] = []

        def on_train_start(self, trainer, pl_module) -> None:
            Recorder.seen.append(
                {
                    "loggers": list(trainer.loggers),
                    "seed": os.environ.get("PL_GLOBAL_SEED"),
                    "seed_workers": os.environ.get("PL_SEED_WORKERS"),
                    "worker_init_fn": trainer.train_dataloader.worker_init_fn,
                }
            )

    return Recorder


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module", params=NAMESPACES, ids=lambda ns: ns.__name__)
def sweep(request, tmp_path_factory):
    """One sweep of ``len(MODES)`` trials on a journal file, its Trainer's package ``pl``."""
    pl = request.param
    module_class = type("Probe", (_Probe, pl.LightningModule), {})
    recorder = _recorder_class(pl)
    recorder.seen = []
    root = tmp_path_factory.mktemp("edges")
    tuner = Tuner(
        lambda p: module_class(p["mode"]),
        lambda trial: {"mode": MODES[trial.number]},
        callbacks=[lambda p: recorder()],
        storage=str(root / "journal.log"),
        heartbeat_interval=60,
        output_dir=root,
        pruner=optuna.pruners.ThresholdPruner(upper=5.0),
        sampler="random",
        seed=7,
        max_epochs=4,
        keep_checkpoints=1,
        loggers=(),
        diagnostics={"checks": ["nonfinite"], "every_n_steps": 1},
        trainer_kwargs={
            "accelerator": "cpu",
            "num_sanity_val_steps": 0,
            "check_val_every_n_epoch": 2,
            "enable_model_summary": False,
        },
        max_consecutive_failures=None,
        quiet=True,
    )
    # A user who turned the seed messages on still gets no line per trial from the tuner.
    records = _Records()
    levels = {}
    for name in SEED_LOGGERS:
        levels[name] = logging.getLogger(name).level
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).addHandler(records)
    start = time.perf_counter()
    try:
        study = tuner.optimize(n_trials=len(MODES))
    finally:
        wall = time.perf_counter() - start
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).removeHandler(records)
    return {
        "pl": pl,
        "tuner": tuner,
        "trials": {MODES[t.number]: t for t in study.trials},
        "wall": wall,
        "seen": recorder.seen,
        "seed_messages": records.messages,
    }


def _trial(sweep: dict[str, Any], mode: str) -> FrozenTrial:
    return sweep["trials"][mode]


def test_each_trial_ends_as_its_mode_says(sweep):
    states = {mode: t.state for mode, t in sweep["trials"].items()}
    assert states == {
        "complete": TrialState.COMPLETE,
        "raise": TrialState.FAIL,
        "prune": TrialState.PRUNED,
        "nan_after_checkpoint": TrialState.PRUNED,
        "nan_at_once": TrialState.PRUNED,
    }
    reason = _trial(sweep, "prune").user_attrs["prune_reason"]
    assert reason == "pruned at validation step 0 (epoch 1) with val_loss=10"
    for mode in ("nan_after_checkpoint", "nan_at_once"):
        reason = _trial(sweep, mode).user_attrs["prune_reason"]
        assert reason.startswith("diagnostics: error nonfinite"), reason


def test_a_completed_trial_records_plausible_durations(sweep):
    # seconds since the trial (or its fit) started: positive, below the sweep's own wall time
    complete = _trial(sweep, "complete").user_attrs
    assert 0 < complete["fit_seconds"] <= complete["trial_seconds"] < sweep["wall"]


def test_a_pruned_trial_records_plausible_durations(sweep):
    pruned = _trial(sweep, "prune").user_attrs
    assert 0 < pruned["fit_seconds"] <= pruned["trial_seconds"] < sweep["wall"]


def test_a_trial_stopped_by_diagnostics_records_plausible_durations(sweep):
    for mode in ("nan_after_checkpoint", "nan_at_once"):
        stopped = _trial(sweep, mode).user_attrs
        assert 0 < stopped["fit_seconds"] <= stopped["trial_seconds"] < sweep["wall"], mode


def test_a_long_error_is_cut_to_4000_characters_and_its_traceback_logged(sweep):
    failed = _trial(sweep, "raise").user_attrs
    expected = "RuntimeError: " + " ".join(LONG_MESSAGE.split())
    assert len(expected) > 4000
    assert failed["fail_reason"] == expected[:4000]
    log = sweep["tuner"].trial_dir(_trial(sweep, "raise").number) / "error.log"
    assert failed["error_log"] == str(log)
    assert "RuntimeError: bad" in log.read_text()


def test_stopped_trials_keep_no_checkpoint_and_the_best_keeps_its_own(sweep):
    tuner = sweep["tuner"]
    kept = _trial(sweep, "complete")
    assert os.path.exists(kept.user_attrs["checkpoint"])
    for mode in ("prune", "nan_after_checkpoint", "nan_at_once"):
        trial = _trial(sweep, mode)
        assert "checkpoint" not in trial.user_attrs
        assert not (tuner.trial_dir(trial.number) / "checkpoints").exists(), mode
    # the diagnosis stopped this one after a validation had saved its checkpoint
    assert _trial(sweep, "nan_after_checkpoint").user_attrs["validations"] >= 1


def test_a_trial_on_a_journal_storage_holds_a_lease(sweep):
    for trial in sweep["trials"].values():
        assert trial.system_attrs[LEASE_ATTR] > 0, trial.number


def test_each_trial_is_seeded_with_its_number_and_seeded_dataloader_workers(sweep):
    seen = sweep["seen"]
    assert [s["seed"] for s in seen] == [str(7 + n) for n in range(len(MODES))]
    for entry in seen:  # seed_everything(workers=True): Lightning seeds each loader worker
        assert entry["seed_workers"] == "1"
        assert entry["worker_init_fn"] is not None


def test_the_seeding_logs_nothing_even_with_the_seed_logger_on(sweep):
    assert len(sweep["seen"]) == len(MODES)
    assert sweep["seed_messages"] == []


def test_no_loggers_means_no_lightning_default_logger(sweep):
    assert [s["loggers"] for s in sweep["seen"]] == [[]] * len(MODES)
    assert not list(sweep["tuner"].study_dir.glob("trials/*/lightning_logs"))


def test_trials_run_with_only_one_lightning_package_installed(tmp_path, monkeypatch, lightning_ns):
    # What trials.py sees where only ``pl`` is installed: one namespace, seeding from it.
    pl = lightning_ns
    monkeypatch.setattr(trials, "NAMESPACES", (pl,))
    module_class = type("Probe", (_Probe, pl.LightningModule), {})
    tuner = Tuner(
        lambda p: module_class(p["mode"]),
        {"mode": Categorical(["complete"])},
        storage="memory",
        output_dir=tmp_path,
        pruner="none",
        sampler="random",
        max_epochs=1,
        keep_checkpoints=0,
        loggers=(),
        trainer_kwargs={"accelerator": "cpu", "num_sanity_val_steps": 0},
        quiet=True,
    )
    (trial,) = tuner.optimize(n_trials=1).trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["lightning"] == pl.__name__
