"""Storage files that never get worse: torn journals repaired, errors explained, schema races retried.

* A journal file whose last record is partial (the disk filled up, the machine lost power in the
  middle of a write) would make Optuna append the next record to the torn one, and the whole
  file unreadable. :func:`repair_journal` finds a torn last record before the file is opened,
  copies the file to ``<file>.torn-<time>.bak`` and trims the partial record, under Optuna's own
  journal lock; a journal damaged anywhere else is refused with the line number.
* :class:`StorageError`: a storage file that cannot be used (read-only directory, a parent that
  is a file, not a database, corrupted, disk full), with the path and what to do, raised before
  the file is changed.
* :func:`retry_schema_race`: two workers started at the same moment on a database that does not
  exist yet both create its tables; the loser sees ``already exists`` / a unique violation and
  simply opens the storage again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = [
    "StorageError",
    "journal_error",
    "repair_journal",
    "retry_schema_race",
    "sqlite_error",
    "storage_guard",
]

T = TypeVar("T")

#: Substrings of database errors raised when a concurrent worker created the schema first.
_SCHEMA_RACE = (
    "already exists",
    "unique constraint",
    "uniqueviolation",
    "duplicate key",
    "unique violation",
)


class StorageError(RuntimeError):
    """A storage file that cannot be used as it is; the message names the path and the fix.

    Example:
        >>> issubclass(StorageError, RuntimeError)
        True
    """


def _read_only_directory(directory: pathlib.Path) -> bool:
    """Whether ``directory`` exists on a file system mounted read-only (even root cannot write)."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _fix(path: pathlib.Path, text: str, err: BaseException) -> str:
    """What to do about a storage file ``path`` that failed with ``err`` (message ``text``)."""
    lowered = text.lower()
    read_only = _read_only_directory(path.parent)
    if read_only and (
        "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered
    ):
        fix = (
            f"Its directory {path.parent} is on a read-only file system: remount it writable "
            "or pick another path"
        )
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        fix = (
            "It is not a SQLite database (or it is damaged): pass another --storage path, or "
            "restore the file from a backup"
        )
    elif isinstance(err, PermissionError) or any(
        k in lowered for k in ("readonly", "read-only", "permission")
    ):
        fix = f"Its directory {path.parent} is not writable: make it writable or pick another path"
    elif (
        "disk is full" in lowered or "no space" in lowered or "database or disk is full" in lowered
    ):
        fix = "The disk is full: free some space and run the same command again"
    elif isinstance(err, (NotADirectoryError, FileExistsError)):
        fix = "A parent of the path is a file, not a directory: pick another path"
    elif "unable to open" in lowered:
        fix = f"Check that {path.parent} exists and is a writable directory, or pick another path"
    else:
        fix = "Check the path, its directory's permissions and the free disk space"
    return fix


def journal_error(path: pathlib.Path, err: BaseException) -> StorageError:
    """A :class:`StorageError` for a journal file ``path`` that failed with ``err``.

    Example:
        >>> print(journal_error(pathlib.Path("runs/x.log"), PermissionError("denied")))
        cannot use runs/x.log as a journal study storage: denied. Its directory runs is not writable: make it writable or pick another path (the file was not changed)
    """
    text = " ".join(str(err).split()) or type(err).__name__
    return StorageError(
        f"cannot use {path} as a journal study storage: {text}. {_fix(path, text, err)} (the "
        "file was not changed)"
    )


def sqlite_error(path: pathlib.Path, err: BaseException) -> StorageError:
    """A :class:`StorageError` for a SQLite file ``path`` that failed with ``err``.

    Example:
        >>> import sqlite3
        >>> print(sqlite_error(pathlib.Path("x.db"), sqlite3.DatabaseError("file is not a database")))
        cannot use x.db as a SQLite study storage: file is not a database. It is not a SQLite database (or it is damaged): pass another --storage path, or restore the file from a backup (the file was not changed)
    """
    text = " ".join(str(err).split()) or type(err).__name__
    fix = _fix(path, text, err)
    return StorageError(
        f"cannot use {path} as a SQLite study storage: {text}. {fix} (the file was not changed)"
    )


