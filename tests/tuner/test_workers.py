"""Worker processes on one study: real Tuner, real timm model, real SQLite/PostgreSQL storages."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import pathlib
import random
import signal
import socket
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState
from scripted_module import DIGITS_NETS, SlowSteps

import lightning_tune._lightning as dual
from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.tuner import Tuner
from lightning_tune.tuner.distributed import DistributedOptunaPruning
from lightning_tune.tuner.loop import FINISHED, run_worker
from lightning_tune.tuner.storage import resolve_storage
from lightning_tune.tuner.worker_cli import add_worker_subcommand
from lightning_tune.tuner.workers import run_workers, worker_threads

# postgres_server_url / postgres_url: a real server (tests/postgres_fixture.py).
pytest_plugins = ["postgres_fixture"]

SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    "weight_decay": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}

WORKER_CONFIG = """
study_name: from-config
seed: 0
n_trials: 2
max_epochs: 2
keep_checkpoints: 0
loggers: []
plots: false
sampler: random
pruner: {name: median, kwargs: {n_startup_trials: 2}}
model: {class: TimmClassifier, kwargs: {model_name: test_resnet}}
data: {class: DigitsDataModule, kwargs: {image_size: 8, train_fraction: 0.2, batch_size: 32}}
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
  weight_decay: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
trainer: {accelerator: cpu, devices: 1, limit_train_batches: 2, limit_val_batches: 1,
          num_sanity_val_steps: 0}
"""


class RankReport(dual.Callback):
    """Writes what each DDP rank saw of the pruning decision to <directory>/rank<k>.json."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_fit_end(self, trainer, pl_module) -> None:
        (pruning,) = [c for c in trainer.callbacks if isinstance(c, DistributedOptunaPruning)]
        report = {
            "world_size": trainer.world_size,
            "status": pruning.status,
            "reports": pruning.reports_here,
            "validations": pruning.validations,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
        }
        path = pathlib.Path(self.directory) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(report))


class Exploding(TimmClassifier):
    """Fails on its own (bad lr): the trial must be FAIL with the message, the sweep go on."""

    def training_step(self, batch, batch_idx):
        if self.hparams.lr > 0.02:
            raise RuntimeError(f"lr {self.hparams.lr:.3g} is too large for this test")
        return super().training_step(batch, batch_idx)


def _tuner(
    tmp_path,
    storage,
    module=TimmClassifier,
    callbacks=None,
    trainer=None,
    module_kwargs=(("model_name", "test_resnet"),),
    **kwargs,
):
    options = {
        "pruner": "median",
        "pruner_kwargs": {"n_startup_trials": 2},
        "sampler": "random",
        "keep_checkpoints": 0,
        "loggers": (),
        "quiet": True,
        "max_epochs": 2,
        **kwargs,
    }
    return Tuner(
        module,
        SPACE,
        datamodule=DigitsDataModule,
        datamodule_kwargs={"image_size": 8, "train_fraction": 0.2, "batch_size": 32},
        module_kwargs=dict(module_kwargs),
        callbacks=callbacks,
        storage=storage,
        study_name="workers",
        output_dir=tmp_path,
        trainer_kwargs={"accelerator": "cpu", "devices": 1, "limit_train_batches": 2,
                        "limit_val_batches": 1, "num_sanity_val_steps": 0, **(trainer or {})},
        **options,
    )  # fmt: skip


def _assert_intact(study: optuna.Study, n_trials: int) -> None:
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n_trials
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # none twice or lost
    for trial in trials:
        if trial.state not in FINISHED:
            assert trial.user_attrs.get("surplus") and not trial.params, trial
            continue
        assert set(trial.params) == set(SPACE)
        assert trial.user_attrs["params"] == pytest.approx(trial.params)
        assert 1e-3 <= trial.params["lr"] <= 1e-1
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps))) and 1 <= len(steps) <= 2
        assert all(math.isfinite(v) for v in trial.intermediate_values.values())
        if trial.state == TrialState.COMPLETE:
            assert trial.value == pytest.approx(min(trial.intermediate_values.values()))


