"""LightningCLI of each package with our classes, and LightningCLI-format sweep configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from lightning_tune._lightning import NAMESPACES
from lightning_tune.callbacks import LabelSmoothing
from lightning_tune.cli import main
from lightning_tune.tuner.cli_format import from_lightning_cli
from lightning_tune.tuner.config import load_config, tuner_from_config

ROOT = Path(__file__).resolve().parents[1]
CLI_CONFIG = ROOT / "examples" / "lightning_cli.yaml"
SWEEP_CONFIG = ROOT / "examples" / "lightning_cli_sweep.yaml"
SHORT = [
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.image_size=8",
]


def test_lightning_cli_of_each_package_fits_our_classes_from_yaml(lightning_ns, tmp_path):
    pytest.importorskip("jsonargparse")
    code = f"from {lightning_ns.__name__}.cli import LightningCLI; LightningCLI()"
    command = [sys.executable, "-c", code, "fit", "--config", str(CLI_CONFIG), *SHORT]
    command.append(f"--trainer.default_root_dir={tmp_path}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (checkpoint,) = tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1 and saved["global_step"] == 4
    states = " ".join(saved["callbacks"])
    assert "LRSchedule" in states and "EarlyStopping" in states
    config = yaml.safe_load((tmp_path / "lightning_logs/version_0/config.yaml").read_text())
    paths = [cb["class_path"] for cb in config["trainer"]["callbacks"]]
    assert paths[0] == "lightning_tune.callbacks.LRSchedule" and len(paths) == 4


def test_lightning_cli_sweep_config_converts_and_addresses_a_callback_argument():
    cfg = load_config(SWEEP_CONFIG)
    assert cfg["model"]["class"] == "lightning_tune.TimmClassifier"
    assert cfg["seed"] == 0 and cfg["max_epochs"] == 3 and cfg["n_trials"] == 8
    assert [c["class"].rsplit(".", 1)[1] for c in cfg["callbacks"]] == [
        "LRSchedule",
        "LabelSmoothing",
        "GradientClipping",
    ]
    name = "trainer.callbacks[1].init_args.epsilon"
    assert cfg["callbacks"][1]["kwargs"]["epsilon"] == f"${name}"
    tuner = tuner_from_config(cfg, storage="memory")
    callbacks = tuner.build_callbacks({"lr": 1e-3, name: 0.125})
    assert isinstance(callbacks[1], LabelSmoothing) and callbacks[1].epsilon == 0.125
    module = tuner.build_module({"lr": 1e-3, name: 0.125})
    assert module.hparams.lr == 1e-3 and module.hparams.model_name == "test_resnet"


def test_lightning_cli_sweep_runs_with_the_tune_command(tmp_path, capsys):
    cfg = yaml.safe_load(SWEEP_CONFIG.read_text())
    cfg["trainer"].update(limit_train_batches=2, limit_val_batches=1, max_epochs=2)
    cfg["data"]["init_args"]["image_size"] = 8
    cfg["tuner"].update(n_trials=2, loggers=[], keep_checkpoints=0, plots=False)
    cfg["search_space"]["model.init_args.weight_decay"] = [0.0, 0.01]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(path), "--output-dir", str(tmp_path), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tune"]
    assert summary["trials"] == 2
    study = optuna.load_study(
        study_name="lightning-cli-sweep",
        storage=f"sqlite:///{tmp_path / 'lightning-cli-sweep' / 'study.db'}",
    )
    for trial in study.trials:
        epsilon = trial.params["trainer.callbacks[1].init_args.epsilon"]
        assert 0.0 <= epsilon <= 0.2 and 1e-4 <= trial.params["lr"] <= 1e-2
        assert trial.params["model.init_args.weight_decay"] in (0.0, 0.01)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {
                "trainer": {
                    "callbacks": [
                        {"class_path": "lightning_tune.callbacks.LRSchedul"},
                        {"class_path": "lightning_tune.callbacks.LabelSmoothing"},
                    ]
                }
            },
            r"no class 'lightning_tune\.callbacks\.LRSchedul'; did you mean "
            r"'lightning_tune\.callbacks\.LRSchedule'\?$",
        ),
        (
            {"model": {"class_path": "lightning_tune.TimmClasifier"}},
            r"did you mean 'lightning_tune\.TimmClassifier'",
        ),
        (
            {"search_space": {"trainer.callbacks[7].init_args.epsilon": [0.1]}},
            r"`trainer\.callbacks` has 3 entries \(indices 0\.\.2\)",
        ),
        (
            {"search_space": {"trainer.epsilon": [0.1]}},
            r"looks like a path but is not one of",
        ),
        ({"optimizer": {"class_path": "torch.optim.SGD"}}, r"`optimizer` .* not supported"),
    ],
)
def test_bad_lightning_cli_sweep_configs(change, match):
    cfg = yaml.safe_load(SWEEP_CONFIG.read_text())
    cfg.update(change)
    with pytest.raises(ValueError, match=match):
        tuner_from_config(cfg, storage="memory")


def test_owned_trainer_keys_are_replaced_with_a_warning():
    cfg = yaml.safe_load(CLI_CONFIG.read_text())
    cfg["trainer"]["logger"] = True
    cfg["search_space"] = {"lr": [0.001, 0.01]}
    with pytest.warns(UserWarning, match=r"\['logger'\] are set by the tuner"):
        converted = from_lightning_cli(cfg)
    assert "logger" not in converted["trainer"] and converted["max_epochs"] == 3
    assert len(converted["callbacks"]) == 4


def test_the_installed_packages_cli_modules_import():
    for ns in NAMESPACES:
        assert hasattr(__import__(f"{ns.__name__}.cli", fromlist=["LightningCLI"]), "LightningCLI")
