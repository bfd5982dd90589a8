"""Storages that never get worse: torn journals, bad files, schema races (real files, real servers)."""

from __future__ import annotations

import hashlib
import multiprocessing
import pathlib
import re

import optuna
import pytest

from lightning_tune.cli import main
from lightning_tune.tuner.storage import resolve_storage
from lightning_tune.tuner.storage_files import StorageError

pytest_plugins = ["postgres_fixture"]

CONFIG = """
study_name: s
n_trials: 1
max_epochs: 1
pruner: none
model: {class: TimmClassifier, kwargs: {model_name: test_resnet}}
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
"""


def _digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _journal_with_trials(path: pathlib.Path, n: int = 2) -> None:
    storage = resolve_storage(f"journal:{path}", path.parent)
    study = optuna.create_study(study_name="j", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)


def test_a_torn_last_journal_record_is_trimmed_with_a_backup_and_stays_readable(tmp_path, capsys):
    path = tmp_path / "study.log"
    _journal_with_trials(path)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 5, "worker_id": "x", "tri')  # disk full mid-write
    storage = resolve_storage(f"journal:{path}", tmp_path)
    err = capsys.readouterr().err
    assert "ended with a partial record" in err and "trimmed it to its" in err
    (backup,) = tmp_path.glob("study.log.torn-*.bak")
    assert backup.read_bytes().startswith(whole) and path.read_bytes() == whole
    study = optuna.load_study(study_name="j", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # appends cleanly
    reread = optuna.load_study(study_name="j", storage=resolve_storage(str(path), tmp_path))
    assert len(reread.trials) == 3


def test_a_journal_damaged_in_the_middle_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "study.log"
    _journal_with_trials(path)
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:10]
    path.write_bytes(b"\n".join(lines))
    before = _digest(path)
    with pytest.raises(StorageError, match=r"study\.log is damaged at line 2 of \d+"):
        resolve_storage(str(path), tmp_path)
    assert _digest(path) == before


def _bad_storages(tmp_path: pathlib.Path) -> dict[str, tuple[pathlib.Path, str]]:
    """Storage paths that cannot work, and what the one-line error must say."""
    not_db = tmp_path / "notes.db"
    not_db.write_text("these are my notes, not a database\n" * 50)
    good = tmp_path / "good.db"  # a study database in one file (no WAL beside it)
    storage = optuna.storages.RDBStorage(f"sqlite:///{good}")
    optuna.create_study(study_name="s", storage=storage)
    storage.engine.dispose()
    truncated = tmp_path / "truncated.db"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    parent_file = tmp_path / "a_file"
    parent_file.write_text("x")
    return {
        "not a database": (not_db, "is not a SQLite database"),
        "truncated": (truncated, "is not a SQLite database .or it is damaged"),
        "parent is a file": (parent_file / "study.db", "A parent of the path is a file"),
    }


@pytest.mark.parametrize("case", ["not a database", "truncated", "parent is a file"])
def test_storage_file_errors_are_one_line_exit_2_and_leave_the_file_unchanged(
    tmp_path, capsys, case
):
    path, message = _bad_storages(tmp_path)[case]
    before = _digest(path) if path.exists() else None
    config = tmp_path / "sweep.yaml"
    config.write_text(CONFIG)
    argv = ["tune", "--config", str(config), "--storage", str(path), "--output-dir",
            str(tmp_path / "runs"), "--quiet", "--no-preflight"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and re.search(message, err), err
    assert (_digest(path) if path.exists() else None) == before


def _open_at_once(spec: str, study_dir: str, start, results) -> None:
    start.wait()
    try:
        storage = resolve_storage(spec, study_dir, in_memory_ok=False)
        optuna.create_study(study_name="race", storage=storage, load_if_exists=True)
        results.put("ok")
    except Exception as err:  # reported to the test, which fails with it
        results.put(f"{type(err).__name__}: {err}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_workers_started_together_on_a_fresh_storage_both_work(request, tmp_path, kind):
    spec = (
        str(tmp_path / "fresh.db") if kind == "sqlite" else request.getfixturevalue("postgres_url")
    )
    context = multiprocessing.get_context("fork")
    for _ in range(3):  # the race is timing-dependent: try a few fresh storages
        if kind == "sqlite":
            spec = str(tmp_path / f"fresh{_}.db")
        start, results = context.Event(), context.Queue()
        workers = [
            context.Process(target=_open_at_once, args=(spec, str(tmp_path), start, results))
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        start.set()
        for worker in workers:
            worker.join(timeout=120)
        assert sorted(results.get(timeout=5) for _ in workers) == ["ok", "ok"]
        if kind == "postgres":
            break  # one fresh database per test


def test_a_new_file_refused_as_locked_during_the_wal_switch_is_tried_again(tmp_path, monkeypatch):
    # What a second worker sees when both switch a new file to WAL at the same moment (SQLite
    # refuses one at once): made deterministic by refusing the first two switches.
    import sqlite3

    from lightning_tune.tuner import storage

    real, calls = storage._switch_to_wal, []

    def switch(path):
        calls.append(path)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        real(path)

    monkeypatch.setattr(storage, "_switch_to_wal", switch)
    path = tmp_path / "new.db"
    study = optuna.create_study(storage=resolve_storage(str(path), tmp_path))
    assert len(calls) == 3 and study.trials == []
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()

    def broken(path):
        calls.append(path)
        raise sqlite3.OperationalError("disk I/O error")

    calls.clear()
    monkeypatch.setattr(storage, "_switch_to_wal", broken)
    with pytest.raises(StorageError, match=r"disk I/O error"):
        resolve_storage(str(tmp_path / "other.db"), tmp_path)
    assert len(calls) == 1  # only "locked" is tried again
