"""Crash recovery on every storage: SIGKILL a real `lightning-tune tune`, run it again."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState
from scripted_module import kill_in_the_middle_of_a_trial

from lightning_tune.tuner.recovery import (
    ADOPTED_ATTR,
    LEASE_ATTR,
    Recovery,
    lease,
    recover_stale_trials,
)
from lightning_tune.tuner.storage import heartbeat_settings, resolve_storage

pytest_plugins = ["postgres_fixture"]

TESTS = pathlib.Path(__file__).resolve().parent
CONFIG = """
study_name: crash
seed: 0
n_trials: 2
max_epochs: 2
keep_checkpoints: 0
loggers: []
plots: false
sampler: random
pruner: none
model: {class: TimmClassifier, kwargs: {model_name: test_resnet}}
data: {class: DigitsDataModule, kwargs: {image_size: 8, train_fraction: 0.2, batch_size: 32}}
callbacks: [{class: scripted_module.SlowSteps, kwargs: {seconds: 0.4, hold: HOLD}}]
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
trainer: {accelerator: cpu, devices: 1, limit_train_batches: 2, limit_val_batches: 1,
          num_sanity_val_steps: 0}
"""


def _tune_command(tmp_path: pathlib.Path, storage: str) -> list[str]:
    config = tmp_path / "sweep.yaml"
    config.write_text(CONFIG.replace("HOLD", repr(str(tmp_path / "hold"))))
    return [sys.executable, "-m", "lightning_tune.cli", "tune", "--config", str(config),
            "--storage", storage, "--output-dir", str(tmp_path / "runs"), "--quiet",
            "--heartbeat-interval", "1", "--grace-period", "2"]  # fmt: skip


def _env() -> dict[str, str]:
    paths = [str(TESTS.parent.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _trials(storage) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="crash", storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


def _kill_in_the_middle_of_a_trial(command: list[str], hold: pathlib.Path) -> None:
    hold.touch()  # the first trial waits in its first training step until the kill
    process = subprocess.Popen(
        command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    # a heartbeat (or lease renewal) is recorded while the trial waits
    kill_in_the_middle_of_a_trial(process, str(hold), seconds_after=1.5, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["sqlite-file", "journal", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_rerunning_the_same_command_after_sigkill_finishes_exactly_n_trials(
    request, tmp_path, kind
):
    spec = {
        "sqlite-file": str(tmp_path / "x.db"),
        "journal": str(tmp_path / "x.log"),
    }.get(kind) or request.getfixturevalue("postgres_url")
    watcher = resolve_storage(spec, tmp_path)
    command = _tune_command(tmp_path, spec)
    _kill_in_the_middle_of_a_trial(command, tmp_path / "hold")
    (killed,) = _trials(watcher)
    assert killed.state == TrialState.RUNNING

    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = _trials(watcher)
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in states
    assert trials[0].state == TrialState.FAIL  # the dead worker's trial ...
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.params == killed.params and retry.state == TrialState.COMPLETE  # ... retried


def _running_trial_without_heartbeat(storage) -> optuna.Study:
    """A trial as a worker killed right after ``ask()`` leaves it: RUNNING, never a heartbeat."""
    study = optuna.create_study(study_name="crash", storage=storage)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params={"lr": 0.01},
            distributions={"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)},
        )
    )
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("crash"), 0
    )
    assert storage.set_trial_state_values(trial_id, TrialState.RUNNING)
    return study


@pytest.mark.parametrize("kind", ["sqlite-file", "journal"])
def test_a_running_trial_without_heartbeat_is_judged_by_its_start_time(tmp_path, kind):
    spec = str(tmp_path / ("x.db" if kind == "sqlite-file" else "x.log"))
    storage = resolve_storage(spec, tmp_path, **heartbeat_settings(spec, 1, 2))
    recovery = Recovery.for_storage(storage, 1, 2)
    assert recovery is not None and recovery.mode == ("heartbeat" if "sqlite" in kind else "lease")

    study = _running_trial_without_heartbeat(storage)
    assert recover_stale_trials(study, storage, recovery) == []  # within the grace period
    assert study.trials[0].state == TrialState.RUNNING
    time.sleep(2.5)  # started longer ago than the grace period
    failed = recover_stale_trials(study, storage, recovery)
    if kind == "sqlite-file":
        # Optuna's heartbeat: adopted first (one heartbeat recorded for it), stale a grace later.
        assert failed == [] and study.trials[0].system_attrs[ADOPTED_ATTR]
        time.sleep(4.5)  # over twice the grace period: SQLite keeps heartbeat times in seconds
        failed = recover_stale_trials(study, storage, recovery)
    assert failed == [0]
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.WAITING and trials[1].params == {"lr": 0.01}
    assert trials[1].system_attrs["failed_trial"] == 0
    assert recover_stale_trials(study, storage, recovery) == []  # failed once, retried once


def test_a_live_trial_renews_its_lease_and_is_never_failed(tmp_path):
    spec = str(tmp_path / "x.log")
    storage = resolve_storage(spec, tmp_path)
    recovery = Recovery("lease", 1, 2)
    study = _running_trial_without_heartbeat(storage)
    with lease(study, storage, 0, interval=1):
        for _ in range(4):
            time.sleep(1)
            assert recover_stale_trials(study, storage, recovery) == []
    assert study.trials[0].state == TrialState.RUNNING
    assert time.time() - study.trials[0].system_attrs[LEASE_ATTR] < 1.5


def test_recovery_can_be_turned_off_and_needs_nothing_in_memory(tmp_path):
    assert heartbeat_settings(str(tmp_path / "x.db"), None) == {}
    assert Recovery.for_storage(resolve_storage(str(tmp_path / "x.db"), tmp_path), 10) is None
    assert Recovery.for_storage(resolve_storage(str(tmp_path / "x.log"), tmp_path), None) is None
    assert Recovery.for_storage(optuna.storages.InMemoryStorage(), 10) is None
    storage = resolve_storage(str(tmp_path / "y.db"), tmp_path, heartbeat_interval=3)
    assert Recovery.for_storage(storage, None) == Recovery("heartbeat", 3, None, 3)