@pytest.mark.slow
@pytest.mark.parametrize(
    "storage", ["default", "journal", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_two_worker_processes_finish_exactly_n_trials(request, tmp_path, storage):
    if storage == "default":  # from the command line: a config, `tune --workers 2`
        from lightning_tune.cli import main

        config = tmp_path / "sweep.yaml"
        config.write_text(WORKER_CONFIG)
        argv = ["tune", "--config", str(config), "--workers", "2", "--n-trials", "5",
                "--output-dir", str(tmp_path), "--quiet"]  # fmt: skip
        assert main(argv) == 0
        storage = resolve_storage(None, tmp_path / "from-config")
        _assert_intact(optuna.load_study(study_name="from-config", storage=storage), 5)
        return
    # From Python, with a Tuner object (sent to the workers by pickling), on a journal file
    # (its lease recovery) or PostgreSQL.
    spec = (
        str(tmp_path / "sweep.log")
        if storage == "journal"
        else request.getfixturevalue("postgres_url")
    )
    study = run_workers(_tuner(tmp_path, spec), n_trials=5, n_workers=2, heartbeat_interval=2)
    _assert_intact(study, 5)
    # A second run with the same target has nothing left to do.
    assert run_worker(_tuner(tmp_path, spec), n_trials=5) == 0


@pytest.mark.slow
def test_two_workers_from_the_cli_with_a_users_module_of_each_package(tmp_path, lightning_ns):
    config = tmp_path / "sweep.yaml"
    module = DIGITS_NETS[lightning_ns.__name__].__name__
    text = WORKER_CONFIG.replace(
        "model: {class: TimmClassifier, kwargs: {model_name: test_resnet}}",
        f"model: {{class: scripted_module.{module}}}",
    )
    config.write_text(text)
    argv = ["tune", "--config", str(config), "--workers", "2", "--n-trials", "3",
            "--output-dir", str(tmp_path), "--quiet"]  # fmt: skip
    from lightning_tune.cli import main

    assert main(argv) == 0
    storage = resolve_storage(None, tmp_path / "from-config")
    study = optuna.load_study(study_name="from-config", storage=storage)
    _assert_intact(study, 3)
    finished = [t for t in study.trials if t.state in FINISHED]
    assert {t.user_attrs["lightning"] for t in finished} == {lightning_ns.__name__}


def test_a_trial_that_raises_is_failed_with_its_message_and_the_sweep_goes_on(tmp_path):
    tuner = _tuner(tmp_path, "memory", module=Exploding)
    tuner.create_study().enqueue_trial({"lr": 0.05, "weight_decay": 1e-3})
    ran = run_worker(tuner, n_trials=4)
    trials = tuner.study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed[0].number == 0
    assert ran == len(trials)
    assert len([t for t in trials if t.state in FINISHED]) == 4
    for trial in failed:
        assert trial.params["lr"] > 0.02
        assert trial.user_attrs["fail_reason"].startswith("RuntimeError: lr ")


@pytest.mark.slow
def test_a_killed_worker_is_detected_by_heartbeat_and_its_trial_retried(tmp_path):
    spec = None  # the default parallel storage: SQLite + heartbeat (PostgreSQL: test_storage.py)
    heartbeat = {"heartbeat_interval": 1, "grace_period": 3}
    # Kill the worker in the middle of its first trial: running, one validation reported (it
    # holds in the first step of its second epoch until the kill).
    hold = tmp_path / "hold"
    hold.touch()
    slow = SlowSteps(0.5, hold=str(hold), hold_epoch=1)
    tuner = _tuner(tmp_path, spec, callbacks=[slow], max_epochs=3)
    watcher_storage = resolve_storage(spec, tuner.study_dir)
    sweep = threading.Thread(target=run_workers, args=(tuner, 2, 1), kwargs=heartbeat)
    sweep.start()
    reached = tmp_path / "hold.reached"
    assert _wait_for(reached.exists, timeout=480)  # a loaded machine
    assert any(t.state == TrialState.RUNNING and t.intermediate_values
               for t in _trials(watcher_storage))  # fmt: skip
    (worker,) = multiprocessing.active_children()
    os.kill(worker.pid, signal.SIGKILL)
    hold.unlink()
    sweep.join(timeout=480)
    assert not sweep.is_alive()
    (killed,) = _trials(watcher_storage)
    assert killed.state == TrialState.RUNNING  # nobody has noticed yet

    time.sleep(4)  # the heartbeat is now older than the grace period
    # Running the sweep again: the dead trial is failed and retried first, the study completes.
    # the same sweep settings (the study refuses a changed one), without the slow steps
    survivor = _tuner(tmp_path, resolve_storage(spec, tuner.study_dir, **heartbeat), max_epochs=3)
    run_worker(survivor, n_trials=2)
    trials = _trials(watcher_storage)
    assert trials[0].state == TrialState.FAIL
    assert trials[1].params == killed.params
    assert trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].state in FINISHED
    assert len([t for t in trials if t.state in FINISHED]) == 2


def _trials(storage) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="workers", storage=storage).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def _wait_for(condition, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _port_outside_ephemeral_range() -> int:
    """A free TCP port below the kernel's ephemeral range (where ``bind(0)`` and outgoing
    connections take theirs).

    Lightning picks the DDP rendezvous port by binding port 0 and closing the socket; rank 0
    binds it again only once the spawned processes have imported torch, seconds later. On a
    busy machine another process can get that same ephemeral port in between, and rank 0 then
    fails with EADDRINUSE. No automatic allocation ever hands out a port below the range.
    """
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
    raise RuntimeError(f"no free port in [{candidates[0]}, {low})")


@pytest.fixture
def ddp_main_port(monkeypatch):
    """MASTER_PORT for a DDP test, restored afterwards (Lightning leaves it set otherwise)."""
    port = _port_outside_ephemeral_range()
    monkeypatch.setenv("MASTER_PORT", str(port))
    return port


@pytest.mark.slow
def test_a_ddp_trial_is_pruned_once_and_stops_on_both_ranks(tmp_path, ddp_main_port, lightning_ns):
    tuner = _tuner(
        tmp_path,
        None,
        module=DIGITS_NETS[lightning_ns.__name__],  # a user's module of each package
        module_kwargs=(),
        callbacks=[RankReport(str(tmp_path))],
        trainer={"devices": 2, "strategy": "ddp_spawn"},
        pruner=optuna.pruners.ThresholdPruner(upper=0.0),  # any loss > 0: prune at once
        pruner_kwargs=None,
        max_epochs=4,
    )
    # A failed trial stops the worker with its reason (instead of a second trial being run).
    run_worker(tuner, n_trials=1, max_consecutive_failures=1)
    trials = tuner.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.PRUNED], [t.user_attrs for t in trials]
    (trial,) = trials
    assert trial.user_attrs["lightning"] == lightning_ns.__name__
    assert list(trial.intermediate_values) == [0]  # one report, at the first validation
    assert trial.user_attrs["validations"] == 1
    assert trial.user_attrs["prune_reason"].startswith("pruned at validation step 0")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["status"] for r in ranks] == ["pruned", "pruned"]
    assert [r["reports"] for r in ranks] == [1, 0]  # only rank 0 talks to the study
    assert ranks[0]["validations"] == ranks[1]["validations"] == 1
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 2  # stopped together


