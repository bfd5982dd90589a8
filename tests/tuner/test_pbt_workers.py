"""PBT with several worker processes and killed workers: real SQLite, journal and PostgreSQL."""

from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState
from scripted_module import SlowSteps

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.tuner import Tuner
from lightning_tune.tuner.storage import resolve_storage
from lightning_tune.tuner.workers import run_worker, run_workers

# postgres_server_url / postgres_url: a real server (tests/postgres_fixture.py).
pytest_plugins = ["postgres_fixture"]

SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    "weight_decay": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}


def _tuner(tmp_path, storage, pbt, callbacks=None, max_epochs=2, **kwargs) -> Tuner:
    return Tuner(
        TimmClassifier,
        SPACE,
        module_kwargs={"model_name": "test_resnet"},
        datamodule=DigitsDataModule,
        datamodule_kwargs={"image_size": 8, "train_fraction": 0.2, "batch_size": 32},
        callbacks=callbacks,
        strategy="pbt",
        pbt=pbt,
        max_epochs=max_epochs,
        storage=storage,
        study_name="pbt-workers",
        output_dir=tmp_path,
        loggers=(),
        quiet=True,
        trainer_kwargs={"accelerator": "cpu", "devices": 1, "limit_train_batches": 2,
                        "limit_val_batches": 1, "num_sanity_val_steps": 0},
        **kwargs,
    )  # fmt: skip


def _assert_population(study: optuna.Study, population: int, rounds: int) -> None:
    """Every (member, round) COMPLETE exactly once; anything else never trained."""
    complete: dict[tuple[int, int], int] = {}
    for trial in study.get_trials(deepcopy=False):
        info = trial.user_attrs["pbt"]
        key = (info["member"], info["round"])
        if trial.state == TrialState.COMPLETE:
            assert key not in complete, f"segment {key} trained twice"
            complete[key] = trial.number
            assert pathlib.Path(trial.user_attrs["checkpoint"]).exists()
        else:
            assert trial.state == TrialState.FAIL, trial
            assert "duplicate" in trial.user_attrs["fail_reason"], trial.user_attrs
    assert sorted(complete) == [(m, r) for m in range(population) for r in range(rounds)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("storage", "mode", "population"),
    [
        ("default", "async", 3),
        ("journal", "sync", 2),
        pytest.param("postgres", "sync", 2, marks=pytest.mark.postgres),
    ],
)
def test_two_worker_processes_finish_a_population_without_duplicates(
    request, tmp_path, storage, mode, population
):
    spec = {
        "default": None,
        "journal": f"journal:{tmp_path / 'study.log'}",
    }.get(storage) or (request.getfixturevalue("postgres_url") if storage == "postgres" else None)
    pbt = {"population": population, "interval": 1, "mode": mode}
    tuner = _tuner(tmp_path, spec, pbt)
    heartbeat = {"heartbeat_interval": None} if storage == "journal" else {}
    study = run_workers(tuner, 2 * population, n_workers=2, **heartbeat)
    _assert_population(study, population=population, rounds=2)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    exploited = [t for t in complete if t.user_attrs["pbt"]["donor"] is not None]
    if mode == "sync":  # the worse of two members always copies the better one
        assert len(exploited) == 1
        # Two workers that finish a round together both plan the next one: the later copy of a
        # segment is FAIL "duplicate" (checked above), with the same plan as the trained one.
        for copy in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            (trained,) = [t for t in complete if t.user_attrs["pbt"] == copy.user_attrs["pbt"]]
            assert trained.params == copy.params
    result = _tuner(tmp_path, spec, pbt).result(plots=False)
    final = result.report_files["pbt_final"].read_text()
    assert final.count("\n") == 1 + population  # header + one line per member


def test_a_segment_planned_twice_is_trained_once_and_its_copy_fails_as_a_duplicate(tmp_path):
    # What two workers that plan at the same moment leave in the study, made deterministic:
    # every round-0 segment is enqueued twice before anything runs.
    from lightning_tune.tuner.pbt.worker import run_pbt, seed_population

    tuner = _tuner(tmp_path, f"journal:{tmp_path / 'study.log'}", {"population": 2, "mode": "sync"})
    study = tuner.create_study()
    seed_population(tuner, study)
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study.enqueue_trial(waiting.params, user_attrs=waiting.user_attrs)
    assert run_pbt(tuner, poll_interval=0.1) == 6  # 4 segments trained, 2 copies refused
    _assert_population(study, population=2, rounds=2)
    copies = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert [t.number for t in copies] == [2, 3]
    assert [t.user_attrs["fail_reason"] for t in copies] == [
        f"duplicate: segment {m}/0 is already trial {m} (COMPLETE); nothing was trained"
        for m in (0, 1)
    ]
    assert all(t.intermediate_values == {} for t in copies)


