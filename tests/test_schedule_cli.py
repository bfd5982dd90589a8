"""The schedule preview: Python function and ``lightning-tune plot-schedule``."""

from __future__ import annotations

import json

import pytest

from lightning_tune.callbacks import LRSchedule
from lightning_tune.cli import main
from lightning_tune.schedule_cli import preview_schedule


def test_preview_matches_the_callback_and_writes_a_png(tmp_path):
    path = tmp_path / "lr.png"
    lrs = preview_schedule(
        "one_cycle", total_steps=50, lr=0.3, path=path, pct_start=0.2, cycle_momentum=True
    )
    assert lrs == LRSchedule("one_cycle", pct_start=0.2).preview(50, lr=0.3)
    assert max(lrs) == pytest.approx(0.3, rel=1e-3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000


def test_preview_rejects_bad_lengths():
    with pytest.raises(
        ValueError, match="`total_steps` must be an int >= 1, but got total_steps=0"
    ):
        preview_schedule(total_steps=0)
    with pytest.raises(ValueError, match=r"warmup \(10 steps\) must be shorter than the run"):
        preview_schedule(total_steps=10, warmup=10)


def test_cli_prints_json_with_every_lr(capsys):
    code = main(
        [
            "plot-schedule",
            "multistep",
            "--total-steps",
            "8",
            "--lr",
            "1",
            "--set",
            "milestones=[2,5]",
            "--set",
            "gamma=0.5",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["lr"] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


def test_cli_summary_and_plot(tmp_path, capsys):
    path = tmp_path / "cyclic.png"
    code = main(
        [
            "plot-schedule",
            "cosine",
            "--total-steps",
            "100",
            "--lr",
            "0.01",
            "--warmup",
            "0.1",
            "--set",
            "min_factor=0.1",
            "-o",
            str(path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "peak 0.01 at step 10" in out
    assert f"plot written to {path}" in out
    assert path.exists()


def test_cli_reports_bad_arguments(capsys):
    code = main(["plot-schedule", "cyclic", "--set", "mode=sawtooth"])
    assert code == 2
    assert "`mode` must be one of ['triangular', 'triangular2', 'exp_range']" in (
        capsys.readouterr().err
    )
    assert main(["plot-schedule", "--set", "min_factor"]) == 2
    assert "--set takes KEY=VALUE" in capsys.readouterr().err
