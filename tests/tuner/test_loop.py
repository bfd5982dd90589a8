"""The tuner and the scale-out agree: n_trials as "finished trials" on the command line, crash
recovery by default, failures recorded, public Tuner API for the workers, clean CLI errors."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState
from scripted_module import kill_in_the_middle_of_a_trial

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.cli import main
from lightning_tune.tuner import Tuner
from lightning_tune.tuner.storage import heartbeat_enabled, resolve_storage
from lightning_tune.tuner.workers import FINISHED

HERE = pathlib.Path(__file__).parent
SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}

CONFIG = """
study_name: sweep
seed: 0
max_epochs: 1
keep_checkpoints: 0
loggers: []
plots: false
quiet: true
sampler: random
pruner: none
model: {class: TimmClassifier, kwargs: {model_name: test_resnet}}
data: {class: DigitsDataModule, kwargs: {image_size: 8, train_fraction: 0.1, batch_size: 32}}
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
trainer: {accelerator: cpu, devices: 1, limit_train_batches: 2, limit_val_batches: 1,
          num_sanity_val_steps: 0}
"""

# Seconds a started process gets to reach a state: only waited in full when it never does.
STARTUP_DEADLINE_S = 480


class Exploding(TimmClassifier):
    """Fails on its own for a large lr: the trial must be FAIL with the message."""

    def training_step(self, batch, batch_idx):
        if self.hparams.lr > 0.02:
            raise RuntimeError(f"lr {self.hparams.lr:.3g} is too large for this test")
        return super().training_step(batch, batch_idx)


def _config(tmp_path, extra: str = "") -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(CONFIG + extra)
    return str(path)


def _tuner(tmp_path, module=TimmClassifier, storage="memory", **kwargs) -> Tuner:
    options = {
        "pruner": "none",
        "sampler": "random",
        "keep_checkpoints": 0,
        "loggers": (),
        "quiet": True,
        "max_epochs": 1,
        **kwargs,
    }
    return Tuner(
        module,
        SPACE,
        datamodule=DigitsDataModule,
        datamodule_kwargs={"image_size": 8, "train_fraction": 0.1, "batch_size": 32},
        module_kwargs={"model_name": "test_resnet"},
        storage=storage,
        study_name="s",
        output_dir=tmp_path,
        trainer_kwargs={
            "accelerator": "cpu",
            "devices": 1,
            "limit_train_batches": 1,
            "limit_val_batches": 1,
            "num_sanity_val_steps": 0,
        },
        **options,
    )


def _states(tmp_path, study="sweep") -> list[optuna.trial.FrozenTrial]:
    storage = resolve_storage(None, tmp_path / study)
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def test_tune_n_trials_is_the_number_of_finished_trials_of_the_study(tmp_path):
    argv = ["tune", "--config", _config(tmp_path), "--output-dir", str(tmp_path)]
    assert main([*argv, "--n-trials", "2"]) == 0
    assert main([*argv, "--n-trials", "2"]) == 0  # a finished sweep: nothing more to do
    assert len(_states(tmp_path)) == 2
    assert main([*argv, "--n-trials", "3"]) == 0  # a larger target: one more
    trials = _states(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3


def test_run_total_versus_optimize_more(tmp_path):
    tuner = _tuner(tmp_path)
    tuner.optimize(n_trials=1)
    tuner.optimize(n_trials=1)  # Optuna's meaning: one more
    assert len(tuner.study.trials) == 2
    tuner.run(2, total=True, plots=False)  # already has 2 finished trials
    assert len(tuner.study.trials) == 2
    result = tuner.run(3, total=True, plots=False)
    assert len(result.study.trials) == 3


def test_the_default_storage_has_a_heartbeat_and_the_tuner_a_public_storage_api(tmp_path):
    tuner = _tuner(tmp_path, storage=None, heartbeat_interval=2, grace_period=5)
    assert tuner.storage_source is None
    storage = tuner.open_storage()
    assert heartbeat_enabled(storage) and storage is tuner.open_storage()
    assert not heartbeat_enabled(
        _tuner(tmp_path / "off", storage=None, heartbeat_interval=None).open_storage()
    )
    clone = tuner.with_storage(None)
    assert clone.storage_source is None and clone.study is None
    with tuner.quiet_libraries():
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    study = tuner.create_study()
    tuner.prune_checkpoints(
        study, optuna.trial.create_trial(params={}, distributions={}, value=1.0)
    )  # a public study callback
    with pytest.raises(ValueError, match="`grace_period` must be > `heartbeat_interval`"):
        _tuner(tmp_path, storage=None, heartbeat_interval=5, grace_period=5)


def test_workers_use_no_private_tuner_attributes():
    source = (HERE.parents[1] / "lightning_tune" / "tuner" / "workers.py").read_text()
    assert re.findall(r"\b(?:tuner|source|clone|parent)\._\w+", source) == []


def test_run_workers_and_distributed_pruning_are_exported():
    from lightning_tune import tuner as package

    assert {"run_workers", "run_worker", "DistributedOptunaPruning"} <= set(package.__all__)
    assert package.run_workers.__module__ == "lightning_tune.tuner.workers"


@pytest.mark.parametrize("how", ["optimize", "run"])
def test_a_trial_that_raises_is_failed_with_its_message_and_the_sweep_goes_on(tmp_path, how):
    tuner = _tuner(tmp_path, module=Exploding)
    tuner.create_study().enqueue_trial({"lr": 0.05})
    if how == "optimize":
        study = tuner.optimize(n_trials=2)
    else:
        study = tuner.run(2, plots=False).study
    first, second = study.trials
    assert first.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"] == "RuntimeError: lr 0.05 is too large for this test"
    assert second.state == TrialState.COMPLETE or second.params["lr"] > 0.02


@pytest.mark.parametrize("command", ["tune", "worker"])
def test_an_unreachable_database_is_a_one_line_error_without_the_password(
    tmp_path, capsys, command
):
    url = "postgresql://me:hunter2@127.0.0.1:1/optuna"
    argv = [
        command,
        "--config",
        _config(tmp_path),
        "--storage",
        url,
        "--n-trials",
        "1",
        "--output-dir",
        str(tmp_path),
    ]
    if command == "worker":
        argv += ["--study", "s"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lightning-tune {command}: error: ") and err.count("\n") == 1
    assert "hunter2" not in err and "me:***@127.0.0.1:1" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_tune_killed_mid_trial_then_rerun_retries_the_trial_and_finishes(tmp_path):
    hold = tmp_path / "hold"  # the first trial waits in its first step while this exists
    hold.touch()
    config = _config(
        tmp_path,
        "callbacks: [{class: scripted_module.SlowSteps, kwargs: {seconds: 0.4, "
        f"hold: {str(hold)!r}}}}}]\n",
    )
    cmd = [
        sys.executable,
        "-m",
        "lightning_tune.cli",
        "tune",
        "--config",
        config,
        "--n-trials",
        "3",
        "--output-dir",
        str(tmp_path),
        "--heartbeat-interval",
        "1",
        "--grace-period",
        "2",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(HERE), str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Generous: on a loaded shared machine, importing torch alone can take a minute.
    kill_in_the_middle_of_a_trial(proc, str(hold), timeout=STARTUP_DEADLINE_S)
    (killed,) = _states(tmp_path)
    assert killed.state == TrialState.RUNNING  # left behind by the killed run

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=STARTUP_DEADLINE_S)
    assert rerun.returncode == 0, rerun.stderr
    trials = _states(tmp_path)
    assert trials[0].state == TrialState.FAIL
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retried.params == killed.params and retried.state in FINISHED
    assert len([t for t in trials if t.state in FINISHED]) == 3


def test_a_sweep_whose_trials_keep_failing_stops_instead_of_looping(tmp_path):
    from lightning_tune.tuner import run_worker
    from lightning_tune.tuner.workers import TooManyFailuresError

    tuner = _tuner(tmp_path, module=Exploding)
    study = tuner.create_study()
    for _ in range(2):
        study.enqueue_trial({"lr": 0.05})
    with pytest.raises(
        TooManyFailuresError,
        match=r"2 trials in a row failed with RuntimeError .*"
        r"RuntimeError: lr 0.05 is too large",
    ):
        run_worker(tuner, n_trials=3, max_consecutive_failures=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2


def test_a_metric_that_is_never_logged_stops_the_total_run(tmp_path):
    from lightning_tune.tuner import MetricNotFoundError

    tuner = _tuner(tmp_path, monitor="val_nope")
    with pytest.raises(MetricNotFoundError, match="val_nope"):
        tuner.run(3, total=True, plots=False)
    assert len(tuner.study.trials) == 1
