"""Bring your own loggers: factories and Logger objects get the trial's params and tags."""

from __future__ import annotations

import csv
import importlib.util

import pytest
import pytorch_lightning as pl
import yaml
from scripted_module import SumModule

from lightning_tune.tuner import Float, Tuner

FAST = {
    "accelerator": "cpu",
    "devices": 1,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": False,
    "limit_train_batches": 1,
}


def _tuner(tmp_path, loggers, **kwargs):
    options = {
        "storage": "memory",
        "output_dir": tmp_path / "runs",
        "trainer_kwargs": FAST,
        "max_epochs": 2,
        "keep_checkpoints": 0,
        "quiet": True,
        "sampler": "random",
        "pruner": "none",
        "study_name": "byo",
        **kwargs,
    }
    return Tuner(SumModule, {"x": Float(0.0, 1.0)}, loggers=loggers, **options)


def test_a_csv_logger_factory_receives_the_trials_tags_and_params(tmp_path):
    seen = []

    def factory(params, tags):
        seen.append((dict(params), dict(tags)))
        return pl.loggers.CSVLogger(
            tmp_path / "mine", name=tags["study_name"], version=tags["trial_number"]
        )

    study = _tuner(tmp_path, ["csv", factory]).optimize(n_trials=2)
    assert [tags for _, tags in seen] == [
        {"study_name": "byo", "trial_number": str(n), "trial_name": f"byo/trial_{n:04d}"}
        for n in range(2)
    ]
    for trial in study.trials:
        directory = tmp_path / "mine" / "byo" / str(trial.number)
        hparams = yaml.safe_load((directory / "hparams.yaml").read_text())
        assert hparams == {"x": trial.params["x"], "study_name": "byo", "trial": trial.number}
        rows = list(csv.DictReader((directory / "metrics.csv").open()))
        logged = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
        assert logged == pytest.approx([trial.params["x"]] * 2, rel=1e-6)  # float32 metric
        # the built-in CSV logger still writes next to it
        assert (tmp_path / "runs" / "byo" / "trials" / f"trial_{trial.number:04d}").exists()


def test_a_params_only_factory_and_a_logger_object_get_study_and_trial_as_hparams(tmp_path):
    template = pl.loggers.CSVLogger(tmp_path / "obj", name="shared")
    study = _tuner(
        tmp_path, [lambda p: pl.loggers.CSVLogger(tmp_path / "fn", name="f"), template]
    ).optimize(n_trials=2)
    for root in ("fn/f", "obj/shared"):
        versions = sorted((tmp_path / root).iterdir())
        assert len(versions) == 2  # one run per trial, also from the shared object
        found = [yaml.safe_load((v / "hparams.yaml").read_text())["trial"] for v in versions]
        assert sorted(found) == [t.number for t in study.trials]


@pytest.mark.parametrize(
    ("loggers", "error", "match"),
    [
        (
            ["csv", "wandb"],
            ValueError,
            r"`loggers` may contain \['csv', 'tensorboard'\], Lightning",
        ),
        ([42], ValueError, r"but got 42 in loggers=\[42\]"),
    ],
)
def test_bad_loggers(tmp_path, loggers, error, match):
    with pytest.raises(error, match=match):
        _tuner(tmp_path, loggers)


def test_a_factory_that_returns_no_logger_fails_the_trial_with_its_name(tmp_path):
    def broken(params):
        return "not a logger"

    study = _tuner(tmp_path, [broken]).optimize(n_trials=1)
    reason = study.trials[0].user_attrs["fail_reason"]
    assert "logger factory 'broken' must return a pytorch_lightning Logger" in reason


@pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None, reason="the `mlflow` extra is not installed"
)
def test_mlflow_file_store_offline_gets_tags_params_and_metrics(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    # MLflow 3 keeps the file store in maintenance mode behind this switch (sqlite:/// works too)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()

    def factory(params, tags):
        return pl.loggers.MLFlowLogger(
            experiment_name="byo", run_name=tags["trial_name"], tracking_uri=uri, tags=tags
        )

    study = _tuner(tmp_path, [factory]).optimize(n_trials=2)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("byo")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    by_trial = {int(r.data.tags["trial_number"]): r for r in runs}
    for trial in study.trials:
        run = by_trial[trial.number]
        assert run.data.tags["study_name"] == "byo"
        assert run.data.tags["mlflow.runName"] == f"byo/trial_{trial.number:04d}"
        assert float(run.data.params["x"]) == pytest.approx(trial.params["x"])
        assert run.data.params["trial"] == str(trial.number)
        assert run.data.metrics["val_loss"] == pytest.approx(trial.params["x"], rel=1e-6)


def test_loggers_come_from_the_package_of_the_users_module(tmp_path, lightning_ns):
    from scripted_module import SCRIPTED

    from lightning_tune._lightning import NAMESPACES
    from lightning_tune.tuner import Categorical

    def factory(params, tags):
        return lightning_ns.loggers.CSVLogger(
            tmp_path / "mine", name="", version=tags["trial_number"]
        )

    module = SCRIPTED[lightning_ns.__name__]
    options = {"storage": "memory", "output_dir": tmp_path / "runs", "trainer_kwargs": FAST,
               "max_epochs": 1, "keep_checkpoints": 0, "quiet": True, "pruner": "none",
               "module_kwargs": {"values": [0.5]}}  # fmt: skip
    study = Tuner(module, {"batch_size": Categorical([4])}, loggers=["csv", factory],
                  **options).optimize(n_trials=1)  # fmt: skip
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE", trial.user_attrs
    assert trial.user_attrs["lightning"] == lightning_ns.__name__
    assert (tmp_path / "mine" / "0" / "hparams.yaml").exists()
    # a logger of the other package cannot drive this Trainer: the trial fails and says why
    others = [ns for ns in NAMESPACES if ns is not lightning_ns]
    if others:
        other = others[0]
        study = Tuner(module, {"batch_size": Categorical([4])}, study_name="other",
                      loggers=[lambda p: other.loggers.CSVLogger(tmp_path / "o")],
                      **options).optimize(n_trials=1)  # fmt: skip
        (trial,) = study.trials
        assert trial.state.name == "FAIL"
        assert f"must return a {lightning_ns.__name__} Logger" in trial.user_attrs["fail_reason"]
