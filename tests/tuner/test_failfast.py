"""Fail fast: configuration errors before the first trial, one line, no FAIL trial written."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.cli import main
from lightning_tune.tuner import Tuner
from lightning_tune.tuner.failfast import ConfigurationError, TooManyFailuresError, TrackedParams
from lightning_tune.tuner.space import SearchSpace
from lightning_tune.tuner.storage import resolve_storage

TESTS = pathlib.Path(__file__).resolve().parent
SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}
TRAINER = {"accelerator": "cpu", "devices": 1, "limit_train_batches": 2, "limit_val_batches": 1,
           "num_sanity_val_steps": 0}  # fmt: skip


def _tuner(tmp_path, module=TimmClassifier, module_kwargs=None, space=SPACE, **kwargs):
    options = {
        "datamodule": DigitsDataModule,
        "datamodule_kwargs": {"image_size": 8, "train_fraction": 0.2, "batch_size": 32},
        "module_kwargs": {"model_name": "test_resnet", **(module_kwargs or {})},
        "pruner": "none",
        "sampler": "random",
        "keep_checkpoints": 0,
        "loggers": (),
        "quiet": True,
        "max_epochs": 1,
        "trainer_kwargs": TRAINER,
        "study_name": "ff",
        "output_dir": tmp_path,
        **kwargs,
    }
    return Tuner(module, space, **options)


def _trials(tmp_path, name="ff") -> list[optuna.trial.FrozenTrial] | None:
    try:
        storage = resolve_storage(None, tmp_path / name)
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return None  # no study at all


def test_a_trainer_kwarg_typo_fails_when_the_tuner_is_built():
    with pytest.raises(ValueError, match=r"`trainer_kwargs` has arguments \['acclerator'\]"):
        Tuner(TimmClassifier, SPACE, trainer_kwargs={"acclerator": "cpu"})


def test_a_module_instance_instead_of_its_class_is_a_type_error():
    with pytest.raises(TypeError, match=r"got an instance of TimmClassifier: pass the class"):
        Tuner(TimmClassifier(model_name="test_resnet"), SPACE)


@pytest.mark.parametrize(
    ("module_kwargs", "match"),
    [
        ({"model_name": "test_resnnet"}, r"\(building the module\).*test_resnnet"),
        ({"pretrained": "missing.safetensors"}, r"\(building the module\).*missing\.safetensors"),
    ],
)
def test_an_error_building_trial_0_raises_once_and_writes_no_trial(tmp_path, module_kwargs, match):
    tuner = _tuner(tmp_path, module_kwargs=module_kwargs)
    with pytest.raises(ConfigurationError, match=match):
        tuner.run(3, total=True, plots=False)
    assert _trials(tmp_path) is None  # not even the study was created


def test_preflight_runs_a_batch_and_finds_a_monitor_nobody_logs(tmp_path):
    tuner = _tuner(tmp_path, monitor="val_nope", preflight=True)
    with pytest.raises(
        ConfigurationError, match=r"one training and one validation batch.*'val_nope'"
    ):
        tuner.run(3, total=True, plots=False)
    assert _trials(tmp_path) is None


def test_a_searched_name_nothing_reads_is_a_typo(tmp_path):
    space = {**SPACE, "lrr": {"type": "float", "low": 0.1, "high": 0.2}}

    def callbacks(params):  # a callback factory could read any name, so only trial 0 can tell
        return []

    tuner = _tuner(tmp_path, space=space, callbacks=callbacks)
    with pytest.raises(
        ConfigurationError, match=r"\['lrr'\] are read by nothing.*Accepted names: \[.*'lr'"
    ):
        tuner.run(2, total=True, plots=False)
    assert _trials(tmp_path) is None

    # A factory that reads it makes it a tuned name.
    def reading(params):
        assert params["lrr"] >= 0.1
        return []

    _tuner(tmp_path, space=space, callbacks=reading).check_setup()


def test_tracked_params_count_every_way_of_reading():
    reads: set[str] = set()
    params = TrackedParams({"a": 1, "b": 2, "c": 3}, reads)
    assert "a" in params and list(params) == ["a", "b", "c"] and not reads  # asking is not reading
    params.get("a")
    assert reads == {"a"}
    (lambda **kw: kw)(**params)
    assert reads == {"a", "b", "c"}


def test_a_string_log_flag_in_a_yaml_spec_is_an_error():
    with pytest.raises(TypeError, match=r"`lr`: `log` must be true or false, but got log='false'"):
        SearchSpace({"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": "false"}})
    with pytest.raises(TypeError, match=r"`n`: `log` must be true or false, but got log=1"):
        SearchSpace({"n": {"type": "int", "low": 1, "high": 8, "log": 1}})


class Exploding(TimmClassifier):
    def training_step(self, batch, batch_idx):
        raise RuntimeError("boom in training_step")


def test_a_later_error_is_one_line_with_the_traceback_in_the_trial_log(tmp_path, capfd):
    tuner = _tuner(tmp_path, module=Exploding, max_consecutive_failures=2, quiet=False)
    with pytest.raises(TooManyFailuresError, match=r"2 trials in a row failed with RuntimeError"):
        tuner.run(5, total=True, plots=False)
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    reason = trials[0].user_attrs["fail_reason"]
    assert reason == "RuntimeError: boom in training_step"
    log = pathlib.Path(trials[0].user_attrs["error_log"]).read_text()
    assert "Traceback (most recent call last)" in log and "boom in training_step" in log
    err = capfd.readouterr()
    assert "Traceback" not in err.err + err.out
    assert (err.err + err.out).count("boom in training_step") == 2  # one line per trial


CONFIG = """
study_name: cli
n_trials: 2
max_epochs: 1
keep_checkpoints: 0
loggers: []
plots: false
sampler: random
pruner: none
model: {class: TimmClassifier, kwargs: {model_name: test_resnet}}
data: {class: DigitsDataModule, kwargs: {image_size: 8, train_fraction: 0.2, batch_size: 32}}
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
trainer: {accelerator: cpu, devices: 1, limit_train_batches: 2, limit_val_batches: 1,
          num_sanity_val_steps: 0}
