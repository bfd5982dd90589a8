"""Where a study lives: SQLite in the study directory by default, a journal file, or a database.

Every storage here is one of Optuna's own (``RDBStorage``, ``JournalStorage``,
``InMemoryStorage``); this module only picks the settings that make them work well:

* ``None``: the SQLite file ``study_dir/study.db`` in WAL mode (``synchronous=NORMAL``: no fsync
  per commit, still safe when a worker is killed) with a long busy timeout, so the
  same file serves one process or several worker processes on one machine.
* ``"memory"`` / ``":memory:"``: Optuna's in-memory storage (one process, gone when it ends).
* ``"journal:<path>"`` or a path ending ``.log`` / ``.jsonl``: a journal file
  (``JournalStorage(JournalFileBackend(path))``). Optuna's journal storage has no heartbeat:
  the tuner recovers its dead workers' trials through a lease instead
  (:mod:`lightning_tune.tuner.recovery`).
* a path ending ``.db`` / ``.sqlite`` / ``.sqlite3``, or a SQLAlchemy URL ``sqlite:///...``,
  ``postgresql://...``, ``mysql://...``: an ``RDBStorage``.

Crash recovery (``heartbeat_interval=``, see :func:`heartbeat_settings`) uses Optuna's heartbeat: a running trial records a
heartbeat every ``heartbeat_interval`` seconds; a trial whose heartbeat is older than
``grace_period`` is marked FAIL by the next worker that starts a trial, and Optuna's
``RetryHeartbeatStaleTrialCallback`` (``RetryFailedTrialCallback`` before Optuna 4.9) queues a
copy with the same parameters.

Why SQLite (WAL) and not the journal file is the default for several workers on one machine:
both keep every trial under two concurrent processes (measured, see
``docs/benchmarks/workers.md``); with two processes writing, the journal file costs less per
trial (~35 ms vs ~65 ms for a trial with 10 reports, at low load), but only an RDB storage has
Optuna's heartbeat, and a trial costs seconds of training, so crash recovery is worth far more
than tens of milliseconds.

Database passwords are never printed: every message and :func:`describe_storage` go through
:func:`mask_url`.
"""

from __future__ import annotations

import pathlib
import random
import re
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import optuna
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage

from lightning_tune._validation import check_int, check_optional
from lightning_tune.tuner.recovery import MAX_RETRY
from lightning_tune.tuner.storage_files import (
    StorageError,
    journal_error,
    repair_journal,
    retry_schema_race,
    sqlite_error,
)

if TYPE_CHECKING:
    import sqlalchemy.engine

__all__ = [
    "ACCEPTED_STORAGES",
    "SQLITE_TIMEOUT_S",
    "StorageSpec",
    "check_storage",
    "describe_storage",
    "heartbeat_enabled",
    "heartbeat_settings",
    "mask_url",
    "resolve_storage",
]

StorageSpec = str | optuna.storages.BaseStorage | None

#: Seconds a SQLite connection waits for a lock held by another worker before it fails.
SQLITE_TIMEOUT_S = 60.0

_MEMORY = ("memory", ":memory:")
_JOURNAL_PREFIX = "journal:"
_JOURNAL_SUFFIXES = (".log", ".jsonl")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
# Dialects Optuna's RDBStorage supports, with the driver package a user has to install.
_DIALECTS = {
    "sqlite": "(built in)",
    "postgresql": "psycopg2-binary (or psycopg)",
    "mysql": "PyMySQL (or mysqlclient)",
}

# Drivers tried, in order, for a URL that names none ('postgresql://...').
_DRIVERS = {"postgresql": ("psycopg2", "psycopg", "pg8000"), "mysql": ("pymysql", "mysqldb")}

#: What ``storage=`` accepts, for error messages and the command line help.
ACCEPTED_STORAGES = (
    "None (SQLite file study.db in the study directory), 'memory', 'journal:<path>', a file "
    "path ending .db/.sqlite/.sqlite3 (SQLite) or .log/.jsonl (journal), a SQLAlchemy URL "
    "'sqlite:///path.db', 'postgresql://user:password@host:5432/db' or "
    "'mysql://user:password@host/db', or an optuna.storages.BaseStorage"
)


