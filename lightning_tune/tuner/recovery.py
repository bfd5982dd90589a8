"""Crash recovery on every persistent storage: trials of dead workers are failed and retried.

A worker killed in the middle of a trial (SIGKILL, OOM, a lost machine) leaves that trial
RUNNING in the storage forever unless someone notices. Two mechanisms notice it:

* **RDB storages** (SQLite files, PostgreSQL, MySQL) use Optuna's own heartbeat: each running
  trial records a heartbeat every ``heartbeat_interval`` seconds (database clock), and
  ``optuna.storages.fail_stale_trials`` fails a trial whose heartbeat is older than
  ``grace_period``; the storage's retry callback queues a copy with the same parameters.
  A trial whose worker died between ``ask()`` and its first heartbeat has no heartbeat row, so
  Optuna never finds it stale. Such a trial is *adopted* once it started more than
  ``grace_period`` ago: a worker records one heartbeat for it (a live trial records its own
  anyway), after which it goes stale like any other. A dead trial is thus recovered at most
  two grace periods after it started.
* **Journal files** (Optuna's journal storage has no heartbeat): a *lease*. The worker running a
  trial renews the system attribute ``lightning_tune:lease`` (its wall clock) every
  ``heartbeat_interval`` seconds; a RUNNING trial whose lease, or, before the first renewal, whose
  start time, is older than ``grace_period`` is failed and retried with Optuna's
  ``RetryHeartbeatStaleTrialCallback``. The journal's workers share one machine or a network
  file system, so their clocks agree to far better than a grace period.

In-memory storages need neither: nothing outlives the process that runs their trials.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "ADOPTED_ATTR",
    "HEARTBEAT_INTERVAL",
    "LEASE_ATTR",
    "MAX_RETRY",
    "Recovery",
    "lease",
    "recover_stale_trials",
    "repeating",
]

#: Seconds between two heartbeats (or lease renewals) of a running trial, by default.
HEARTBEAT_INTERVAL = 10
#: How many times a trial of a dead worker is retried with its parameters, by default.
MAX_RETRY = 3
#: Trial system attribute holding the lease time (seconds since the epoch) on journal storages.
LEASE_ATTR = "lightning_tune:lease"
#: Trial system attribute set when a worker recorded a first heartbeat for a trial without one.
ADOPTED_ATTR = "lightning_tune:adopted"

RecoveryMode = Literal["heartbeat", "lease"]


@dataclass(frozen=True)
class Recovery:
    """How a study finds the trials of dead workers, and when.

    Args:
        mode: ``"heartbeat"`` (Optuna's, RDB storages) or ``"lease"`` (journal storages).
        heartbeat_interval: seconds between heartbeats (or lease renewals) of a running trial.
        grace_period: seconds without one after which a running trial counts as dead
            (None: ``2 * heartbeat_interval``, Optuna's default).
        max_retry: how often a dead trial is retried with its parameters (None: no limit).

    Example:
        >>> Recovery("lease", heartbeat_interval=10).grace
        20
        >>> Recovery.for_storage(optuna.storages.InMemoryStorage(), 10) is None
        True
    """

    mode: RecoveryMode
    heartbeat_interval: int
    grace_period: int | None = None
    max_retry: int | None = MAX_RETRY

    @property
    def grace(self) -> int:
        """The grace period in seconds, default applied."""
        return self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval

    @classmethod
    def for_storage(
        cls,
        storage: optuna.storages.BaseStorage,
        heartbeat_interval: int | None,
        grace_period: int | None = None,
        max_retry: int | None = MAX_RETRY,
    ) -> Recovery | None:
        """The recovery of ``storage``, or None when it is off or not needed.

        An RDB storage recovers when it was opened with a heartbeat (its own settings apply);
        a journal storage when ``heartbeat_interval`` is given; an in-memory storage never
        needs to (nothing outlives the process that runs its trials).
        """
        if isinstance(storage, RDBStorage):
            interval = storage.get_heartbeat_interval()
            if interval is None:
                return None
            return cls("heartbeat", interval, storage.grace_period, max_retry)
        if heartbeat_interval is None or isinstance(storage, InMemoryStorage):
            return None
        if isinstance(storage, JournalStorage):
            return cls("lease", heartbeat_interval, grace_period, max_retry)
        return None


def _study_id(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    return storage.get_study_id_from_name(study.study_name)


def _started(trial: FrozenTrial) -> float | None:
    return trial.datetime_start.timestamp() if trial.datetime_start is not None else None


def recover_stale_trials(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    recovery: Recovery,
) -> list[int]:
    """Fail the trials of dead workers and queue their retries; return the failed numbers.

    Safe to call from many workers at once: a trial is failed (and retried) by one of them only.

    Example:
        >>> import tempfile
        >>> storage = optuna.storages.JournalStorage(
        ...     optuna.storages.journal.JournalFileBackend(tempfile.mktemp(suffix=".log")))
        >>> study = optuna.create_study(storage=storage)
        >>> recover_stale_trials(study, storage, Recovery("lease", 1))
        []
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if recovery.mode == "heartbeat":
            before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
            optuna.storages.fail_stale_trials(study)
            _adopt_trials_without_heartbeat(study, storage, recovery)  # type: ignore[arg-type]
            after = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            return sorted({t.number for t in after} - before)
        return _expire_leases(study, storage, recovery)


def _adopt_trials_without_heartbeat(
    study: optuna.Study, storage: RDBStorage, recovery: Recovery
) -> None:
    now = time.time()
    study_id = None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = _started(trial)
        if trial.system_attrs.get(ADOPTED_ATTR) or started is None:
            continue
        if now - started <= recovery.grace:
            continue
        study_id = study_id if study_id is not None else _study_id(study, storage)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_system_attr(trial_id, ADOPTED_ATTR, now)
            storage.record_heartbeat(trial_id)


def _expire_leases(
    study: optuna.Study, storage: optuna.storages.BaseStorage, recovery: Recovery
) -> list[int]:
    now = time.time()
    failed = []
    study_id = None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        renewed = trial.system_attrs.get(LEASE_ATTR, _started(trial))
        if renewed is None or now - float(renewed) <= recovery.grace:
            continue
        study_id = study_id if study_id is not None else _study_id(study, storage)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        failed.append(trial.number)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=recovery.max_retry)
        retry(study, storage.get_trial(trial_id))
    return failed


@contextlib.contextmanager
def lease(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trial_number: int,
    interval: float,
) -> Iterator[None]:
    """Renew the lease of a running trial every ``interval`` seconds while the block runs.

    Example:
        >>> storage = optuna.storages.InMemoryStorage()
        >>> study = optuna.create_study(storage=storage)
        >>> trial = study.ask()
        >>> with lease(study, storage, trial.number, interval=60):
        ...     pass
        >>> LEASE_ATTR in study.trials[0].system_attrs
        True
    """
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        _study_id(study, storage), trial_number
    )

    def renew() -> None:
        # A missed renewal (the trial just finished, a busy file) is retried next time.
        with contextlib.suppress(Exception):
            storage.set_trial_system_attr(trial_id, LEASE_ATTR, time.time())

    storage.set_trial_system_attr(trial_id, LEASE_ATTR, time.time())
    with repeating(renew, interval, name=f"lease-trial-{trial_number}"):
        yield


