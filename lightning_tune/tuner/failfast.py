"""Fail fast: configuration errors before the first trial, repeated failures stop the sweep.

* :class:`ConfigurationError`: trial 0's objects (module, datamodule, callbacks, Trainer) could
  not be built, or its first batches not run, or a searched name is read by nothing. Raised
  once, before any trial is written to the study.
* :class:`TrackedParams`: a trial's hyperparameters that remember which names were read, so
  that a search-space name nothing consumes (a typo) is found in trial 0.
* :class:`FailureStreak`: the sweep stops after ``k`` consecutive trials failed with the same
  error type (a broken configuration would otherwise fail trial after trial).
* :func:`write_error_log`: the full traceback of a failed trial goes to its log directory,
  not to the terminal.
"""

from __future__ import annotations

import argparse
import inspect
import pathlib
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "ConfigurationError",
    "FailureStreak",
    "TooManyFailuresError",
    "TrackedParams",
    "accepted_kwargs",
    "add_fail_fast_options",
    "check_setup",
    "fresh",
    "mark_read",
    "write_error_log",
]

#: File in a trial's directory that holds the traceback of its failure.
ERROR_LOG = "error.log"


def accepted_kwargs(cls: type) -> set[str] | None:
    """Keyword arguments of ``cls.__init__``; None if it takes ``**kwargs``.

    Example:
        >>> sorted(accepted_kwargs(ConfigurationError) or [])  # takes *args only
        []
    """
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {
        name
        for name, p in params.items()
        if name != "self"
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


class ConfigurationError(ValueError):
    """The sweep cannot run as configured; found before the first trial, nothing written.

    Example:
        >>> issubclass(ConfigurationError, ValueError)
        True
    """


class TooManyFailuresError(RuntimeError):
    """The sweep stopped because its last trials all failed with the same error type.

    Example:
        >>> issubclass(TooManyFailuresError, RuntimeError)
        True
    """


class TrackedParams(dict):
    """A trial's hyperparameters; reading a name (``p[name]``, ``p.get(name)``, ``**p``,
    ``dict(p)``, ``p.items()``) adds it to ``reads``.

    Example:
        >>> reads = set()
        >>> params = TrackedParams({"lr": 0.1, "wd": 0.0}, reads)
        >>> params["lr"], sorted(reads)
        (0.1, ['lr'])
        >>> _ = dict(params); sorted(reads)
        ['lr', 'wd']
    """

    def __init__(self, params: Any, reads: set[str]) -> None:
        super().__init__(params)
        self.reads = reads

    def __getitem__(self, key: str) -> Any:
        self.reads.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.reads.add(key)
        return super().get(key, default)

    def __iter__(self) -> Iterator[str]:
        # Overriding __iter__ makes ``dict(p)`` and ``f(**p)`` read through __getitem__.
        return iter(list(super().keys()))

    def items(self) -> Any:
        self.reads.update(super().keys())
        return super().items()

    def values(self) -> Any:
        self.reads.update(super().keys())
        return super().values()

    def copy(self) -> TrackedParams:
        return TrackedParams(self, self.reads)

    def __copy__(self) -> TrackedParams:
        return self.copy()


def fresh(params: Any) -> Any:
    """A copy of ``params`` for one consumer; a tracked copy shares the record of reads."""
    if isinstance(params, TrackedParams):
        return TrackedParams(dict.items(params), params.reads)
    return dict(params)


def mark_read(params: Any, names: Iterable[str]) -> None:
    """Record that ``names`` of ``params`` were consumed (no-op for a plain dict)."""
    if isinstance(params, TrackedParams):
        params.reads.update(names)


def write_error_log(directory: pathlib.Path, err: BaseException) -> pathlib.Path | None:
    """Write ``err``'s traceback to ``directory/error.log``; return the path (None if the
    directory cannot be written: the failure itself is recorded in the study either way)."""
    path = directory / ERROR_LOG
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(err)))
    except OSError:
        return None
    return path


def error_type(trial: FrozenTrial) -> str | None:
    """The error type of a failed trial (from its ``fail_reason``), None for another state."""
    if trial.state != TrialState.FAIL or trial.user_attrs.get("surplus"):
        return None
    reason = str(trial.user_attrs.get("fail_reason", ""))
    return reason.split(":", 1)[0] or "unknown error"


