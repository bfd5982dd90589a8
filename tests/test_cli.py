from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lightning_tune.cli import build_parser, main


def test_demo_runs_as_a_subprocess_and_prints_metrics(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_tune.cli",
            "demo",
            "--epochs",
            "1",
            "--limit-train-batches",
            "5",
            "--quiet",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Final metrics" in proc.stdout
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"demo"')][-1]
    metrics = json.loads(line)["demo"]
    assert metrics["epochs"] == 1
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert metrics["val_loss"] > 0


def test_bad_input_is_reported_without_a_traceback(capsys):
    code = main(["demo", "--model", "resnet_18", "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Did you mean" in err and "Traceback" not in err


def test_help_lists_the_demo():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
