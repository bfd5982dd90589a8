"""Several worker processes, or machines, on one Optuna study, surviving killed workers.

A worker is a loop in one process: it opens the shared study and runs trials until the study
has ``n_trials`` finished (COMPLETE or PRUNED) trials. Everything the workers share lives in the
Optuna storage, so workers on one machine (:func:`run_workers`, ``lightning-tune tune --workers
N``) and workers on many machines (``lightning-tune worker --storage URL ...``) are the same loop.

* **One machine**: :func:`run_workers` starts N processes (``spawn``), each limited to its share
  of the CPU threads (``torch.set_num_threads``) or given one GPU when several are visible
  (``CUDA_VISIBLE_DEVICES``). The default storage is the study's SQLite file in WAL mode
  (see :mod:`lightning_tune.tuner.storage` for why not the journal file).
* **Crash recovery**: the storage records a heartbeat for every running trial. When a worker
  dies (SIGKILL, OOM, machine lost), the next worker that looks for work fails its trial once
  the heartbeat is older than ``grace_period`` (``optuna.storages.fail_stale_trials``) and
  Optuna's retry callback queues a copy with the same parameters, which runs first. Running
  the same command again therefore continues to the requested number of finished trials.
* **Failures of a trial's own**: an exception in the module is recorded as FAIL with the message
  in the trial's ``fail_reason`` user attribute, and the worker goes on.
* **Exactly n_trials**: a worker only starts a trial when the finished plus running trials are
  fewer than ``n_trials``. Two workers may still ask for the last slot at the same moment; the
  trial with the higher number then steps back at once (FAIL, user attribute ``surplus``,
  nothing trained), so the study never holds more than ``n_trials`` finished trials.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import pathlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from lightning_tune.tuner.failfast import (
    FailureStreak,
    TooManyFailuresError,
    add_fail_fast_options,
)
from lightning_tune.tuner.grid import announce_grid, grid_slots_left
from lightning_tune.tuner.pruning import MetricNotFoundError
from lightning_tune.tuner.recovery import recover_stale_trials
from lightning_tune.tuner.report import format_values
from lightning_tune.tuner.storage import (
    check_storage,
    describe_storage,
    heartbeat_settings,
    resolve_storage,
)
from lightning_tune.tuner.storage_files import storage_guard

__all__ = [
    "FINISHED",
    "SurplusTrialError",
    "TooManyFailuresError",
    "add_worker_subcommand",
    "add_workers_option",
    "finished_trials",
    "run_worker",
    "run_workers",
    "tune_with_workers",
    "worker_threads",
]

#: Trial states that count towards ``n_trials``.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_ENV_THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class SurplusTrialError(RuntimeError):
    """A trial asked for when the study already had ``n_trials`` finished or running ones.

    Example:
        >>> issubclass(SurplusTrialError, RuntimeError)
        True
    """


def _positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, but got {name}={value!r}")


def worker_threads(n_workers: int, cpus: int | None = None) -> int:
    """CPU threads for each of ``n_workers`` workers: an equal share of the usable CPUs.

    Example:
        >>> worker_threads(2, cpus=16), worker_threads(4, cpus=2)
        (8, 1)
    """
    _positive_int("n_workers", n_workers)
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // n_workers)


def finished_trials(study: optuna.Study) -> int:
    """How many trials of ``study`` are COMPLETE or PRUNED.

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        >>> finished_trials(study)
        3
    """
    return len(study.get_trials(deepcopy=False, states=FINISHED))


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
        if len(ahead) >= n_trials:
            trial.set_user_attr("surplus", True)
            reason = (
                f"surplus: {len(ahead)} trials with lower numbers already finished or running "
                f"(n_trials={n_trials}); another worker asked for the same slot"
            )
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
    _positive_int("n_trials", n_trials)
    if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
        raise ValueError(f"`timeout` must be > 0 seconds or None, but got {timeout=!r}")
    if getattr(tuner, "strategy", "sweep") == "pbt":  # the population defines the work
        from lightning_tune.tuner.pbt.worker import run_pbt

        return run_pbt(tuner, timeout=timeout, poll_interval=poll_interval, name=name)
    _positive_int("max_consecutive_failures", max_consecutive_failures, allow_none=True)
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
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            if finished >= n_trials:
                break
            running = sum(t.state == TrialState.RUNNING for t in trials)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if grid_slots_left(study, trials) == 0 and not waiting:
                if not running or recovery is None:
                    break  # the whole grid ran (a smaller grid than n_trials ends here)
                time.sleep(poll_interval)  # the last configurations run elsewhere
                continue
            if not waiting and finished + running >= n_trials:
                if recovery is None:
                    break  # a dead worker's trial could never be detected: do not wait forever
                if not told_waiting and not tuner.quiet:
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


# ------------------------------------------------------------------------- many processes


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables while a child process is started (spawn copies them)."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _gpu_ids() -> list[str]:
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids[:count] if ids else [str(i) for i in range(count)]


def _with_storage(tuner: Any, storage: optuna.storages.BaseStorage | None) -> Any:
    """A copy of ``tuner`` that uses ``storage`` (a worker's own connection, with heartbeat)."""
    return tuner.with_storage(storage)


def _build_tuner(source: Any, storage: optuna.storages.BaseStorage, overrides: Mapping) -> Any:
    if isinstance(source, Mapping):
        from lightning_tune.tuner.config import tuner_from_config

        return tuner_from_config(source, **{**overrides, "storage": storage})
    return _with_storage(source, storage)


def _worker_process(
    source: Any,
    storage_spec: str | None,
    study_dir: str,
    heartbeat: dict[str, Any],
    overrides: dict[str, Any],
    index: int,
    n_trials: int,
    timeout: float | None,
    threads: int,
) -> None:
    import torch

    torch.set_num_threads(threads)
    settings = heartbeat_settings(storage_spec, **heartbeat)
    storage = resolve_storage(storage_spec, study_dir, in_memory_ok=False, **settings)
    tuner = _build_tuner(source, storage, overrides)
    study = tuner.create_study()
    if index > 0:
        # Same seed in every worker would make seeded samplers propose the same parameters.
        study.sampler.reseed_rng()
    run_worker(tuner, n_trials, timeout=timeout, name=f"worker {index}", check=False)


def run_workers(
    source: Any,
    n_trials: int,
    n_workers: int = 2,
    *,
    timeout: float | None = None,
    threads_per_worker: int | None = None,
    heartbeat_interval: int | None = 10,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    overrides: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Run ``n_workers`` worker processes on one study until it has ``n_trials`` finished trials.

    Args:
        source: a :class:`~lightning_tune.tuner.Tuner` (sent to the workers by pickling: its
            module/datamodule classes and functions must be importable) or a sweep config
            mapping (each worker builds its own Tuner with ``tuner_from_config``).
        n_trials: finished (COMPLETE + PRUNED) trials the study should have in the end;
            trials finished by earlier runs count, so running again after a crash continues.
        n_workers: worker processes to start.
        timeout: seconds after which no worker starts a new trial.
        threads_per_worker: torch CPU threads per worker (default: an equal share).
        heartbeat_interval: seconds between heartbeats of running trials (a lease on a
            journal file); None turns crash recovery off.
        grace_period: seconds without a heartbeat before a trial counts as dead
            (default ``2 * heartbeat_interval``).
        max_retry: how often a dead worker's trial is retried with its parameters.
        overrides: config overrides (``study_name``, ``output_dir``, ...) for a config source.

    Returns:
        The study, loaded in this process.

    Raises:
        ValueError: bad counts, or a storage the workers cannot share (in-memory).
        TypeError: a storage object instead of a URL or path (each worker opens its own).

    Example (starts processes and trains, so not run as a doctest; see the README)::

        if __name__ == "__main__":  # workers are spawned
            study = run_workers("sweep.yaml", n_trials=12, n_workers=2)
            print(study.best_params)
    """
    _positive_int("n_trials", n_trials)
    _positive_int("n_workers", n_workers)
    _positive_int("threads_per_worker", threads_per_worker, allow_none=True)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    heartbeat = {
        "heartbeat_interval": heartbeat_interval,
        "grace_period": grace_period,
        "max_retry": max_retry,
    }
    if isinstance(source, Mapping):
        from lightning_tune.tuner.config import tuner_from_config

        parent = tuner_from_config(source, **{**overrides, "storage": "memory"})
        storage_spec = {**source, **overrides}.get("storage")
    else:
        parent = source
        storage_spec = source.storage_source
        source = _with_storage(source, None)  # sent without open connections or study
    if storage_spec is not None and not isinstance(storage_spec, (str, os.PathLike)):
        raise TypeError(
            "parallel workers each open the storage themselves: give `storage` as a URL or a "
            f"path, not a {type(storage_spec).__name__} object"
        )
    storage_spec = None if storage_spec is None else os.fspath(storage_spec)
    parent.check_setup()  # once, before any worker starts or anything is written
    check_storage(storage_spec, in_memory_ok=False)
    settings = heartbeat_settings(storage_spec, **heartbeat)
    study_dir = str(parent.study_dir)
    storage = resolve_storage(storage_spec, study_dir, in_memory_ok=False, **settings)
    # Created here once, so that the workers only load it.
    study = _build_tuner(source, storage, overrides).create_study()
    announce_grid(study, n_trials, quiet=parent.quiet)
    if not parent.quiet:
        print(
            f"Study {parent.study_name!r} in {describe_storage(storage)}: {n_workers} workers "
            f"until {n_trials} finished trials ({finished_trials(study)} already)",
            flush=True,
        )

    threads = threads_per_worker or worker_threads(n_workers)
    gpus = _gpu_ids()
    context = multiprocessing.get_context("spawn")
    processes = []
    for index in range(n_workers):
        env = {key: str(threads) for key in _ENV_THREADS}
        if len(gpus) > 1:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        process = context.Process(
            target=_worker_process,
            args=(
                source,
                storage_spec,
                study_dir,
                heartbeat,
                overrides,
                index,
                n_trials,
                timeout,
                threads,
            ),
            name=f"lightning-tune-worker-{index}",
        )
        with _environment(env):
            process.start()
        processes.append(process)
    for process in processes:
        process.join()
    failed = [(p.name, p.exitcode) for p in processes if p.exitcode != 0]
    if failed and not parent.quiet:
        print(
            f"workers that did not exit cleanly: {failed}; their running trials are retried "
            "when the sweep runs again (or by the other workers after the grace period)",
            flush=True,
        )
    return optuna.load_study(study_name=parent.study_name, storage=storage)


# ------------------------------------------------------------------------------ command line


def tune_with_workers(
    config: str | os.PathLike | None, n_workers: int, **overrides: Any
) -> dict[str, Any]:
    """``lightning-tune tune --workers N``: run a config's sweep with N worker processes.

    ``n_trials`` (from the config or ``overrides``) is the number of finished trials the study
    should have, so running the same command again after a crash continues the sweep instead
    of adding ``n_trials`` more. Returns a JSON-able summary (no password in it).
    """
    from lightning_tune.tuner.config import (
        bundled_config,
        load_config,
        run_settings,
        tuner_from_config,
    )

    cfg = load_config(config if config is not None else bundled_config())
    overrides = {k: v for k, v in overrides.items() if v is not None}
    settings = run_settings(cfg, **overrides)
    if settings["n_trials"] is None:
        raise ValueError("parallel workers need `n_trials` (finished trials to reach)")
    merged = {**cfg, **overrides}
    heartbeat = {
        "heartbeat_interval": merged.get("heartbeat_interval", 10) or None,  # 0: off
        "grace_period": merged.get("grace_period")
        if merged.get("heartbeat_interval", 10)
        else None,
        "max_retry": merged.get("max_retry", 3),
    }
    study = run_workers(
        cfg,
        settings["n_trials"],
        n_workers,
        timeout=settings["timeout"],
        overrides=overrides,
        **heartbeat,
    )
    tuner = tuner_from_config(cfg, **overrides)
    result = tuner.result(report=True, plots=settings["plots"])
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    summary: dict[str, Any] = {
        "study": tuner.study_name,
        "study_dir": str(tuner.study_dir),
        "storage": tuner.storage_description,
        "workers": n_workers,
        "finished": finished_trials(study),
        "states": states,
    }
    try:
        summary.update(best_trial=result.best_trial.number, best_value=result.best_value)
    except ValueError:
        summary["best_trial"] = None
    return summary


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--workers N`` to the ``tune`` command (see :func:`tune_with_workers`)."""
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on this machine (default 1); --n-trials counts the study's "
        "finished trials either way, so re-running after a crash continues the sweep",
    )


def _cmd_worker(args: argparse.Namespace) -> int:
    from lightning_tune.tuner.config import load_config, run_settings, tuner_from_config

    cfg = load_config(args.config)
    n_trials = args.n_trials if args.n_trials is not None else run_settings(cfg)["n_trials"]
    _positive_int("n_trials", n_trials)
    if args.threads is not None:
        _positive_int("threads", args.threads)
        import torch

        torch.set_num_threads(args.threads)
    study_dir = pathlib.Path(args.output_dir or cfg.get("output_dir") or "lightning_tune_runs")
    interval = args.heartbeat_interval or None  # 0: crash recovery off
    check_storage(args.storage, in_memory_ok=False)
    settings = heartbeat_settings(args.storage, interval, args.grace_period, args.max_retry)
    storage = resolve_storage(args.storage, study_dir / args.study, in_memory_ok=False, **settings)
    overrides = {
        "study_name": args.study,
        "output_dir": args.output_dir,
        "storage": storage,
        "heartbeat_interval": interval if interval is not None else 0,
        "grace_period": args.grace_period,
        "max_retry": args.max_retry,
        "preflight": False if args.no_preflight else None,
        "max_consecutive_failures": args.max_failures,
    }
    tuner = tuner_from_config(cfg, **{k: v for k, v in overrides.items() if v is not None})
    tuner.check_setup()
    study = tuner.create_study()
    study.sampler.reseed_rng()  # workers on other machines use the same config and seed
    ran = run_worker(tuner, n_trials, timeout=args.timeout, name=f"worker {os.getpid()}")
    states = {s.name: 0 for s in TrialState}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] += 1
    summary = {
        "study": args.study,
        "storage": describe_storage(storage),
        "ran": ran,
        "finished": finished_trials(study),
        "n_trials": n_trials,
        "states": {k: v for k, v in states.items() if v},
    }
    print(json.dumps({"worker": summary}))
    return 0