def test_a_killed_workers_member_resumes_from_its_last_epoch_and_the_population_completes(
    tmp_path,
):
    heartbeat = {"heartbeat_interval": 1, "grace_period": 3}
    pbt = {"population": 2, "interval": 2}
    # The worker holds in the first step of its first segment's second epoch (after the first
    # epoch was checkpointed) until it is killed there.
    hold = tmp_path / "hold"
    hold.touch()
    slow = SlowSteps(0.4, hold=str(hold), hold_epoch=1)
    tuner = _tuner(tmp_path, None, pbt, callbacks=[slow], max_epochs=4)
    watcher = resolve_storage(None, tuner.study_dir)
    sweep = threading.Thread(target=run_workers, args=(tuner, 4, 1), kwargs=heartbeat)
    sweep.start()
    last = tuner.study_dir.resolve() / "pbt" / "member_00" / "round_000" / "last.ckpt"
    reached = tmp_path / "hold.reached"
    deadline = time.monotonic() + 600  # worker start-up alone takes minutes on a loaded machine
    while not reached.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reached.exists() and last.exists()
    (worker,) = multiprocessing.active_children()
    os.kill(worker.pid, signal.SIGKILL)
    hold.unlink()
    sweep.join(timeout=60)
    study = optuna.load_study(study_name="pbt-workers", storage=watcher)
    (killed,) = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert killed.user_attrs["pbt"]["member"] == 0

    time.sleep(4)  # the heartbeat is now older than the grace period
    survivor = _tuner(tmp_path, resolve_storage(None, tuner.study_dir, **heartbeat), pbt,
                      max_epochs=4)  # fmt: skip
    run_worker(survivor, n_trials=4)
    trials = study.get_trials(deepcopy=False)
    assert trials[killed.number].state == TrialState.FAIL
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retried.state == TrialState.COMPLETE
    assert retried.user_attrs["resumed_from"] == str(last)  # not from scratch: from epoch 1
    assert retried.user_attrs["pbt"]["epochs"] == [0, 2]
    assert sorted(retried.intermediate_values) == [1]  # only the second epoch was trained again
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted((t.user_attrs["pbt"]["member"], t.user_attrs["pbt"]["round"]) for t in complete) == [
        (0, 0), (0, 1), (1, 0), (1, 1)]  # fmt: skip


@pytest.mark.slow
def test_the_bundled_pbt_config_runs_from_the_command_line(tmp_path):
    from lightning_tune.tuner.config import bundled_config, load_config, tuner_from_config

    cfg = load_config(bundled_config("digits_pbt"))
    tuner = tuner_from_config(cfg, storage="memory")
    assert tuner.strategy == "pbt" and tuner.pbt_plan.config.population == 4
    assert tuner.pbt_plan.mutable == ("lr", "weight_decay", "label_smoothing")
    small = tmp_path / "pbt.yaml"
    text = bundled_config("digits_pbt").read_text()
    text = text.replace("population: 4", "population: 2").replace("max_epochs: 8", "max_epochs: 2")
    text = text.replace("interval: 2 ", "interval: 1 ").replace("image_size: 16", "image_size: 8")
    small.write_text(text + "  limit_train_batches: 2\n  limit_val_batches: 1\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lightning_tune.cli", "tune", "--config", str(small),
               "--output-dir", str(tmp_path), "--quiet"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])["tune"]
    assert summary["states"] == {"COMPLETE": 4}
    report = tmp_path / "digits_pbt" / "report"
    assert (report / "pbt_lineage.png").exists() and (report / "pbt_schedule.png").exists()
    # Running the same command again: the population is complete, nothing more is trained.
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert json.loads(again.stdout.strip().splitlines()[-1])["tune"]["states"] == {"COMPLETE": 4}