def mask_url(url: str) -> str:
    """The URL with its password (in the user part or a ``password=`` query) replaced by ``***``.

    Works on strings that are not valid URLs too, so it is safe to use in error messages.

    Example:
        >>> mask_url("postgresql://me:secret@db:5432/optuna")
        'postgresql://me:***@db:5432/optuna'
        >>> mask_url("postgresql+psycopg2://me:p@ss:w@rd@db/optuna?sslmode=require")
        'postgresql+psycopg2://me:***@db/optuna?sslmode=require'
        >>> mask_url("postgresql://db/optuna?user=me&password=secret")
        'postgresql://db/optuna?user=me&password=***'
        >>> mask_url("mysql://me:a/b@db/optuna")
        'mysql://me:***@db/optuna'
        >>> mask_url("sqlite:///study.db")
        'sqlite:///study.db'
    """
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    match = _URL.match(url)
    if match:
        rest = url[match.end() :]
        # Percent-encoding is often forgotten: a password may hold '@', ':' or even '/', so
        # the user part ends at the last '@' before the query.
        before_query = re.match(r"[^?#]*", rest).group()
        if "@" in before_query:
            userinfo, after = rest[: before_query.rfind("@")], rest[before_query.rfind("@") :]
            if ":" in userinfo:
                url = url[: match.end()] + userinfo.split(":", 1)[0] + ":***" + after
    return re.sub(r"(?i)([?&;](?:password|passwd|pwd)=)[^&;#]*", r"\1***", url)


def describe_storage(storage: optuna.storages.BaseStorage | str) -> str:
    """A short, password-free description of a storage for logs and reports.

    Example:
        >>> describe_storage("postgresql://me:secret@db/optuna")
        'postgresql://me:***@db/optuna'
        >>> describe_storage(optuna.storages.InMemoryStorage())
        'in-memory'
    """
    if isinstance(storage, str):
        return mask_url(storage)
    if isinstance(storage, RDBStorage):
        return mask_url(str(storage.url))
    if isinstance(storage, InMemoryStorage):
        return "in-memory"
    if isinstance(storage, JournalStorage):
        return "journal"
    return type(storage).__name__


def heartbeat_enabled(storage: optuna.storages.BaseStorage | str) -> bool:
    """Whether ``storage`` records heartbeats, i.e. dead workers' trials are detected.

    Example:
        >>> heartbeat_enabled(optuna.storages.InMemoryStorage())
        False
    """
    return isinstance(storage, RDBStorage) and storage.heartbeat_interval is not None


def _retry_callback(max_retry: int | None) -> tuple[str, Any]:
    """Optuna's retry callback and the RDBStorage keyword it goes to (renamed in Optuna 4.9)."""
    new = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if new is not None:
        return "heartbeat_stale_trial_callback", new(max_retry=max_retry)
    return "failed_trial_callback", optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)


def _check_heartbeat(
    heartbeat_interval: int | None, grace_period: int | None, max_retry: int | None
) -> None:
    for name, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
        check_optional(check_int, name, value, minimum=1, what="an int (seconds)")
    if grace_period is not None and heartbeat_interval is None:
        raise ValueError(
            f"`grace_period`={grace_period} needs `heartbeat_interval` (crash recovery is off "
            "without a heartbeat)"
        )
    if (
        heartbeat_interval is not None
        and grace_period is not None
        and grace_period <= heartbeat_interval
    ):
        raise ValueError(
            f"`grace_period` must be > `heartbeat_interval`, but got grace_period={grace_period}, "
            f"heartbeat_interval={heartbeat_interval} (a live trial would be failed)"
        )
    check_optional(check_int, "max_retry", max_retry, minimum=0, type_error=ValueError)