def add_worker_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lightning-tune worker``: join a study and run trials until it is complete."""
    parser = subparsers.add_parser(
        "worker",
        help="join a (shared) study and run its trials until it has n_trials finished ones",
        description="Run trials of the study NAME in STORAGE with the sweep of --config, "
        "together with any other workers (processes or machines) on the same storage. The "
        "study is created if it does not exist. Trials of dead workers are detected by "
        "their heartbeat and retried with the same parameters. Passwords in the URL are "
        "never printed.",
    )
    parser.add_argument(
        "--storage", required=True, help="storage URL or path, e.g. postgresql://user:pw@host/db"
    )
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--config", required=True, help="sweep YAML (the same on every machine)")
    parser.add_argument(
        "--n-trials",
        type=int,
        default=None,
        help="finished trials the study should reach (default: the config's)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds after which this worker starts no new trial",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--output-dir", default=None, help="logs and checkpoints (local)")
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        default=10,
        help="seconds between heartbeats of a running trial (default 10; 0 turns crash "
        "recovery off)",
    )
    parser.add_argument(
        "--grace-period",
        type=int,
        default=None,
        help="seconds without heartbeat before a trial counts as dead (default 2x the interval)",
    )
    parser.add_argument(
        "--max-retry", type=int, default=3, help="retries of a dead worker's trial (default 3)"
    )
    add_fail_fast_options(parser)
    parser.set_defaults(func=_cmd_worker)
