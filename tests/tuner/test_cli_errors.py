"""The command line promises one line and exit code 2 for bad input: configs, imports, disks."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import subprocess
import sys

import optuna
import pytest

from lightning_tune.cli import main

SWEEP = """
study_name: cli
n_trials: 2
max_epochs: 1
pruner: none
sampler: random
keep_checkpoints: 0
loggers: []
plots: false
model: {class: TimmClassifier, kwargs: {model_name: test_resnet}}
data: {class: DigitsDataModule, kwargs: {image_size: 8, train_fraction: 0.2, batch_size: 32}}
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
trainer: {accelerator: cpu, limit_train_batches: 1, limit_val_batches: 1, num_sanity_val_steps: 0}
"""


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lightning-tune tune: error:"), err
    return err


def test_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text("study_name: x\nmodel: {class: TimmClassifier\nsearch_space: {}\n")
    err = _one_line_error(capsys, ["tune", "--config", str(config)])
    assert f"config file {config}: YAML syntax error at line 3" in err


def test_a_config_that_is_not_utf8_names_the_file(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_bytes(SWEEP.replace("cli", "caf\xe9").encode("latin-1"))
    err = _one_line_error(capsys, ["tune", "--config", str(config)])
    assert f"config file {config} is not UTF-8 text (byte 0xe9" in err


CALLBACK = """
import pytorch_lightning as pl

class Marker(pl.Callback):
    def __init__(self, tag):
        self.tag = tag
"""


@pytest.mark.parametrize("where", ["config dir", "cwd"])
def test_class_paths_import_from_the_config_dir_and_the_cwd(tmp_path, monkeypatch, where):
    from lightning_tune.tuner.config import load_config, tuner_from_config

    configs, elsewhere = tmp_path / "configs", tmp_path / "elsewhere"
    configs.mkdir(), elsewhere.mkdir()
    name = f"marker_{where.replace(' ', '_')}"
    home = configs if where == "config dir" else elsewhere
    (home / f"{name}.py").write_text(CALLBACK)
    config = configs / "sweep.yaml"
    config.write_text(SWEEP + f"callbacks: [{{class: {name}.Marker, kwargs: {{tag: $lr}}}}]\n")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", list(sys.path))
    tuner = tuner_from_config(load_config(config), storage="memory")
    (marker,) = tuner.build_callbacks({"lr": 0.01})
    assert type(marker).__module__ == name and marker.tag == 0.01


def test_a_class_that_cannot_be_imported_names_both_places(tmp_path, capsys, monkeypatch):
    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP.replace("class: TimmClassifier", "class: nowhere_pkg.Model"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    err = _one_line_error(capsys, ["tune", "--config", str(config)])
    assert "cannot import 'nowhere_pkg'" in err
    assert f"in the current directory {tmp_path}" in err
    assert f"in the config's directory {tmp_path}" in err


def test_a_truncated_safetensors_file_is_one_line_and_no_trial(tmp_path, capsys):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    import timm

    weights = tmp_path / "weights.safetensors"
    safetensors_torch.save_file(timm.create_model("test_resnet").state_dict(), str(weights))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    config = tmp_path / "sweep.yaml"
    config.write_text(
        SWEEP.replace("model_name: test_resnet", f"model_name: test_resnet, pretrained: {weights}")
    )
    err = _one_line_error(capsys, ["tune", "--config", str(config), "--output-dir", str(tmp_path)])
    assert "building the module" in err and "weights.safetensors" in err
    assert not (tmp_path / "cli" / "study.db").exists()


@contextlib.contextmanager
def _tiny_disk(path: pathlib.Path, size: str = "1m"):
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(directory: pathlib.Path) -> pathlib.Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):  # until the disk is full
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def test_disk_full_during_a_sweep_is_one_line_and_the_rerun_finishes(tmp_path, capsys):
    """A real full disk: a 1 MB tmpfs holding the study's SQLite file."""
    with _tiny_disk(tmp_path / "disk") as disk:
        config = tmp_path / "sweep.yaml"
        config.write_text(SWEEP.replace("max_epochs: 1", "max_epochs: 1\nheartbeat_interval: 1"))
        storage = str(disk / "study.db")
        argv = ["tune", "--config", str(config), "--storage", storage, "--output-dir",
                str(tmp_path / "runs"), "--quiet", "--no-preflight", "--grace-period", "2"]  # fmt: skip
        optuna.create_study(study_name="cli", storage=f"sqlite:///{storage}")  # schema fits
        filler = _fill(disk)
        err = _one_line_error(capsys, argv)
        # Opening the file already needs space (its WAL files): refused there, or mid-sweep.
        assert storage in err and "disk is full" in err and "Should not reach" not in err
        filler.unlink()
        assert main(argv) == 0  # space freed: the same command finishes the sweep
        capsys.readouterr()
        study = optuna.load_study(study_name="cli", storage=f"sqlite:///{storage}")
        states = [t.state.name for t in study.trials]
        assert states.count("COMPLETE") == 2 and "RUNNING" not in states


@pytest.mark.parametrize("name", ["study.db", "study.log"], ids=["sqlite", "journal"])
@pytest.mark.parametrize("existing", [True, False], ids=["existing-study", "new-file"])
def test_a_read_only_storage_is_one_line_exit_2_and_left_unchanged(
    tmp_path, capsys, existing, name
):
    """A real read-only file system (root can write anywhere else): a tmpfs remounted ro."""
    with _tiny_disk(tmp_path / "disk", size="4m") as disk:
        storage = disk / name
        if existing and name.endswith(".db"):
            rdb = optuna.storages.RDBStorage(f"sqlite:///{storage}")
            optuna.create_study(study_name="cli", storage=rdb)
            rdb.engine.dispose()
        elif existing:
            backend = optuna.storages.journal.JournalFileBackend(str(storage))
            optuna.create_study(study_name="cli", storage=optuna.storages.JournalStorage(backend))
        remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({remount.stderr.decode().strip()})")
        before = sorted((p.name, p.read_bytes()) for p in disk.iterdir())
        config = tmp_path / "sweep.yaml"
        config.write_text(SWEEP)
        argv = ["tune", "--config", str(config), "--storage", str(storage), "--output-dir",
                str(tmp_path / "runs"), "--quiet", "--no-preflight"]  # fmt: skip
        err = _one_line_error(capsys, argv)
        assert str(storage) in err and re.search(r"read-only", err), err
        assert sorted((p.name, p.read_bytes()) for p in disk.iterdir()) == before


@pytest.mark.slow
def test_yaml_error_from_the_installed_command_is_one_line(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("model: [unclosed\n")
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}
    run = subprocess.run(
        [sys.executable, "-m", "lightning_tune.cli", "tune", "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "YAML syntax error" in run.stderr
