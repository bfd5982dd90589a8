"""Diagnosis-driven pruning: a trial whose training shows a bug is pruned at once, with the reason."""

from __future__ import annotations

import pathlib
import sys

import pandas as pd
import pytest
from optuna.trial import TrialState

from lightning_tune import Tuner
from lightning_tune.tuner.config import tuner_from_config
from lightning_tune.tuner.report import format_trial_line, summary_table

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
from diagnostics_zoo import ZooData, ZooMLP

FAST = {
    "accelerator": "cpu",
    "devices": 1,
    "limit_train_batches": 10,
    "limit_val_batches": 2,
    "num_sanity_val_steps": 0,
}


def test_a_diverging_trial_is_pruned_by_its_finding_before_the_median_pruner_could(tmp_path):
    def suggest(trial):
        return {"lr": [1e-3, 1e-3, 3.0][trial.number]}

    tuner = Tuner(
        ZooMLP,
        suggest,
        datamodule=ZooData,
        output_dir=tmp_path,
        trainer_kwargs=FAST,
        max_epochs=2,
        sampler="random",
        pruner="median",
        pruner_kwargs={"n_startup_trials": 5},  # the median pruner could not prune yet
        storage="memory",
        quiet=True,
        diagnostics={"every_n_steps": 2},
    )
    result = tuner.run(n_trials=3, plots=False)
    trials = result.study.trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.PRUNED,
    ]
    broken = trials[2]
    assert broken.user_attrs["diagnosis"] in {
        "loss_diverging",
        "nonfinite_loss",
        "dead_units",
        "grad_exploding",
    }
    reason = broken.user_attrs["prune_reason"]
    assert reason.startswith(f"diagnostics: error {broken.user_attrs['diagnosis']} at step ")
    errors = [f for f in broken.user_attrs["findings"] if f["severity"] == "error"]
    assert errors[0]["step"] < 10  # found, and stopped, inside the first epoch
    assert broken.user_attrs["epochs"] <= 1 and broken.last_step in (None, 0)
    assert reason in format_trial_line(broken, monitor="val_loss")
    assert "diagnosis" not in trials[0].user_attrs
    frame = pd.read_csv(tuner.study_dir / "report" / "trials.csv")
    assert frame.loc[frame.number == 2, "reason"].item() == reason
    assert f"Pruned by diagnostics: 1 ({broken.user_attrs['diagnosis']} x1)" in summary_table(
        result.study
    )


def test_yaml_key_and_bad_values(tmp_path):
    cfg = {
        "model": {"class": "TimmClassifier", "kwargs": {"model_name": "test_resnet"}},
        "search_space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "storage": "memory",
        "output_dir": str(tmp_path),
        "diagnostics": True,
    }
    assert tuner_from_config(cfg).diagnostics == {}
    assert tuner_from_config({**cfg, "diagnostics": {"every_n_steps": 5}}).diagnostics == {
        "every_n_steps": 5
    }
    assert tuner_from_config({**cfg, "diagnostics": False}).diagnostics is None
    with pytest.raises(ValueError, match="`diagnostics` must not set on_error"):
        tuner_from_config({**cfg, "diagnostics": {"on_error": "warn"}})
    with pytest.raises(ValueError, match="`every_n_steps` must be an int >= 1"):
        tuner_from_config({**cfg, "diagnostics": {"every_n_steps": 0}})
    with pytest.raises(TypeError, match="`diagnostics` must be true/false or a mapping"):
        tuner_from_config({**cfg, "diagnostics": "yes"})