class _SQLiteConnection(sqlite3.Connection):
    """The sqlite3 connection of our SQLite storages: ``synchronous=NORMAL``.

    No fsync on every commit: in WAL mode still safe against a crashed or killed worker
    (committed trials stay); only an operating-system crash or power loss can lose the last
    commits, never corrupt the file. Each write of a trial is about 20 % cheaper.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA synchronous=NORMAL")


def _begin_immediate(connection: sqlalchemy.engine.Connection) -> None:
    """Start every transaction with ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe for pysqlite).

    Python's sqlite3 otherwise runs a transaction's reads outside the transaction and only
    begins it at the first write, so two workers could both read an enqueued (WAITING) trial
    as free and both run it (the second ``tell`` then fails with "Cannot tell a COMPLETE
    trial"); crash recovery retries trials by enqueuing them. Registered on a storage's engine
    after Optuna has set the storage up (its set-up nests two connections, which serialised
    transactions would deadlock).
    """
    dbapi_connection = connection.connection.dbapi_connection
    dbapi_connection.isolation_level = None  # type: ignore[union-attr]  # no implicit BEGIN
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_file(path: pathlib.Path) -> str:
    """Create ``path``'s directory, switch the database to WAL, return its SQLAlchemy URL."""
    path = path.expanduser().resolve()
    deadline = time.monotonic() + SQLITE_TIMEOUT_S
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _switch_to_wal(path)
            return f"sqlite:///{path}"
        except sqlite3.OperationalError as err:
            # Two workers switching a new file to WAL at the same moment: SQLite refuses one
            # at once ("database is locked", no busy wait: it would deadlock); a moment later
            # the file is in WAL and the switch is a no-op.
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise sqlite_error(path, err) from None
            time.sleep(0.05 + random.random() * 0.1)
        except (sqlite3.Error, OSError) as err:
            raise sqlite_error(path, err) from None


def _switch_to_wal(path: pathlib.Path) -> None:
    # WAL lets readers run while one worker writes; the mode is stored in the file, so every
    # later connection (any process) uses it.
    with sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S) as connection:
        connection.execute("PRAGMA journal_mode=WAL").fetchall()
        if path.stat().st_size:  # an existing file: readable as a database at all?
            connection.execute("PRAGMA quick_check(1)").fetchall()
    connection.close()


def _journal(path: pathlib.Path) -> JournalStorage:
    """Open a journal file, repairing a torn last record first (see ``storage_files``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_journal(path)
        return JournalStorage(JournalFileBackend(str(path)))
    except StorageError:
        raise
    except (OSError, ValueError) as err:
        raise journal_error(path, err) from None


def _rdb(
    url: str,
    heartbeat_interval: int | None,
    grace_period: int | None,
    max_retry: int | None,
) -> RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {
            "timeout": SQLITE_TIMEOUT_S,
            "factory": _SQLiteConnection,
        }
    else:
        # Long sweeps outlive idle database connections (server restarts, NAT timeouts).
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs}
    if heartbeat_interval is not None:
        with _quiet_experimental():
            key, callback = _retry_callback(max_retry)
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        kwargs[key] = callback
    import sqlalchemy.event  # imported here: only RDB storages need it (~0.2 s)
    import sqlalchemy.exc

    try:
        with _quiet_experimental():
            # Two workers on a database that does not exist yet both create its schema.
            storage = retry_schema_race(lambda: RDBStorage(url, **kwargs))
    except sqlalchemy.exc.SQLAlchemyError as err:
        message = str(err).split("\n(Background on this error", 1)[0]
        password = _password(url)
        if password:
            message = message.replace(password, "***")
        raise ConnectionError(
            f"cannot open the Optuna storage {mask_url(url)}: {message}"
        ) from None
    if url.startswith("sqlite"):
        sqlalchemy.event.listen(storage.engine, "begin", _begin_immediate)
    return storage


class _quiet_experimental:
    """Silence Optuna's ExperimentalWarning for the heartbeat arguments we chose on purpose."""

    def __enter__(self) -> None:
        import warnings

        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    def __exit__(self, *exc: object) -> None:
        self._catcher.__exit__(*exc)


def _password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password
    except Exception:
        return None


class _Plan(NamedTuple):
    """What :func:`resolve_storage` will open: the kind of storage and its target."""

    kind: Literal["object", "memory", "journal", "sqlite", "url"]
    target: Any  # the storage object, a path (journal, sqlite), a URL, or None (memory)


