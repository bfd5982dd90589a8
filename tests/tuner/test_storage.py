"""Real SQLite, journal and PostgreSQL storages: URL handling, sharing, crash recovery."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.storages.journal import JournalStorage
from optuna.trial import TrialState

import lightning_tune.tuner.storage as storage_module
from lightning_tune.tuner.storage import (
    check_storage,
    describe_storage,
    heartbeat_enabled,
    mask_url,
    resolve_storage,
)

# postgres_server_url / postgres_url: a real server (tests/postgres_fixture.py).
pytest_plugins = ["postgres_fixture"]

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A worker process on a shared study. It loads storage.py by path (only optuna inside), so it
# starts in a fraction of a second instead of importing torch, timm and Lightning.
_WORKER = r"""
import importlib.util, json, sys, time
import optuna
spec = importlib.util.spec_from_file_location("lt_storage", sys.argv[2])
storage_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(storage_module)
args = json.loads(sys.argv[1])
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = storage_module.resolve_storage(
    args["storage"], args["study_dir"], in_memory_ok=False,
    heartbeat_interval=args.get("heartbeat"), grace_period=args.get("grace"),
)
study = optuna.load_study(study_name=args["study"], storage=storage)

def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    n = trial.suggest_int("n", 1, 5)
    if args.get("log"):
        with open(args["log"], "a") as log:
            log.write(f"{trial.number}\n")
    for step in range(3):
        trial.report(x * step + n, step)
    if args.get("hang"):
        print("started", trial.number, flush=True)
        time.sleep(300)
    return x * x + n

