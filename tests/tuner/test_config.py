from __future__ import annotations

import json
import re

import optuna
import pytest
import yaml

from lightning_tune.cli import main
from lightning_tune.tuner import load_config, tuner_from_config
from lightning_tune.tuner.config import bundled_config

SMALL = {
    "study_name": "cli",
    "seed": 0,
    "n_trials": 2,
    "monitor": "val_loss",
    "max_epochs": 2,
    "keep_checkpoints": 1,
    "plots": False,
    "sampler": "random",
    "pruner": {"name": "median", "kwargs": {"n_startup_trials": 1}},
    "model": {"class": "TimmClassifier", "kwargs": {"model_name": "test_resnet"}},
    "data": {
        "class": "lightning_tune.data.DigitsDataModule",
        "kwargs": {"image_size": 16, "train_fraction": 0.2},
    },
    "search_space": {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},  # written as 1e-3
        "batch_size": {"type": "pow2", "low": 16, "high": 32},
        "epsilon": {"type": "float", "low": 0.0, "high": 0.2},
    },
    "callbacks": [{"class": "tests_recorder.Recorder", "kwargs": {"value": "$epsilon"}}],
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
    },
}


def _write(tmp_path, cfg, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def recorder_module(tmp_path, monkeypatch):
    """A callback class importable by dotted path, recording the value it was built with."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "tests_recorder.py").write_text(
        "import pytorch_lightning as pl\n"
        "SEEN = []\n"
        "class Recorder(pl.Callback):\n"
        "    def __init__(self, value):\n"
        "        self.value = value\n"
        "    def on_fit_start(self, trainer, pl_module):\n"
        "        SEEN.append(self.value)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    import importlib

    return importlib.import_module("tests_recorder")


def test_the_bundled_config_loads_and_builds_a_tuner():
    cfg = load_config(bundled_config())
    tuner = tuner_from_config(cfg, storage="memory")
    assert set(tuner.search_space.distributions()) == {
        "lr",
        "weight_decay",
        "batch_size",
        "label_smoothing",
        "warmup",
    }
    assert tuner.search_space.distributions()["lr"].low == pytest.approx(1e-4)  # '1e-4' is a float
    assert type(tuner.pruner).__name__ == "HyperbandPruner"
    assert tuner.max_resource == cfg["max_epochs"]


def test_cli_tune_runs_continues_and_passes_tuned_values_to_callbacks(
    tmp_path, capsys, recorder_module
):
    config = _write(tmp_path, SMALL)
    out = tmp_path / "runs"
    assert main(["tune", "--config", str(config), "--output-dir", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tune"]
    assert summary["trials"] == 2 and summary["best_trial"] in (0, 1)
    assert (out / "cli" / "study.db").exists() and (out / "cli" / "report" / "trials.csv").exists()
    study = optuna.load_study(study_name="cli", storage=f"sqlite:///{out / 'cli' / 'study.db'}")
    # the preflight fits trial 0's objects (one batch) first, then each trial fits its own
    assert [t.params["epsilon"] for t in study.trials] == recorder_module.SEEN[1:]
    assert {t.params["batch_size"] for t in study.trials} <= {16, 32}

    # the same command again continues the study up to --n-trials finished trials in all
    assert (
        main(
            [
                "tune",
                "--config",
                str(config),
                "--output-dir",
                str(out),
                "--quiet",
                "--n-trials",
                "3",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tune"]
    assert summary["trials"] == 3


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"n_trails": 3}, r"unknown keys \['n_trails'\]; accepted keys: \["),
        (
            {"model": {"class": "TimmClassifier", "kwags": {}}},
            r"config `model` has unknown keys \['kwags'\]",
        ),
        (
            {"pruner": "patience"},
            r"`pruner` must be one of \['hyperband', 'median', 'none', 'patient', 'percentile', "
            r"'successive_halving', 'threshold', 'wilcoxon'\]",
        ),
        ({"sampler": {"name": "anneal"}}, r"`sampler` must be one of"),
        (
            {"sampler": {"name": "grid"}},
            r"search space `epsilon`: a float under sampler='grid' needs `grid_points`",
        ),
        ({"n_trials": 0}, r"`n_trials` must be an int >= 1, but got n_trials=0"),
        ({"storage": "mysql:/db"}, r"`storage`='mysql:/db'"),
        (
            {
                "search_space": {
                    **SMALL["search_space"],
                    "lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True},
                }
            },
            r"log range must have low > 0",
        ),
        ({"model": {"class": "NoSuchModel"}}, r"unknown class 'NoSuchModel'; use a dotted path"),
        (
            {"callbacks": [{"class": "LabelSmoothing", "kwargs": {"epsilon": "$eps"}}]},
            r"refers to \['\$eps'\] which are not in the search space",
        ),
    ],
)
def test_bad_configs_fail_before_training_with_a_clear_error(
    tmp_path, capsys, recorder_module, change, match
):
    cfg = {**SMALL, **change}
    config = _write(tmp_path, cfg)
    assert main(["tune", "--config", str(config), "--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "lightning-tune tune: error:" in err
    assert re.search(match, err), err
    assert not (tmp_path / "runs" / "cli" / "study.db").exists()


def test_missing_config_file_is_reported(tmp_path, capsys):
    assert main(["tune", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_overrides_must_be_config_keys():
    with pytest.raises(ValueError, match=r"unknown overrides \['trials'\]"):
        tuner_from_config(load_config(bundled_config()), trials=3)