"""


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ([("model_name: test_resnet", "model_name: test_resnnet")], "building the module"),
        ([("lr: {", "lrr: {")], r"\['lrr'\] are not arguments of TimmClassifier"),
        (
            [
                ("lr: {", "lrr: {"),
                (
                    "plots: false",
                    "plots: false\ncallbacks: [{class: "
                    "EarlyStopping, kwargs: {monitor: val_loss}}]",
                ),
            ],
            r"\['lrr'\] are read by nothing",
        ),
        ([("max_epochs: 1", "max_epochs: 1\nmonitor: val_nope")], "'val_nope' was not logged"),
        ([("num_sanity_val_steps: 0", "num_sanity_val_step: 0")], "num_sanity_val_step"),
        ([("log: true", "log: 'false'")], "`log` must be true or false"),
    ],
)
def test_cli_configuration_errors_exit_2_with_one_line_and_no_trial(
    tmp_path, capsys, change, match
):
    config = tmp_path / "sweep.yaml"
    text = CONFIG
    for old, new in change:
        text = text.replace(old, new)
    config.write_text(text)
    code = main(["tune", "--config", str(config), "--output-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("lightning-tune tune: error:")
    assert re.search(match, err), err
    assert _trials(tmp_path, "cli") is None


@pytest.mark.slow
def test_cli_subprocess_model_typo_exits_2_before_any_trial(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(CONFIG.replace("model_name: test_resnet", "model_name: test_resnnet"))
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent.parent)}
    run = subprocess.run(
        [sys.executable, "-m", "lightning_tune.cli", "tune", "--config", str(config),
         "--output-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "building the module" in lines[0] and "test_resnnet" in lines[0]
    assert _trials(tmp_path, "cli") is None