study.optimize(objective, n_trials=args["n_trials"])
"""


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    n = trial.suggest_int("n", 1, 5)
    for step in range(3):
        trial.report(x * step + n, step)
    return x * x + n


def _worker(spec: dict, **popen_kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, json.dumps(spec), storage_module.__file__],
        **popen_kwargs,
    )


def _spec(request, kind: str, tmp_path: pathlib.Path) -> str | None:
    if kind == "sqlite":
        return None  # the default: study_dir/study.db
    if kind == "journal":
        return f"journal:{tmp_path}/study.log"
    return request.getfixturevalue("postgres_url")


# --- URLs and passwords -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://me:secret@db:5432/optuna", "postgresql://me:***@db:5432/optuna"),
        ("postgresql+psycopg2://me:s3cr:et@db/optuna", "postgresql+psycopg2://me:***@db/optuna"),
        ("mysql://me:p@ss@db/optuna?charset=utf8", "mysql://me:***@db/optuna?charset=utf8"),
        (
            "postgresql://db/optuna?user=me&password=secret",
            "postgresql://db/optuna?user=me&password=***",
        ),
        ("mysql://me:pa/ss@db/optuna", "mysql://me:***@db/optuna"),
        (
            "postgresql://me:pw@db/optuna?application_name=a@b",
            "postgresql://me:***@db/optuna?application_name=a@b",
        ),
        ("postgresql://me@db/optuna", "postgresql://me@db/optuna"),
        ("sqlite:////tmp/study.db", "sqlite:////tmp/study.db"),
        ("journal:/tmp/study.log", "journal:/tmp/study.log"),
    ],
)
def test_mask_url_hides_the_password_and_nothing_else(url, expected):
    assert mask_url(url) == expected


@pytest.mark.parametrize(
    ("storage", "error", "match"),
    [
        ("postgres://me:secret@db/optuna", ValueError, r"needs 'postgresql://'"),
        ("oracle://me:secret@db/optuna", ValueError, r"database 'oracle'.*accepts"),
        ("redis://me:secret@db", ValueError, r"database 'redis'"),
        ("study", ValueError, r"'study' is not understood\. Accepted: None"),
        ("journal:", ValueError, r"names no file"),
        (42, TypeError, r"`storage` must be a string.*but got int"),
    ],
)
def test_bad_storages_fail_with_what_is_accepted_and_no_password(tmp_path, storage, error, match):
    with pytest.raises(error, match=match) as info:
        resolve_storage(storage, tmp_path)
    assert "secret" not in str(info.value)
    with pytest.raises(error, match=match):
        check_storage(storage)


def test_unreachable_database_fails_without_printing_the_password(tmp_path):
    url = "postgresql://me:hunter2@127.0.0.1:1/optuna"  # port 1: connection refused at once
    with pytest.raises(
        ConnectionError, match=r"postgresql\+psycopg2://me:\*\*\*@127\.0\.0\.1:1"
    ) as info:
        resolve_storage(url, tmp_path)
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in describe_storage(url)


def test_a_password_in_the_drivers_error_text_is_masked(tmp_path):
    # libpq echoes a bad option value; here it is the password (no network is touched)
    url = "postgresql://me:hunter2@127.0.0.1:1/optuna?sslmode=hunter2"
    with pytest.raises(ConnectionError, match=r'invalid sslmode value: "\*\*\*"') as info:
        resolve_storage(url, tmp_path)
    driver_text = str(info.value).split(": ", 1)[1]
    assert "hunter2" not in driver_text


def test_check_storage_validates_without_opening_anything(tmp_path):
    check_storage(str(tmp_path / "sub" / "study.db"))
    check_storage(f"journal:{tmp_path}/sub/study.log")
    check_storage("postgresql://me:secret@127.0.0.1:1/optuna")  # no connection attempted
    assert not (tmp_path / "sub").exists()


# --- kinds of storage ---------------------------------------------------------------------


def test_default_is_a_wal_sqlite_file_in_the_study_dir_and_persists(tmp_path):
    study_dir = tmp_path / "runs" / "my-study"
    storage = resolve_storage(None, study_dir)
    assert isinstance(storage, RDBStorage)
    assert not heartbeat_enabled(storage)
    assert describe_storage(storage) == f"sqlite:///{(study_dir / 'study.db').resolve()}"
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(_objective, n_trials=2)
    with sqlite3.connect(study_dir / "study.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # every connection of the storage skips the fsync per commit (1 = NORMAL; sqlite's own
    # default, which a plain connection shows, is 2 = FULL)
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    with sqlite3.connect(study_dir / "study.db") as connection:
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2
    again = optuna.load_study(study_name="s", storage=resolve_storage(None, study_dir))
    assert [t.params for t in again.trials] == [t.params for t in study.trials]


def test_sqlite_path_and_url_open_the_same_file(tmp_path):
    first = resolve_storage(str(tmp_path / "a.sqlite"), tmp_path)
    optuna.create_study(study_name="s", storage=first).optimize(_objective, n_trials=1)
    second = resolve_storage(f"sqlite:///{tmp_path / 'a.sqlite'}", tmp_path)
    assert len(optuna.load_study(study_name="s", storage=second).trials) == 1


def test_memory_storages(tmp_path):
    assert isinstance(resolve_storage("memory", tmp_path), InMemoryStorage)
    assert isinstance(resolve_storage(":memory:", tmp_path), InMemoryStorage)
    with pytest.raises(ValueError, match=r"in-memory and cannot be shared between processes"):
        resolve_storage("memory", tmp_path, in_memory_ok=False)
    with pytest.raises(ValueError, match=r"in-memory SQLite database that other processes"):
        resolve_storage("sqlite:///:memory:", tmp_path, in_memory_ok=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["journal:{d}/j/study.txt", "{d}/study.log", "{d}/study.jsonl"])
def test_journal_files_persist(tmp_path, name):
    spec = name.format(d=tmp_path)
    storage = resolve_storage(spec, tmp_path)
    assert isinstance(storage, JournalStorage)
    optuna.create_study(study_name="s", storage=storage).optimize(_objective, n_trials=2)
    reopened = optuna.load_study(study_name="s", storage=resolve_storage(spec, tmp_path))
    assert [t.state for t in reopened.trials] == [TrialState.COMPLETE] * 2


def test_a_storage_object_is_used_as_is(tmp_path):
    storage = InMemoryStorage()
    assert resolve_storage(storage, tmp_path) is storage


# --- heartbeat settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"heartbeat_interval": 0},
            ValueError,
            r"`heartbeat_interval` must be an int \(seconds\) >= 1, but got heartbeat_interval=0",
        ),
        ({"heartbeat_interval": 1.5}, TypeError, r"`heartbeat_interval` must be an int"),
        ({"heartbeat_interval": True}, TypeError, r"`heartbeat_interval` must be an int"),
        ({"grace_period": 5}, ValueError, r"`grace_period`=5 needs `heartbeat_interval`"),
        (
            {"heartbeat_interval": 5, "grace_period": 5},
            ValueError,
            r"must be > `heartbeat_interval`",
        ),
        (
            {"heartbeat_interval": 5, "max_retry": -1},
            ValueError,
            r"`max_retry` must be an int >= 0",
        ),
    ],
)
def test_bad_heartbeat_settings(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        resolve_storage(None, tmp_path, **kwargs)


@pytest.mark.parametrize("spec", ["memory", "journal:{d}/study.log", "sqlite:///:memory:"])
def test_a_heartbeat_needs_a_persistent_rdb_storage(tmp_path, spec):
    with pytest.raises(ValueError, match=r"`heartbeat_interval`=5 needs a.*no heartbeat"):
        resolve_storage(spec.format(d=tmp_path), tmp_path, heartbeat_interval=5)


def test_the_default_storage_with_a_heartbeat_is_the_study_db(tmp_path):
    storage = resolve_storage(
        None, tmp_path, in_memory_ok=False, heartbeat_interval=3, grace_period=7
    )
    assert isinstance(storage, RDBStorage)
    assert (storage.heartbeat_interval, storage.grace_period) == (3, 7)
    assert heartbeat_enabled(storage)
    assert describe_storage(storage) == describe_storage(resolve_storage(None, tmp_path))


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgresql_url_opens_an_rdb_storage_and_hides_the_password(postgres_url, tmp_path):
    password = postgres_url.split(":")[2].split("@")[0]
    storage = resolve_storage(postgres_url, tmp_path, heartbeat_interval=5)
    assert isinstance(storage, RDBStorage) and heartbeat_enabled(storage)
    assert password not in describe_storage(storage) and "***" in describe_storage(storage)
    study = optuna.create_study(study_name="pg", storage=storage, direction="minimize")
    study.optimize(_objective, n_trials=2)
    reopened = optuna.load_study(study_name="pg", storage=resolve_storage(postgres_url, tmp_path))
    assert [t.intermediate_values for t in reopened.trials] == [
        t.intermediate_values for t in study.trials
    ]


@pytest.mark.postgres
def test_a_connection_the_server_dropped_is_replaced_not_an_error(postgres_url, tmp_path):
    # a long sweep outlives idle connections (server restart, NAT timeout): the pool checks a
    # connection before using it and opens a new one
    import psycopg2
    from sqlalchemy.engine import make_url

    name = f"lt_drop_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url).update_query_dict({"application_name": name})
    storage = resolve_storage(url.render_as_string(hide_password=False), tmp_path)
    study = optuna.create_study(study_name="dropped", storage=storage)
    study.optimize(_objective, n_trials=1)
    admin = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname=url.database,
    )  # fmt: skip
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            )
            assert cursor.fetchall()  # the storage's pooled connection was dropped
    finally:
        admin.close()
    study.optimize(_objective, n_trials=1)
    assert len(study.trials) == 2


# --- several processes, crash recovery ----------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["sqlite", "journal", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_two_processes_on_one_study_lose_and_duplicate_nothing(request, tmp_path, kind):
    spec = _spec(request, kind, tmp_path)
    study = optuna.create_study(study_name="shared", storage=resolve_storage(spec, tmp_path))
    args = {"storage": spec, "study_dir": str(tmp_path), "study": "shared", "n_trials": 8}
    workers = [_worker(args) for _ in range(2)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 16
    assert sorted(t.number for t in trials) == list(range(16))
    for trial in trials:
        x, n = trial.params["x"], trial.params["n"]
        assert trial.state == TrialState.COMPLETE
        assert trial.value == pytest.approx(x * x + n)
        assert trial.intermediate_values == pytest.approx({s: x * s + n for s in range(3)})


@pytest.mark.parametrize(
    "kind", ["sqlite", "journal", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_enqueued_trials_run_exactly_once_under_concurrent_workers(request, tmp_path, kind):
    # Enqueued (WAITING) trials are what crash recovery retries and what `enqueue_trial`
    # queues: two workers must never both take the same one.
    spec = _spec(request, kind, tmp_path)
    name = f"queue-{uuid.uuid4().hex[:6]}"
    study = optuna.create_study(study_name=name, storage=resolve_storage(spec, tmp_path))
    n = 40
    for i in range(n):
        study.enqueue_trial({"x": i / 4 - 5, "n": 1})
    log = tmp_path / "started.txt"
    args = {
        "storage": spec,
        "study_dir": str(tmp_path),
        "study": name,
        "n_trials": n // 2,
        "log": str(log),
    }
    workers = [_worker(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [w.communicate(timeout=180)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    started = [int(line) for line in log.read_text().split()]
    assert sorted(started) == list(range(n))  # each queued trial ran once, none twice
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n
    assert sorted(t.params["x"] for t in trials) == [i / 4 - 5 for i in range(n)]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_killed_workers_trial_is_failed_and_retried_with_its_params(request, tmp_path, kind):
    spec = _spec(request, kind, tmp_path)
    name = f"crash-{uuid.uuid4().hex[:6]}"
    heartbeat = {"heartbeat_interval": 1, "grace_period": 2}
    storage = resolve_storage(spec, tmp_path, **heartbeat)
    study = optuna.create_study(study_name=name, storage=storage)
    args = {"storage": spec, "study_dir": str(tmp_path), "study": name, "n_trials": 1,
            "hang": True, "heartbeat": 1, "grace": 2}  # fmt: skip
    worker = _worker(args, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().split() == ["started", "0"]
        time.sleep(1.5)  # at least one heartbeat recorded
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    assert study.trials[0].state == TrialState.RUNNING  # nobody has noticed yet
    time.sleep(3.5)  # the heartbeat is now older than the grace period

    # Re-running the sweep: Optuna fails the stale trial and queues a copy of it first.
    study.optimize(_objective, n_trials=1)
    killed, retried = study.trials
    assert killed.state == TrialState.FAIL
    assert retried.state == TrialState.COMPLETE
    assert retried.params == killed.params
    assert retried.system_attrs["failed_trial"] == killed.number
    assert retried.value == pytest.approx(killed.params["x"] ** 2 + killed.params["n"])