@contextlib.contextmanager
def repeating(action: Callable[[], None], interval: float, name: str) -> Iterator[None]:
    """Call ``action`` every ``interval`` seconds in a daemon thread while the block runs.

    Example:
        >>> calls = []
        >>> with repeating(lambda: calls.append(1), 0.01, name="demo"):
        ...     time.sleep(0.2)
        >>> len(calls) >= 1
        True
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            action()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def add_recovery_options(
    parser: Any, *, interval_default: int | None, max_retry: bool = False
) -> None:
    """``--heartbeat-interval`` and ``--grace-period`` (and ``--max-retry``) on a command.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser()
        >>> add_recovery_options(parser, interval_default=10, max_retry=True)
        >>> args = parser.parse_args(["--grace-period", "30"])
        >>> args.heartbeat_interval, args.grace_period, args.max_retry
        (10, 30, 3)
    """
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        default=interval_default,
        help="seconds between heartbeats of a running trial (default 10; 0 turns crash "
        "recovery off); works on every storage: Optuna's heartbeat on SQLite and database "
        "servers, a lease on journal files",
    )
    parser.add_argument(
        "--grace-period",
        type=int,
        default=None,
        help="seconds without heartbeat before a running trial counts as dead "
        "(default 2x the interval)",
    )
    if max_retry:
        parser.add_argument(
            "--max-retry", type=int, default=3, help="retries of a dead worker's trial (default 3)"
        )
