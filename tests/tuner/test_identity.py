"""Study identity: a rerun with other settings is refused with a diff and writes nothing."""

from __future__ import annotations

import optuna
import pytest

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.cli import main
from lightning_tune.tuner import Tuner
from lightning_tune.tuner.identity import IDENTITY_ATTR, StudyIdentityError
from lightning_tune.tuner.storage import resolve_storage

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}


def _tuner(tmp_path, space=SPACE, **kwargs):
    options = {"max_epochs": 2, "monitor": "val_loss", "quiet": True, "study_name": "same",
               "output_dir": tmp_path, "datamodule": DigitsDataModule,
               "module_kwargs": {"model_name": "test_resnet"},
               "trainer_kwargs": {"accelerator": "cpu", "limit_train_batches": 2}, **kwargs}  # fmt: skip
    return Tuner(TimmClassifier, space, **options)


def _snapshot(tmp_path, name="same"):
    study = optuna.load_study(study_name=name, storage=resolve_storage(None, tmp_path / name))
    return study.user_attrs, [(t.number, t.state, t.params) for t in study.trials]


@pytest.mark.parametrize(
    ("change", "diff"),
    [
        ({"space": {"lr": {**SPACE["lr"], "high": 0.5}}}, r"search_space\.lr\.high: 0\.1 -> 0\.5"),
        ({"max_epochs": 3}, r"max_epochs: 2 -> 3"),
        ({"monitor": "val_acc", "direction": "minimize"}, r'monitor: "val_loss" -> "val_acc"'),
        ({"objective": "last"}, r'objective: "best" -> "last"'),
        ({"trainer_kwargs": {"accelerator": "cpu", "limit_train_batches": 4}},
         r"trainer\.limit_train_batches: 2 -> 4"),
    ],
)  # fmt: skip
def test_a_rerun_with_other_settings_is_refused_with_a_diff_and_writes_nothing(
    tmp_path, change, diff
):
    study = _tuner(tmp_path).create_study()
    study.enqueue_trial({"lr": 0.01})
    before = _snapshot(tmp_path)
    assert before[0][IDENTITY_ATTR]["max_epochs"] == 2 and before[0]["monitor"] == "val_loss"

    with pytest.raises(StudyIdentityError, match=f"other settings.*{diff}.*--new-study NAME"):
        _tuner(tmp_path, **change).create_study()
    assert _snapshot(tmp_path) == before  # not even the stored monitor changed

    # The way out: resume="force" continues with the new settings (and stores them) ...
    _tuner(tmp_path, resume="force", **change).create_study()
    _tuner(tmp_path, **change).create_study()  # now these are the study's settings
    # ... and a new name starts afresh.
    _tuner(tmp_path, study_name="other", resume="new", **change).create_study()
    with pytest.raises(StudyIdentityError, match=r"already exists .* name that is not taken"):
        _tuner(tmp_path, study_name="other", resume="new").create_study()


def test_where_a_trial_runs_is_not_part_of_the_identity(tmp_path):
    _tuner(tmp_path).create_study()
    moved = {"accelerator": "cpu", "devices": 1, "limit_train_batches": 2}
    _tuner(tmp_path, trainer_kwargs=moved).create_study()


def test_cli_refuses_a_changed_config_and_new_study_is_the_way_out(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    base = """
study_name: cli
max_epochs: 2
model: {class: TimmClassifier, kwargs: {model_name: test_resnet}}
data: {class: DigitsDataModule, kwargs: {image_size: 8}}
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
"""
    config.write_text(base)
    from lightning_tune.tuner.config import load_config, tuner_from_config

    tuner_from_config(load_config(config), output_dir=str(tmp_path)).create_study()
    before = _snapshot(tmp_path, "cli")
    config.write_text(base.replace("max_epochs: 2", "max_epochs: 4"))
    argv = ["tune", "--config", str(config), "--output-dir", str(tmp_path), "--n-trials", "1",
            "--quiet", "--no-preflight"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "max_epochs: 2 -> 4" in err
    assert _snapshot(tmp_path, "cli") == before
    study = tuner_from_config(
        load_config(config), output_dir=str(tmp_path), study_name="cli2", resume="new"
    ).create_study()
    assert study.user_attrs[IDENTITY_ATTR]["max_epochs"] == 4