def _check_url(storage: str, in_memory_ok: bool) -> _Plan:
    """Validate a SQLAlchemy URL without connecting: ``("sqlite", path)`` or ``("url", url)``."""
    from sqlalchemy.engine import make_url

    scheme = _URL.match(storage)
    assert scheme is not None
    dialect = scheme.group("scheme").split("+", 1)[0].lower()
    if dialect == "postgres":
        raise ValueError(
            f"`storage`={mask_url(storage)!r}: SQLAlchemy needs 'postgresql://', not 'postgres://'"
        )
    if dialect not in _DIALECTS:
        raise ValueError(
            f"`storage`={mask_url(storage)!r} has the database {dialect!r}; Optuna's RDB "
            f"storage accepts {', '.join(repr(d + '://') for d in _DIALECTS)}. Accepted: "
            f"{ACCEPTED_STORAGES}"
        )
    try:
        url = make_url(storage)
    except Exception:
        raise ValueError(
            f"`storage`={mask_url(storage)!r} is not a valid database URL; expected e.g. "
            "'postgresql://user:password@host:5432/db' or 'sqlite:////abs/path/study.db'"
        ) from None
    drivers = [url.drivername]
    if "+" not in url.drivername:
        # SQLAlchemy's default driver for a bare 'postgresql://' changed (psycopg2 -> psycopg 3
        # in SQLAlchemy 2.1): use whichever driver is installed, as a user would expect.
        drivers += [f"{dialect}+{driver}" for driver in _DRIVERS.get(dialect, ())]
    for drivername in drivers:
        try:
            url.set(drivername=drivername).get_dialect().import_dbapi()
        except ImportError:
            continue
        if drivername != url.drivername:
            storage = url.set(drivername=drivername).render_as_string(hide_password=False)
        break
    else:
        raise ImportError(
            f"`storage`={mask_url(storage)!r} needs the database driver for "
            f"{url.drivername!r}: pip install {_DIALECTS[dialect]}"
        )
    if dialect == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            if not in_memory_ok:
                raise ValueError(
                    f"`storage`={storage!r} is an in-memory SQLite database that other "
                    "processes cannot see; use a file ('sqlite:////abs/path/study.db') or a "
                    "database server URL"
                )
            return _Plan("url", storage)
        return _Plan("sqlite", database)
    return _Plan("url", storage)


def _plan(
    storage: StorageSpec,
    study_dir: pathlib.Path | str,
    in_memory_ok: bool,
    heartbeat_interval: int | None,
    grace_period: int | None,
    max_retry: int | None,
) -> _Plan:
    """Check ``storage`` and say what to open, without touching any file or server."""
    _check_heartbeat(heartbeat_interval, grace_period, max_retry)
    if isinstance(storage, optuna.storages.BaseStorage):
        return _Plan("object", storage)
    if isinstance(storage, pathlib.PurePath):
        storage = str(storage)
    if storage is not None and not isinstance(storage, str):
        raise TypeError(
            f"`storage` must be a string, a path, None or an optuna BaseStorage, but got "
            f"{type(storage).__name__}. Accepted: {ACCEPTED_STORAGES}"
        )
    no_heartbeat = (
        f"`heartbeat_interval`={heartbeat_interval} needs an RDB storage (SQLite file, "
        f"PostgreSQL, MySQL), but got storage={mask_url(str(storage))!r}: Optuna's journal and "
        "in-memory storages have no heartbeat, so dead workers' trials cannot be detected"
    )
    if storage is None:
        return _Plan("sqlite", pathlib.Path(study_dir) / "study.db")
    if storage in _MEMORY:
        if not in_memory_ok:
            raise ValueError(
                f"`storage`={storage!r} is in-memory and cannot be shared between processes; "
                "use None (SQLite in the study directory), a journal file or a database URL"
            )
        if heartbeat_interval is not None:
            raise ValueError(no_heartbeat)
        return _Plan("memory", None)
    if storage.startswith(_JOURNAL_PREFIX) or (
        not _URL.match(storage) and storage.endswith(_JOURNAL_SUFFIXES)
    ):
        path_text = storage.removeprefix(_JOURNAL_PREFIX)
        if not path_text:
            raise ValueError(
                f"`storage`={storage!r} names no file; expected 'journal:<path>', e.g. "
                "'journal:sweeps/study.log'"
            )
        if heartbeat_interval is not None:
            raise ValueError(no_heartbeat)
        return _Plan("journal", pathlib.Path(path_text))
    if not _URL.match(storage):
        if storage.endswith(_SQLITE_SUFFIXES):
            return _Plan("sqlite", pathlib.Path(storage))
        raise ValueError(
            f"`storage`={mask_url(storage)!r} is not understood. Accepted: {ACCEPTED_STORAGES}"
        )
    kind, target = _check_url(storage, in_memory_ok)
    if kind == "url" and heartbeat_interval is not None and target.startswith("sqlite"):
        raise ValueError(no_heartbeat.replace("needs an RDB storage", "needs a persistent storage"))
    return _Plan(kind, pathlib.Path(target) if kind == "sqlite" else target)


def check_storage(
    storage: StorageSpec,
    *,
    in_memory_ok: bool = True,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = MAX_RETRY,
) -> None:
    """Raise the error :func:`resolve_storage` would raise, without opening anything.

    For a constructor that must fail early on a bad ``storage`` but open it later.

    Example:
        >>> check_storage("postgresql://me:secret@db/optuna")
        >>> check_storage("memory", in_memory_ok=False)
        Traceback (most recent call last):
        ...
        ValueError: `storage`='memory' is in-memory and cannot be shared between processes; use None (SQLite in the study directory), a journal file or a database URL
    """
    _plan(storage, ".", in_memory_ok, heartbeat_interval, grace_period, max_retry)


