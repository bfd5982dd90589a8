"""The worker loop: run a study's trials in this process until it has ``n_trials`` finished.

:func:`run_worker` is what ``Tuner.run``, each process of
:func:`~lightning_tune.tuner.workers.run_workers` and ``lightning-tune worker`` execute. It
depends on the study, its storage and the tuner's objective only (not on how the tuner was
built), so the tuner, the process pool and the command line all import it and nothing here
imports them.

* **Exactly n_trials**: a worker only starts a trial when the finished plus running trials are
  fewer than ``n_trials``. Two workers may still ask for the last slot at the same moment; the
  trial with the higher number then steps back at once (FAIL, user attribute ``surplus``,
  nothing trained), so the study never holds more than ``n_trials`` finished trials.
* **Crash recovery**: before each trial the worker fails the trials of dead workers (stale
  heartbeat or lease, :mod:`lightning_tune.tuner.recovery`); Optuna's retry callback queues a
  copy with the same parameters, which runs first.
* **Failures of a trial's own**: recorded FAIL with the message in ``fail_reason``; the worker
  goes on, and stops after ``max_consecutive_failures`` of the same error type.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.trial import TrialState

from lightning_tune._validation import check_int, check_number, check_optional
from lightning_tune.tuner.failfast import FailureStreak, TooManyFailuresError
from lightning_tune.tuner.grid import SpaceGridSampler, grid_slots_left
from lightning_tune.tuner.pruning import MetricNotFoundError
from lightning_tune.tuner.recovery import recover_stale_trials
from lightning_tune.tuner.report import format_values
from lightning_tune.tuner.storage_files import storage_guard

__all__ = [
    "FINISHED",
    "SurplusTrialError",
    "TooManyFailuresError",
    "check_timeout",
    "finished_trials",
    "run_worker",
    "trial_states",
]

#: Trial states that count towards ``n_trials``.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def check_timeout(timeout: Any) -> float | None:
    """None, or a number of seconds > 0 (``inf``: no limit); any other value is a ValueError.

    Example:
        >>> check_timeout(60), check_timeout(None)
        (60.0, None)
        >>> check_timeout(0)
        Traceback (most recent call last):
        ...
        ValueError: `timeout` must be a number of seconds > 0, but got timeout=0
    """
    return check_optional(
        check_number,
        "timeout",
        timeout,
        low=0,
        low_open=True,
        finite=False,
        what="a number of seconds",
        type_error=ValueError,
    )


class SurplusTrialError(RuntimeError):
    """A trial asked for when the study already had ``n_trials`` finished or running ones.

    Example:
        >>> issubclass(SurplusTrialError, RuntimeError)
        True
    """


def finished_trials(study: optuna.Study) -> int:
    """How many trials of ``study`` are COMPLETE or PRUNED.

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        >>> finished_trials(study)
        3
    """
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def trial_states(study: optuna.Study) -> dict[str, int]:
    """How many trials of ``study`` are in each state (states with none left out).

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        >>> trial_states(study)
        {'COMPLETE': 2}
    """
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return {name: n for name, n in counts.items() if n}


def _objective(
    tuner: Any, study: optuna.Study, n_trials: int, config_errors: list[Exception]
) -> Any:
    """The tuner's objective behind the surplus check, recording the error of a failed trial
    (and in ``config_errors`` a monitored metric that is never logged)."""

    def objective(trial: optuna.Trial) -> float:
        ahead = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, *FINISHED))
            if t.number < trial.number
        ]
        reason = None
        if len(ahead) >= n_trials:
            reason = (
                f"surplus: {len(ahead)} trials with lower numbers already finished or running "
                f"(n_trials={n_trials}); another worker asked for the same slot"
            )
        elif isinstance(study.sampler, SpaceGridSampler):
            reason = _grid_duplicate(tuner, study, trial)
        if reason is not None:
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("fail_reason", reason)
            raise SurplusTrialError(reason)
        try:
            return tuner.objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            if isinstance(err, MetricNotFoundError):
                config_errors.append(err)
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:4000])
            raise

    return objective


#: How long a grid trial waits for running trials with lower numbers to take their
#: configurations (they do so within moments; only a worker killed in between makes it wait).
GRID_WAIT_S = 10.0


def _grid_duplicate(tuner: Any, study: optuna.Study, trial: optuna.Trial) -> str | None:
    """Why ``trial`` steps back, if a trial with a lower number (running or finished) already
    took its grid configuration: two workers that ask at the same moment (or after the grid
    ran out) can be given the same one, and a configuration is never trained twice. Running
    trials with lower numbers that have not suggested their values yet are waited for (every
    trial suggests before it checks), so the lower number always keeps the configuration."""
    params = tuner.search_space.suggest(trial)  # the grid's values; suggested again later
    names = [n for n in study.sampler.grid if n in params]
    deadline = time.monotonic() + GRID_WAIT_S
    while True:
        ahead = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, *FINISHED))
            if t.number < trial.number
        ]
        undecided = [
            t
            for t in ahead
            if t.state == TrialState.RUNNING
            and not t.user_attrs.get("surplus")
            and any(n not in t.params for n in names)
        ]
        if not undecided or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for other in ahead:
        if other.user_attrs.get("surplus") or any(n not in other.params for n in names):
            continue
        if all(other.params[n] == params[n] for n in names):
            return (
                f"surplus: trial {other.number} already took this grid configuration "
                f"({', '.join(f'{n}={params[n]!r}' for n in names)}); another worker asked "
                "for it at the same moment"
            )
    return None


def run_worker(
    tuner: Any,
    n_trials: int,
    *,
    timeout: float | None = None,
    poll_interval: float = 1.0,
    name: str = "worker",
    max_consecutive_failures: int | None = None,
    check: bool = True,
) -> int:
    """Run trials of ``tuner``'s study in this process until it has ``n_trials`` finished ones.

    Other workers may run on the same study at the same time. While the remaining trials are
    all running elsewhere, the worker waits (checking every ``poll_interval`` seconds) so that
    it can take over a dead worker's trial when its heartbeat goes stale; without a heartbeat
    in the storage it stops instead.

    Args:
        tuner: a :class:`~lightning_tune.tuner.Tuner` (its storage is opened here).
        n_trials: finished (COMPLETE + PRUNED) trials the study should have in the end.
        timeout: seconds after which this worker starts no new trial.
        poll_interval: seconds between checks while waiting for other workers.
        name: shown in the worker's progress lines.
        max_consecutive_failures: stop with a :class:`TooManyFailuresError` after this many
            trials in a row failed with the same error type (FAIL trials do not count towards
            ``n_trials``, so a broken module would fail trials forever); None: the tuner's
            ``max_consecutive_failures``.
        check: build trial 0's objects first (:meth:`~lightning_tune.tuner.Tuner.check_setup`).

    Returns:
        The number of trials this worker ran (any state).

    Example:
        >>> from lightning_tune import TimmClassifier
        >>> from lightning_tune.tuner import Tuner
        >>> tuner = Tuner(TimmClassifier, {"lr": {"type": "float", "low": 1e-3, "high": 1e-1}},
        ...               module_kwargs={"model_name": "test_resnet"}, storage="memory")
        >>> run_worker(tuner, n_trials=0)
        Traceback (most recent call last):
        ...
        ValueError: `n_trials` must be an int >= 1, but got n_trials=0
    """
    check_int("n_trials", n_trials, minimum=1)
    check_timeout(timeout)
    if getattr(tuner, "strategy", "sweep") == "pbt":  # the population defines the work
        from lightning_tune.tuner.pbt.worker import run_pbt

        return run_pbt(tuner, timeout=timeout, poll_interval=poll_interval, name=name)
    check_optional(check_int, "max_consecutive_failures", max_consecutive_failures, minimum=1)
    if check:
        tuner.check_setup()
    study = tuner.study if tuner.study is not None else tuner.create_study()
    storage = tuner.open_storage()
    recovery = tuner.recovery
    deadline = None if timeout is None else time.monotonic() + timeout
    streak = FailureStreak(max_consecutive_failures or tuner.max_consecutive_failures)
    config_errors: list[Exception] = []
    objective = _objective(tuner, study, n_trials, config_errors)
    mine: list[optuna.trial.FrozenTrial] = []
    callbacks = [
        tuner.prune_checkpoints,
        _Printer(name, list(tuner.monitors), tuner.quiet),
        lambda _study, trial: mine.append(trial),
    ]
    ran = 0
    told_waiting = False
    with tuner.quiet_libraries(), storage_guard(tuner.storage_description):
        while deadline is None or time.monotonic() < deadline:
            if recovery is not None:
                recover_stale_trials(study, storage, recovery)
            move, running = _next_move(study, n_trials, recovery is not None)
            if move == "stop":
                break
            if move != "run":
                if move == "wait-for-others" and not told_waiting and not tuner.quiet:
                    print(
                        f"[{name}] waiting for {running} running trial(s); a trial whose worker "
                        f"died is retried {recovery.grace} s after its last heartbeat",
                        flush=True,
                    )
                    told_waiting = True
                time.sleep(poll_interval)
                continue
            mine.clear()
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
            ran += 1
            if config_errors:  # every trial would fail the same way
                raise config_errors[0]
            for trial in mine:
                streak.add(trial)
    return ran


def _next_move(study: optuna.Study, n_trials: int, recovering: bool) -> tuple[str, int]:
    """What a worker does now: ``"run"`` a trial, ``"stop"``, or wait (``"wait"`` for the
    grid's last configurations, ``"wait-for-others"`` for running trials that may have lost
    their worker), and how many trials are running."""
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in FINISHED for t in trials)
    if finished >= n_trials:
        return "stop", 0
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    if grid_slots_left(study, trials) == 0 and not waiting:
        # the whole grid ran (a smaller grid than n_trials ends here), or its last
        # configurations run elsewhere
        return ("wait" if running and recovering else "stop"), running
    if not waiting and finished + running >= n_trials:
        # without recovery a dead worker's trial could never be detected: do not wait forever
        return ("wait-for-others" if recovering else "stop"), running
    return "run", running


class _Printer:
    """Study callback: one line per trial of this worker."""

    def __init__(self, name: str, monitor: list[str], quiet: bool) -> None:
        self.name, self.monitor, self.quiet = name, monitor, quiet

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.quiet:
            return
        detail = (
            format_values(trial, self.monitor)
            if trial.values
            else trial.user_attrs.get("prune_reason") or trial.user_attrs.get("fail_reason", "")
        )
        print(f"[{self.name}] trial {trial.number} {trial.state.name} {detail}", flush=True)