def test_bad_arguments(tmp_path):
    tuner = _tuner(tmp_path, None)
    with pytest.raises(ValueError, match=r"`n_workers` must be an int >= 1, but got n_workers=0"):
        run_workers(tuner, n_trials=2, n_workers=0)
    with pytest.raises(ValueError, match=r"`n_trials` must be an int >= 1"):
        run_workers(tuner, n_trials=-1)
    with pytest.raises(ValueError, match=r"in-memory and cannot be shared between processes"):
        run_workers(_tuner(tmp_path, "memory"), n_trials=2)
    with pytest.raises(TypeError, match=r"give `storage` as a URL or a path"):
        run_workers(_tuner(tmp_path, optuna.storages.InMemoryStorage()), n_trials=2)
    assert worker_threads(2, cpus=2) == 1
    import argparse

    parser = argparse.ArgumentParser()
    add_worker_subcommand(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["worker", "--study", "s", "--config", "c.yaml"])  # no --storage


@pytest.mark.postgres
def test_worker_command_joins_a_study_and_never_prints_the_password(tmp_path, postgres_url, capsys):
    from sqlalchemy.engine import make_url

    from lightning_tune.cli import main

    config = tmp_path / "sweep.yaml"
    config.write_text(WORKER_CONFIG)
    password = make_url(postgres_url).password
    argv = ["worker", "--storage", postgres_url, "--study", "shared", "--config", str(config),
            "--output-dir", str(tmp_path / "runs"), "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert password not in out + err
    summary = json.loads(out.strip().splitlines()[-1])["worker"]
    assert summary["finished"] == summary["n_trials"] == summary["ran"] == 2
    assert "***" in summary["storage"]
    # A second worker joining the complete study has nothing to do.
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["worker"]["ran"] == 0


def test_distributed_pruning_resumes_from_a_checkpoint_like_the_uninterrupted_run(
    trainer_kwargs, tmp_path, lightning_ns
):
    from scripted_module import SCRIPTED

    pl = lightning_ns
    ScriptedModule = SCRIPTED[pl.__name__]

    values = [3.0, 2.0, 1.5, 1.2, 1.1, 1.0]
    study = optuna.create_study()
    full_trial, stopped_trial = study.ask(), study.ask()
    full = DistributedOptunaPruning(full_trial)
    pl.Trainer(max_epochs=6, callbacks=[full], **trainer_kwargs).fit(ScriptedModule(values))

    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0
    )
    first = DistributedOptunaPruning(stopped_trial)
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    pl.Trainer(max_epochs=3, callbacks=[first, checkpoint], **kwargs).fit(ScriptedModule(values))
    resumed = DistributedOptunaPruning(stopped_trial)
    pl.Trainer(max_epochs=6, callbacks=[resumed], **trainer_kwargs).fit(
        ScriptedModule(values), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
    )
    resumed.sync_from_storage()  # trained in this process: changes nothing

    assert resumed.state_dict() == full.state_dict()
    assert (full.reports_here, first.reports_here, resumed.reports_here) == (6, 3, 3)
    study.tell(full_trial, full.values[-1])
    study.tell(stopped_trial, resumed.values[-1])
    assert study.trials[0].intermediate_values == study.trials[1].intermediate_values
    assert list(study.trials[1].intermediate_values) == list(range(6))