class FailureStreak:
    """Counts consecutive failed trials with the same error type; raises at ``limit``.

    Args:
        limit: consecutive same-type failures that stop the sweep (None: never stop).

    Example:
        >>> streak = FailureStreak(2)
        >>> failed = FrozenTrial(number=0, state=TrialState.FAIL, value=None, values=None,
        ...     datetime_start=None, datetime_complete=None, params={}, distributions={},
        ...     user_attrs={"fail_reason": "OSError: disk"}, system_attrs={},
        ...     intermediate_values={}, trial_id=0)
        >>> streak.add(failed)
        >>> streak.add(failed)
        Traceback (most recent call last):
        ...
        lightning_tune.tuner.failfast.TooManyFailuresError: 2 trials in a row failed with OSError (last: trial 0: OSError: disk); stopping the sweep. Tracebacks are in each trial's error.log
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.kind: str | None = None
        self.count = 0

    def add(self, trial: FrozenTrial) -> None:
        """Count ``trial`` (any state); raise :class:`TooManyFailuresError` at the limit."""
        if trial.user_attrs.get("surplus"):
            return  # stepped back without running: says nothing about the configuration
        kind = error_type(trial)
        if kind is None:
            self.kind, self.count = None, 0
            return
        self.count = self.count + 1 if kind == self.kind else 1
        self.kind = kind
        if self.limit is not None and self.count >= self.limit:
            raise TooManyFailuresError(
                f"{self.count} trials in a row failed with {kind} (last: trial {trial.number}: "
                f"{trial.user_attrs.get('fail_reason', '')}); stopping the sweep. Tracebacks "
                "are in each trial's error.log"
            )


def check_setup(tuner: Any, run_batches: bool) -> None:
    """Build trial 0's objects (and with ``run_batches`` fit one training and one validation
    batch), in memory and a temporary directory; raise :class:`ConfigurationError` with the
    step that failed, or when a searched name is read by nothing.

    ``tuner`` is a :class:`~lightning_tune.tuner.Tuner`; nothing is written to its study.
    """
    import tempfile

    import optuna

    step = "sampling the search space"
    try:
        with tuner.quiet_libraries():
            sampler = optuna.samplers.RandomSampler(seed=tuner.seed)
            trial = optuna.create_study(sampler=sampler).ask()
            params = dict(tuner.search_space.suggest(trial))
            reads: set[str] = set()
            tracked = TrackedParams(params, reads)
            step = "building the datamodule"
            datamodule = tuner.build_datamodule(tracked)
            step = "building the module"
            module = tuner.build_module(tracked, datamodule)
            step = "building the callbacks"
            callbacks = tuner.build_callbacks(tracked)
            _check_consumed(tuner, params, reads)
            step = "building the Trainer"
            with tempfile.TemporaryDirectory(prefix="lightning-tune-preflight-") as root:
                callbacks = [*callbacks, tuner.pruning_callback(trial)]
                namespace = tuner.trial_namespace(module, datamodule, callbacks)
                trainer = tuner.make_trainer(
                    callbacks,
                    root=root,
                    namespace=namespace,
                    **({"fast_dev_run": 1} if run_batches else {}),
                )
                if run_batches:
                    step = "running one training and one validation batch"
                    trainer.fit(module, datamodule=datamodule)
    except ConfigurationError:
        raise
    except Exception as err:
        message = " ".join(f"{type(err).__name__}: {err}".split())
        raise ConfigurationError(
            f"trial 0 failed before the sweep started ({step}), so no trial was run: {message}"
        ) from err


def _check_consumed(tuner: Any, params: dict[str, Any], reads: set[str]) -> None:
    unread = sorted(set(params) - reads)
    if not unread:
        return
    import inspect

    accepted: set[str] = set(reads)
    for source in (tuner.module, tuner.datamodule):
        if inspect.isclass(source):
            accepted |= accepted_kwargs(source) or set()
    raise ConfigurationError(
        f"search space parameters {unread} are read by nothing in trial 0 (not by the module, "
        "the datamodule or any callback), so tuning them would change nothing: a typo? "
        f"Accepted names: {sorted(accepted)}"
    )


def add_fail_fast_options(parser: argparse.ArgumentParser) -> None:
    """``--no-preflight`` and ``--max-failures K`` (shared by ``tune`` and ``worker``)."""
    parser.add_argument(
        "--no-preflight",
        action="store_true",
        help="skip fitting one training and one validation batch of trial 0 before the sweep "
        "(trial 0's objects are still built first, so configuration errors stop the run "
        "before any trial is written)",
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=None,
        help="stop after this many trials in a row failed with the same error type (default 3)",
    )