def heartbeat_settings(
    storage: StorageSpec,
    heartbeat_interval: int | None,
    grace_period: int | None = None,
    max_retry: int | None = MAX_RETRY,
) -> dict[str, Any]:
    """The heartbeat keywords of :func:`resolve_storage` for ``storage``: all three settings
    for a storage that has Optuna's heartbeat (a SQLite file or a database server), none for the
    others (journal files recover through a lease instead, see
    :mod:`lightning_tune.tuner.recovery`; in-memory storages need no recovery; a storage object
    keeps its own settings). ``heartbeat_interval=None`` turns crash recovery off.

    Example:
        >>> heartbeat_settings("sweeps/study.db", 10)
        {'heartbeat_interval': 10, 'grace_period': None, 'max_retry': 3}
        >>> heartbeat_settings("journal:sweeps/study.log", 10)
        {}
    """
    _check_heartbeat(heartbeat_interval, grace_period, max_retry)
    if heartbeat_interval is None:
        return {}
    kind, target = _plan(storage, ".", True, None, None, None)
    if kind == "sqlite" or (kind == "url" and not str(target).startswith("sqlite")):
        return {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "max_retry": max_retry,
        }
    return {}


def resolve_storage(
    storage: StorageSpec,
    study_dir: pathlib.Path | str,
    *,
    in_memory_ok: bool = True,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = MAX_RETRY,
) -> optuna.storages.BaseStorage:
    """The Optuna storage for a study whose files live in ``study_dir``.

    Args:
        storage: ``None`` (SQLite file ``study_dir/study.db``), ``"memory"``,
            ``"journal:<path>"``, a ``.db``/``.sqlite``/``.log``/``.jsonl`` path, a SQLAlchemy
            URL (``sqlite://``, ``postgresql://``, ``mysql://``) or a ready storage object, which
            is returned unchanged.
        study_dir: Directory for the default SQLite file (created when needed).
        in_memory_ok: ``False`` when several processes must share the study: in-memory
            storages are then refused.
        heartbeat_interval: Seconds between heartbeats of a running trial; turns on crash
            recovery (RDB storages only: SQLite, PostgreSQL, MySQL). ``None`` turns it off.
        grace_period: Seconds without a heartbeat after which a running trial counts as
            dead (default: Optuna's ``2 * heartbeat_interval``).
        max_retry: How many times a dead worker's trial is re-queued with the same
            parameters (``None``: without limit).

    Returns:
        An Optuna storage: ``RDBStorage``, ``JournalStorage`` or ``InMemoryStorage``.

    Raises:
        TypeError: ``storage`` or a heartbeat setting has the wrong type.
        ValueError: an unknown storage string (the message masks any password), an in-memory
            storage with ``in_memory_ok=False``, or a heartbeat on a storage without one.
        ImportError: the database driver for the URL is not installed.
        ConnectionError: the database cannot be opened (message without the password).

    Example:
        >>> import tempfile
        >>> study_dir = pathlib.Path(tempfile.mkdtemp())
        >>> storage = resolve_storage(None, study_dir)
        >>> describe_storage(storage).endswith("study.db"), heartbeat_enabled(storage)
        (True, False)
        >>> heartbeat_enabled(resolve_storage(None, study_dir, heartbeat_interval=5))
        True
        >>> type(resolve_storage("memory", study_dir)).__name__
        'InMemoryStorage'
        >>> type(resolve_storage(f"journal:{study_dir}/study.log", study_dir)).__name__
        'JournalStorage'
        >>> resolve_storage("postgres://me:secret@db/optuna", study_dir)
        Traceback (most recent call last):
        ...
        ValueError: `storage`='postgres://me:***@db/optuna': SQLAlchemy needs 'postgresql://', not 'postgres://'
    """
    kind, target = _plan(
        storage, study_dir, in_memory_ok, heartbeat_interval, grace_period, max_retry
    )
    if kind == "object":
        return target
    if kind == "memory":
        return InMemoryStorage()
    if kind == "journal":
        return _journal(target.expanduser().resolve())
    url = _sqlite_file(target) if kind == "sqlite" else target
    return _rdb(url, heartbeat_interval, grace_period, max_retry)