def _torn_tail(path: pathlib.Path) -> tuple[int, int] | None:
    """``(keep, lines)``: bytes to keep and complete records, if the last record is torn."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        lines = data.split(b"\n")[:-1] if data else []
        for number, line in enumerate(lines, start=1):
            try:
                json.loads(line)
            except ValueError:
                raise StorageError(
                    f"the journal file {path} is damaged at line {number} of {len(lines)} (not "
                    "a complete record), so the study cannot be read: restore the file from a "
                    "backup or start a new study with another storage path (the file was not "
                    "changed)"
                ) from None
        return None
    keep = data.rfind(b"\n") + 1
    return keep, data[:keep].count(b"\n")


def repair_journal(path: pathlib.Path) -> pathlib.Path | None:
    """Trim a torn last record of the journal file ``path``; return the backup, if one was made.

    Holds Optuna's journal lock, so a live worker's append is never mistaken for a torn record.

    Example:
        >>> import tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "study.log"
        >>> _ = path.write_text('{"op_code": 0}\\n{"op_co')
        >>> backup = repair_journal(path)  # and a message on stderr
        >>> path.read_text(), backup.read_text().endswith('{"op_co')
        ('{"op_code": 0}\\n', True)
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    if not lock.acquire():
        return None
    try:
        torn = _torn_tail(path)
        if torn is None:
            return None
        keep, records = torn
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}.bak")
        try:
            shutil.copy2(path, backup)
            with path.open("r+b") as f:
                f.truncate(keep)
        except OSError as err:
            raise StorageError(
                f"the journal file {path} ended with a partial record and could not be "
                f"repaired ({err}); free disk space or make it writable, then run again (the "
                "file was not changed)"
            ) from None
    finally:
        lock.release()
    print(
        f"lightning-tune: the journal file {path} ended with a partial record (an interrupted "
        f"write): trimmed it to its {records} complete records; the original is in {backup}",
        file=sys.stderr,
        flush=True,
    )
    return backup


def retry_schema_race(open_storage: Callable[[], T], attempts: int = 5) -> T:
    """``open_storage()``, again after a short random wait when a concurrent worker was creating
    the same database schema (tables or Alembic's version row ``already exist``).

    Example:
        >>> retry_schema_race(lambda: "opened")
        'opened'
    """
    for attempt in range(attempts):
        try:
            return open_storage()
        except Exception as err:
            text = f"{type(err).__name__} {err}".lower()
            if attempt == attempts - 1 or not any(s in text for s in _SCHEMA_RACE):
                raise
            time.sleep(0.2 + random.random() * 0.5)
    raise AssertionError("unreachable")  # pragma: no cover


def _storage_cause(err: BaseException) -> BaseException | None:
    """The innermost storage failure in ``err``'s chain (None if it is not one)."""
    found = None
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__
        if (
            module.startswith(("sqlite3", "sqlalchemy", "psycopg"))
            or type(current).__name__ == "StorageInternalError"
            or (
                isinstance(current, OSError)
                and current.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
            )
        ):
            found = current
        current = current.__cause__ or current.__context__
    return found


@contextlib.contextmanager
def storage_guard(description: str) -> Iterator[None]:
    """Turn a storage failure in the block (disk full, a lost database, Optuna's
    ``AssertionError: Should not reach`` that hides one) into a :class:`StorageError` that names
    the storage, the cause and what to do.

    Example:
        >>> import sqlite3
        >>> with storage_guard("sqlite:///x.db"):
        ...     raise sqlite3.OperationalError("database or disk is full")
        Traceback (most recent call last):
        ...
        lightning_tune.tuner.storage_files.StorageError: the study storage sqlite:///x.db failed: database or disk is full. The disk is full: free some space, then run the same command again (finished trials are kept, the interrupted trial is retried)
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        cause = _storage_cause(err)
        if cause is None:
            raise
        text = " ".join(str(cause).split()) or type(cause).__name__
        text = text.split(" [SQL:", 1)[0].split(" (Background on this error", 1)[0]
        lowered = text.lower()
        if (
            "full" in lowered
            or "no space" in lowered
            or getattr(cause, "errno", None)
            in (
                errno.ENOSPC,
                errno.EDQUOT,
            )
        ):
            fix = "The disk is full: free some space, then run the same command again"
        elif "read-only" in lowered or "readonly" in lowered:
            fix = "The storage became read-only: make it writable, then run the same command again"
        else:
            fix = "Check the storage (disk, server, network), then run the same command again"
        raise StorageError(
            f"the study storage {description} failed: {text}. {fix} (finished trials are kept, "
            "the interrupted trial is retried)"
        ) from err
