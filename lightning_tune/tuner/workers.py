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
* **The loop** each process runs (exactly ``n_trials``, failures of a trial's own) is
  :func:`lightning_tune.tuner.loop.run_worker`; the command line is
  :mod:`lightning_tune.tuner.worker_cli`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator, Mapping
from typing import Any

import optuna

from lightning_tune._validation import check_int, check_optional
from lightning_tune.tuner import loop
from lightning_tune.tuner.grid import announce_grid

# The loop every worker process runs (re-exported in __all__: it was defined here before).
from lightning_tune.tuner.loop import (  # noqa: F401
    FINISHED,
    SurplusTrialError,
    TooManyFailuresError,
    finished_trials,
    run_worker,
)
from lightning_tune.tuner.recovery import HEARTBEAT_INTERVAL, MAX_RETRY
from lightning_tune.tuner.storage import (
    check_storage,
    describe_storage,
    heartbeat_settings,
    resolve_storage,
)

__all__ = [*loop.__all__, "run_workers", "worker_threads"]

_ENV_THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_threads(n_workers: int, cpus: int | None = None) -> int:
    """CPU threads for each of ``n_workers`` workers: an equal share of the usable CPUs.

    Example:
        >>> worker_threads(2, cpus=16), worker_threads(4, cpus=2)
        (8, 1)
    """
    check_int("n_workers", n_workers, minimum=1)
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // n_workers)


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
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
    max_retry: int | None = MAX_RETRY,
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
    check_int("n_trials", n_trials, minimum=1)
    check_int("n_workers", n_workers, minimum=1)
    check_optional(check_int, "threads_per_worker", threads_per_worker, minimum=1)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    heartbeat = {
        "heartbeat_interval": heartbeat_interval,
        "grace_period": grace_period,
        "max_retry": max_retry,
    }
    parent, source, storage_spec = _shared_parts(source, overrides)
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
    args = (source, storage_spec, study_dir, heartbeat, overrides)
    processes = _start_workers(n_workers, threads, args, (n_trials, timeout))
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


def _shared_parts(source: Any, overrides: Mapping[str, Any]) -> tuple[Any, Any, str | None]:
    """``(parent tuner, what each worker builds its tuner from, storage spec)``: a config is
    sent as it is, a Tuner without open connections; the storage must be a URL or path."""
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
    return parent, source, None if storage_spec is None else os.fspath(storage_spec)


def _start_workers(
    n_workers: int, threads: int, shared: tuple[Any, ...], budget: tuple[int, float | None]
) -> list[Any]:
    """Start ``n_workers`` spawned processes, each with its share of CPU threads (and one GPU
    when several are visible)."""
    gpus = _gpu_ids()
    context = multiprocessing.get_context("spawn")
    processes = []
    for index in range(n_workers):
        env = {key: str(threads) for key in _ENV_THREADS}
        if len(gpus) > 1:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        process = context.Process(
            target=_worker_process,
            args=(*shared, index, *budget, threads),
            name=f"lightning-tune-worker-{index}",
        )
        with _environment(env):
            process.start()
        processes.append(process)
    return processes
