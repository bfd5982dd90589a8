"""`lightning-tune dashboard` serves a real study over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from lightning_tune.cli import main
from lightning_tune.dashboard import dashboard_storage

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def _study(directory: Path, name: str = "served") -> Path:
    directory.mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{directory / 'study.db'}")
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=3)
    return directory


def test_dashboard_serves_the_study_over_http_and_stops(tmp_path):
    pytest.importorskip("optuna_dashboard")
    study_dir = _study(tmp_path / "runs" / "served")
    port = _free_port()
    command = [sys.executable, "-m", "lightning_tune.cli", "dashboard", str(study_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        studies = None
        deadline = time.monotonic() + 300  # a loaded machine imports slowly
        while studies is None and time.monotonic() < deadline and process.poll() is None:
            try:
                studies = _get(port, "/api/studies")["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "the dashboard did not answer"
        assert [s["study_name"] for s in studies] == ["served"]
        detail = _get(port, f"/api/studies/{studies[0]['study_id']}")
        assert [t["number"] for t in detail["trials"]] == [0, 1, 2]
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"at http://127.0.0.1:{port}/" in output
    assert f"sqlite:///{(study_dir / 'study.db').resolve()}" in output


def test_dashboard_storage_resolves_directories_files_and_urls(tmp_path):
    study_dir = _study(tmp_path / "out" / "one")
    db = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    assert dashboard_storage(str(study_dir)) == db
    assert dashboard_storage(str(tmp_path / "out")) == db  # the only study under it
    assert dashboard_storage(str(study_dir / "study.db")) == db
    assert dashboard_storage("postgresql://u@h/db") == "postgresql://u@h/db"
    _study(tmp_path / "out" / "two")
    with pytest.raises(ValueError, match=r"holds 2 studies \['one', 'two'\]"):
        dashboard_storage(str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="no study at"):
        dashboard_storage(str(tmp_path / "missing"))


def test_a_bad_target_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path / "missing")]) == 2
    assert "lightning-tune dashboard: error: no study at" in capsys.readouterr().err


def test_the_sweep_summary_names_the_dashboard_command(tmp_path):
    from lightning_tune import TimmClassifier
    from lightning_tune.tuner import Float, Tuner

    def tuner(storage):
        return Tuner(TimmClassifier, {"lr": Float(0.001, 0.01)}, storage=storage,
                     output_dir=tmp_path, study_name="s")  # fmt: skip

    assert tuner(None).dashboard_command == f"lightning-tune dashboard {tmp_path / 's'}"
    assert tuner("memory").dashboard_command is None
    url = "postgresql://user:secret@host/db"
    assert tuner(url).dashboard_command == "lightning-tune dashboard postgresql://user:***@host/db"
