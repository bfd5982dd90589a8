"""`lightning-tune doctor` as a subprocess and as a function; the LR range test."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from lightning_tune.cli import main
from lightning_tune.diagnostics import build_from_config, lr_range_test, plot_diagnostics

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from diagnostics_zoo import ZooData, ZooMLP  # noqa: E402

HEALTHY = """\
study_name: doctor_ok
model: {class: diagnostics_zoo.ZooMLP}
data: {class: diagnostics_zoo.ZooData}
search_space:
  lr: {type: float, low: 1e-4, high: 1e-2, log: true}
trainer: {accelerator: cpu, devices: 1}
"""
BROKEN = """\
study_name: doctor_broken
model: {class: diagnostics_zoo.ZooMLP, kwargs: {bias_init: -10.0}}
data: {class: diagnostics_zoo.ZooData}
search_space:
  lr: {type: float, low: 1e-4, high: 1e-2, log: true}
trainer: {accelerator: cpu, devices: 1}
"""


def run_doctor(tmp_path, config_text, *extra):
    config = tmp_path / "sweep.yaml"
    config.write_text(config_text)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")]),
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "lightning_tune.cli", "doctor", "--config", str(config)]
    return subprocess.run(
        [*command, "--out", str(tmp_path / "png"), "--overfit-steps", "12", *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )


def test_doctor_cli_healthy_config(tmp_path):
    done = run_doctor(tmp_path, HEALTHY, "--lr-range-steps", "30", "--overfit-steps", "50")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hyperparameters: lr=0.001" in done.stdout  # the middle of the log range
    assert "overfit one batch: loss" in done.stdout and "suggested lr=" in done.stdout
    assert done.stdout.rstrip().endswith("healthy")
    pngs = sorted(p.name for p in (tmp_path / "png").glob("*.png"))
    assert pngs == ["dead_units.png", "gradient_flow.png", "lr_range.png", "update_ratio.png"]


def test_doctor_cli_broken_config(tmp_path):
    done = run_doctor(tmp_path, BROKEN, "--lr-range-steps", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error     dead_units" in done.stdout and "net.1" in done.stdout
    assert "error     overfit_failed" in done.stdout
    assert "NOT healthy" in done.stdout
    assert (tmp_path / "png" / "gradient_flow.png").exists()


@pytest.mark.parametrize(
    ("config", "extra", "message"),
    [
        ("model: {class: NoSuchModel}\nsearch_space: {}\n", [], "unknown class 'NoSuchModel'"),
        (HEALTHY, ["--set", "momentum=0.9"], r"`--set` names \['momentum'\] are not in"),
        (HEALTHY, ["--overfit-steps", "1"], "`overfit_steps` must be an int >= 2"),
    ],
)
def test_doctor_cli_bad_input_one_line_exit_2(tmp_path, config, extra, message, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(config)
    out = tmp_path / "png"
    code = main(["doctor", "--config", str(path), "--out", str(out), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightning-tune doctor: error:")
    assert re.search(message, err[0])
    assert not out.exists()  # nothing trained, nothing written


def test_build_from_classes_and_bad_combinations():
    module, dm, params, _ = build_from_config(
        module="diagnostics_zoo.ZooMLP", data="diagnostics_zoo.ZooData", module_kwargs={"lr": 0.1}
    )
    assert isinstance(module, ZooMLP) and isinstance(dm, ZooData) and module.hparams.lr == 0.1
    assert params == {}
    with pytest.raises(ValueError, match="either `config`"):
        build_from_config()


def test_lr_range_test_suggests_a_falling_region_and_keeps_the_module(tmp_path):
    module = ZooMLP()
    before = module.net[0].weight.detach().clone()
    result = lr_range_test(module, ZooData(), num_steps=40, accelerator="cpu")
    assert (module.net[0].weight == before).all()
    assert result.lrs[0] == pytest.approx(1e-6) and len(result.lrs) == len(result.losses)
    # the suggestion (the lowest loss's LR / 3) lies where the loss is still falling
    assert 1e-5 < result.suggestion < 1.0
    assert result.suggestion == pytest.approx(result.best_loss_lr / 3)
    assert min(result.losses) < result.losses[0]
    assert result.plot(tmp_path / "lr.png").stat().st_size > 0
    with pytest.raises(ValueError, match="`num_steps` must be an int >= 5"):
        lr_range_test(module, ZooData(), num_steps=3)
    with pytest.raises(ValueError, match=r"`max_lr` must be a number > 0\.1"):
        lr_range_test(module, ZooData(), min_lr=0.1, max_lr=0.01)


def test_plot_diagnostics_bad_source():
    with pytest.raises(TypeError, match="`source` must be a TrainingDiagnostics"):
        plot_diagnostics(3, ".")
