"""The tuner: an Optuna study over a LightningModule, with pruning, checkpoints and reports."""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import pathlib
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import optuna
import pandas as pd
import torch
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from lightning_tune._compat import check_lightning, common_namespace
from lightning_tune._lightning import NAMESPACES, classes
from lightning_tune._validation import check_bool, check_choice, check_int, check_optional
from lightning_tune.tuner.diagnosis import (
    diagnostics_callback,
    diagnostics_kwargs,
    prune_by_diagnosis,
)
from lightning_tune.tuner.distributed import DistributedOptunaPruning
from lightning_tune.tuner.factories import make_pruner, make_sampler
from lightning_tune.tuner.failfast import (
    FailureStreak,
    TooManyFailuresError,
    accepted_kwargs,
    check_setup,
    fresh,
    mark_read,
    write_error_log,
)
from lightning_tune.tuner.grid import announce_grid
from lightning_tune.tuner.identity import (
    IDENTITY_ATTR,
    StudyIdentityError,
    identity_diff,
    study_identity,
)
from lightning_tune.tuner.loop import run_worker
from lightning_tune.tuner.objectives import ObjectiveMetrics, Objectives
from lightning_tune.tuner.pruning import MetricNotFoundError
from lightning_tune.tuner.recovery import Recovery, lease
from lightning_tune.tuner.report import (
    format_trial_line,
    objective_names,
    pareto_front,
    save_report,
    summary_table,
    trial_params,
    trials_frame,
)
from lightning_tune.tuner.space import SearchSpace
from lightning_tune.tuner.storage import (
    check_storage,
    describe_storage,
    heartbeat_settings,
    mask_url,
    resolve_storage,
)
from lightning_tune.tuner.storage_files import storage_guard
from lightning_tune.tuner.trial_loggers import build_trial_loggers, check_loggers

__all__ = ["TuneResult", "Tuner"]

_accepted_kwargs = accepted_kwargs  # the name other modules used

Params = dict[str, Any]
if TYPE_CHECKING:  # either package's classes work; these hints name pytorch_lightning's
    import pytorch_lightning as pl

    ModuleSource = type[pl.LightningModule] | Callable[[Params], pl.LightningModule]
    DataSource = (
        pl.LightningDataModule | type[pl.LightningDataModule] | Callable[[Params], Any] | None
    )
    CallbackSource = (
        Callable[[Params], Sequence[pl.Callback]]
        | Sequence[pl.Callback | Callable[[Params], pl.Callback]]
        | None
    )

_CALLBACKS = classes("Callback")
_DATAMODULES = classes("LightningDataModule")

_STRATEGIES = ("sweep", "pbt")
_RESUME = ("check", "force", "new")
_OBJECTIVES = ("best", "last")
# Trainer arguments the tuner sets itself for every trial.
_OWNED_TRAINER_KEYS = (
    "logger",
    "callbacks",
    "max_epochs",
    "default_root_dir",
    "enable_checkpointing",
)
# Lightning warnings that say nothing about a tuning run (tiny epochs, our own test-time reload).
_NOISY_WARNINGS = (
    ".*smaller than the logging interval.*",
    ".*LeafSpec.*",
    ".*callbacks used to create the checkpoint need to be provided.*",
    ".*does not have many workers.*",
)
# The logger of Optuna's optimize loop, which logs each failed trial with its traceback.
_OPTUNA_TRIAL_LOG = "optuna.study._optimize"
_TRAINER_DEFAULTS: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def _check_kwargs(cls: type, kwargs: Mapping[str, Any], argument: str) -> None:
    accepted = accepted_kwargs(cls)
    if accepted is None:
        return
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"`{argument}` has arguments {unknown} that {cls.__name__} does not take; it "
            f"accepts {sorted(accepted)}"
        )


def _lightning_parts(module: Any, datamodule: Any, callbacks: Any) -> dict[str, Any]:
    """The Lightning classes/objects among a run's sources, by argument name (factories and
    None skipped): what decides which package's Trainer runs the trials."""
    found: dict[str, Any] = {}
    if inspect.isclass(module):
        found["module"] = check_lightning(module, "module", "module")
    if datamodule is not None and (
        inspect.isclass(datamodule)
        or isinstance(datamodule, _DATAMODULES)
        or not callable(datamodule)
    ):
        found["datamodule"] = check_lightning(datamodule, "datamodule", "datamodule")
    if callbacks is not None and not callable(callbacks):
        for i, item in enumerate(callbacks):
            if isinstance(item, _CALLBACKS) or inspect.isclass(item) or not callable(item):
                found[f"callbacks[{i}]"] = check_lightning(item, f"callbacks[{i}]", "callback")
    return found


def _validations_per_trial(max_epochs: int, trainer_kwargs: Mapping[str, Any]) -> int | None:
    """How many validations a full trial runs, when the Trainer settings make it plain."""
    every = trainer_kwargs.get("check_val_every_n_epoch", 1)
    interval = trainer_kwargs.get("val_check_interval", 1.0)
    if not isinstance(every, int) or every < 1:
        return None
    if isinstance(interval, float) and 0 < interval <= 1:
        return max(1, max_epochs // every) * max(1, int(1 / interval + 1e-9))
    return None


def _check_budget(n_trials: int | None, timeout: float | None) -> None:
    if n_trials is None and timeout is None:
        raise ValueError("give `n_trials` and/or `timeout`, so that the sweep ends")
    if n_trials is not None and (
        isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials <= 0
    ):
        raise ValueError(f"`n_trials` must be an int > 0, but got {n_trials=!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise ValueError(f"`timeout` must be > 0 seconds, but got {timeout=!r}")


def _json_safe(params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, (type(None), bool, int, float, str)) else repr(v)
        for k, v in params.items()
    }


@dataclass
class TuneResult:
    """What a sweep found: best params/value/checkpoint, all trials, optional test metrics.

    Attributes:
        study: the Optuna study (all state lives in its storage).
        study_dir: the study's output directory (trial logs, checkpoints, report).
        monitor: the optimized metric.
        test_metrics: metrics of the best configuration on the test split, if evaluated.
        report_files: files written by the report (CSV, summary, plots).

    Example:
        >>> import pathlib
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_float("lr", 0, 1), n_trials=3)
        >>> result = TuneResult(study=study, study_dir=pathlib.Path("."), monitor="val_loss")
        >>> result.best_value == min(t.value for t in study.trials), len(result.trials)
        (True, 3)
    """

    study: optuna.Study
    study_dir: pathlib.Path
    monitor: str = "val_loss"
    test_metrics: dict[str, float] | None = None
    report_files: dict[str, pathlib.Path] = field(default_factory=dict)

    @property
    def best_trials(self) -> list[FrozenTrial]:
        """The Pareto front: completed trials no other trial beats on every objective, ordered
        by the first objective (one trial for a single objective)."""
        return pareto_front(self.study)

    @property
    def best_trial(self) -> FrozenTrial:
        """The best completed trial (``ValueError`` if none completed, or for several
        objectives, which have a front of best trials instead)."""
        if len(self.study.directions) > 1:
            names = objective_names(self.study)
            raise ValueError(
                f"study {self.study.study_name!r} has {len(names)} objectives {names}: there "
                "is no single best trial; see `best_trials` (the Pareto front)"
            )
        try:
            return self.study.best_trial
        except ValueError:
            raise ValueError(
                f"study {self.study.study_name!r} has no completed trial yet "
                f"({len(self.study.trials)} trials: see `trials`)"
            ) from None

    @property
    def best_params(self) -> dict[str, Any]:
        """Hyperparameters of the best trial, fixed values included."""
        return trial_params(self.best_trial)

    @property
    def best_value(self) -> float:
        """The best trial's objective value."""
        value = self.best_trial.value
        assert value is not None
        return float(value)

    @property
    def best_checkpoint(self) -> pathlib.Path | None:
        """The best trial's checkpoint, if it was kept."""
        path = self.best_trial.user_attrs.get("checkpoint")
        return pathlib.Path(path) if path and pathlib.Path(path).exists() else None

    @property
    def trials(self) -> pd.DataFrame:
        """A DataFrame of all trials (see :func:`~lightning_tune.tuner.report.trials_frame`)."""
        return trials_frame(self.study)

    def summary(self, top: int = 10) -> str:
        """The terminal summary table."""
        return summary_table(self.study, monitor=self.monitor, top=top)


class _Progress:
    """Study callback: a line per finished trial and an overall bar."""

    def __init__(
        self, total: int | None, monitor: str | list[str], max_epochs: int, quiet: bool
    ) -> None:
        self.quiet = quiet
        self.monitor = monitor
        self.max_epochs = max_epochs
        self.bar: Any = None
        if not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="trials", unit="trial", dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.bar is None:
            return
        self.bar.write(format_trial_line(trial, monitor=self.monitor, max_epochs=self.max_epochs))
        self.bar.update(1)
        with suppress(ValueError, RuntimeError):  # none completed yet, or several objectives
            self.bar.set_postfix_str(f"best {self.monitor}={study.best_value:.4g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Tuner:
    """Hyperparameter sweeps over a LightningModule with Optuna, median or Hyperband pruning.

    Each trial samples hyperparameters from ``search_space``, seeds everything with
    ``seed + trial.number``, builds the module, datamodule and callbacks from them, and fits a
    fresh ``Trainer`` that logs to ``<output_dir>/<study_name>/trials/trial_NNNN``. The
    :class:`~lightning_tune.tuner.pruning.OptunaPruning` callback reports ``monitor`` after each
    validation; a pruned trial stops through ``trainer.should_stop``, its ``fit`` returns
    normally and only then is the trial recorded as PRUNED. The trial's value is the best
    (``objective="best"``) or last validation value of ``monitor``. Checkpoints are kept for
    the ``keep_checkpoints`` best completed trials only.

    The study lives in ``storage``: by default a SQLite file ``<output_dir>/<study_name>/study.db``,
    so running the same sweep again continues it (open it with ``optuna-dashboard
    sqlite:///.../study.db``); ``"memory"`` keeps it in memory; any Optuna storage URL works.

    Hyperparameters reach the objects by name: with a class for ``module`` / ``datamodule``,
    each sampled parameter whose name is an ``__init__`` argument is passed to it (together with
    ``module_kwargs`` / ``datamodule_kwargs``); a factory function receives the whole dict.
    ``num_classes`` is taken from the datamodule when the module class needs it and it is not
    given. Callbacks may be instances (deep-copied per trial) or functions of the params, so
    callback settings such as a warmup length or a smoothing epsilon can be tuned too.

    Pairings: ``sampler="tpe"`` with ``pruner="hyperband"`` (the default) is Optuna's best
    general pairing; ``"random"`` with ``"median"`` is the robust choice for small budgets and
    for comparisons. Steps are validation indices (0, 1, ...), so with ``"median"`` the option
    ``pruner_kwargs={"n_warmup_steps": k}`` protects the first ``k`` validations of every trial
    and ``n_startup_trials`` the first trials of the study; Hyperband's ``max_resource`` defaults
    to the number of validations of a full trial (``max_epochs``).

    Args:
        module: a LightningModule class or a function ``params -> LightningModule``.
        search_space: mapping of parameter specs or a ``suggest(trial) -> dict`` function (see
            :class:`~lightning_tune.tuner.space.SearchSpace`).
        datamodule: a LightningDataModule instance (shared), class, or ``params -> datamodule``
            function (so the batch size can be tuned); None if the module has its own loaders.
        module_kwargs: fixed keyword arguments for a module class.
        datamodule_kwargs: fixed keyword arguments for a datamodule class.
        callbacks: callbacks for every trial: a list of instances or ``params -> Callback``
            functions, or one function ``params -> list of callbacks``.
        monitor: the validation metric to optimize (must be logged by the module).
        direction: ``"minimize"`` or ``"maximize"``.
        pruner: ``"median"``, ``"hyperband"``, ``"successive_halving"``, ``"none"`` or an
            Optuna ``BasePruner``; ``"auto"`` (default): ``"hyperband"``, or ``"none"`` for PBT;
            None: no pruning, like ``"none"``.
        pruner_kwargs: keyword arguments of the named pruner.
        sampler: ``"tpe"``, ``"random"``, ``"qmc"``, ``"gp"`` or an Optuna ``BaseSampler``.
        sampler_kwargs: keyword arguments of the named sampler (seeded with ``seed`` unless
            they give one).
        storage: None (SQLite in the study directory), ``"memory"``, an Optuna storage URL or
            a storage object.
        study_name: name of the study (and of its directory under ``output_dir``).
        output_dir: where study directories go.
        seed: seed of the sampler and, plus the trial number, of each trial.
        max_epochs: epochs of a full (unpruned) trial.
        trainer_kwargs: other ``Trainer`` arguments (accelerator, limits, precision, ...).
        objective: ``"best"`` (default) or ``"last"`` validation value as the trial's value.
        on_nonfinite: ``"prune"`` or ``"fail"`` a trial whose metric becomes NaN/inf.
        keep_checkpoints: keep the best checkpoint of this many best trials (0: none).
        loggers: per-trial loggers, any of ``"csv"``, ``"tensorboard"`` (empty: none).
        quiet: no progress output (for scripts).
        heartbeat_interval: seconds between heartbeats of a running trial, so that the trial
            of a killed run is marked FAIL and retried with its parameters when the sweep runs
            again: Optuna's heartbeat on a SQLite file or database URL, a lease on a journal
            file (see :mod:`~lightning_tune.tuner.recovery`); None turns crash recovery off.
            A storage object keeps its own heartbeat settings.
        grace_period: seconds without a heartbeat after which a running trial counts as dead
            (default ``2 * heartbeat_interval``).
        max_retry: how often a dead trial is retried with its parameters (None: no limit).
        diagnostics: add :class:`~lightning_tune.callbacks.TrainingDiagnostics` to every trial
            (True, or a mapping of its arguments): an error-level finding (non-finite values,
            exploding gradients, a dead layer, a diverging or flat loss, ...) stops the trial
            at once and records it PRUNED with the finding as its reason, before the
            median/Hyperband pruner could judge it.
        strategy: ``"sweep"`` (default: Optuna samples trials, the pruner stops weak ones) or
            ``"pbt"``: population-based training, see :mod:`lightning_tune.tuner.pbt`.
        pbt: the PBT options, a :class:`~lightning_tune.tuner.pbt.PBTConfig` or a mapping of
            its fields (``population``, ``interval``, ``quantile``, ...); only with ``"pbt"``.
        preflight: before the first trial, also run one training and one validation batch of
            trial 0 (its objects are always built first; see :meth:`check_setup`).
        max_consecutive_failures: stop the sweep after this many trials in a row failed with
            the same error type (None: never).
        resume: what to do when the study exists: ``"check"`` (continue it if it was created
            with the same settings, see :mod:`~lightning_tune.tuner.identity`, else refuse with
            a diff), ``"force"`` (continue it with these settings) or ``"new"`` (refuse: the
            name must be new).

    Two budgets: :meth:`optimize` keeps Optuna's meaning of ``n_trials`` (this many *more*
    trials), while ``run(n_trials, total=True)`` (what ``lightning-tune tune`` uses) runs until
    the study has ``n_trials`` *finished* (COMPLETE + PRUNED) trials, counting earlier runs.

    Example:
        >>> from lightning_tune import DigitsDataModule, TimmClassifier
        >>> tuner = Tuner(
        ...     TimmClassifier, {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
        ...     datamodule=DigitsDataModule, datamodule_kwargs={"image_size": 16},
        ...     module_kwargs={"model_name": "test_resnet"}, storage="memory",
        ...     pruner="median", sampler="random")
        >>> tuner.search_space.distributions()["lr"]
        FloatDistribution(high=0.1, log=True, low=0.001, step=None)
    """

    def __init__(
        self,
        module: ModuleSource,
        search_space: SearchSpace | Mapping[str, Any] | Callable[[optuna.Trial], Mapping[str, Any]],
        *,
        datamodule: DataSource = None,
        module_kwargs: Mapping[str, Any] | None = None,
        datamodule_kwargs: Mapping[str, Any] | None = None,
        callbacks: CallbackSource = None,
        monitor: str = "val_loss",
        direction: Literal["minimize", "maximize"] = "minimize",
        pruner: str | BasePruner | None = "auto",
        pruner_kwargs: Mapping[str, Any] | None = None,
        sampler: str | BaseSampler | None = "tpe",
        sampler_kwargs: Mapping[str, Any] | None = None,
        storage: str | optuna.storages.BaseStorage | None = None,
        study_name: str = "lightning_tune",
        output_dir: str | pathlib.Path = "lightning_tune_runs",
        seed: int = 0,
        max_epochs: int = 10,
        trainer_kwargs: Mapping[str, Any] | None = None,
        objective: Literal["best", "last"] = "best",
        on_nonfinite: Literal["prune", "fail"] = "prune",
        keep_checkpoints: int = 3,
        loggers: Sequence[str] = ("csv",),
        quiet: bool = False,
        heartbeat_interval: int | None = 10,
        grace_period: int | None = None,
        max_retry: int | None = 3,
        strategy: Literal["sweep", "pbt"] = "sweep",
        pbt: Any = None,
        diagnostics: bool | Mapping[str, Any] = False,
        preflight: bool = False,
        max_consecutive_failures: int | None = 3,
        resume: Literal["check", "force", "new"] = "check",
    ) -> None:
        # -- what to build
        if isinstance(module, torch.nn.Module):
            raise TypeError(
                f"`module` must be a LightningModule class or a function params -> module, but "
                f"got an instance of {type(module).__name__}: pass the class (and its fixed "
                "arguments as `module_kwargs`), so that each trial builds a fresh module"
            )
        if not inspect.isclass(module) and not callable(module):
            raise TypeError(
                "`module` must be a LightningModule class or a function params -> module, but "
                f"got {type(module).__name__}"
            )
        self.module = module
        self.module_kwargs = dict(module_kwargs or {})
        if inspect.isclass(module):
            _check_kwargs(module, self.module_kwargs, "module_kwargs")
        elif self.module_kwargs:
            raise ValueError("`module_kwargs` can only be used with a module class")
        self.datamodule = datamodule
        self.datamodule_kwargs = dict(datamodule_kwargs or {})
        if inspect.isclass(datamodule):
            _check_kwargs(datamodule, self.datamodule_kwargs, "datamodule_kwargs")
        elif self.datamodule_kwargs:
            raise ValueError("`datamodule_kwargs` can only be used with a datamodule class")
        if (
            callbacks is not None
            and not callable(callbacks)
            and (isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence))
        ):
            raise TypeError(
                "`callbacks` must be a list of callbacks / functions params -> callback, or "
                f"a function params -> list, but got {type(callbacks).__name__}"
            )
        # Which Lightning package's Trainer runs the trials: mixing the two fails now.
        common_namespace(_lightning_parts(module, datamodule, callbacks))
        self.callbacks = callbacks
        self.search_space = SearchSpace.coerce(search_space)
        self._check_params_consumed()

        # -- what to optimize (several metrics: a multi-objective study)
        self.objectives = Objectives.parse(monitor, direction)
        if objective not in _OBJECTIVES:
            raise ValueError(
                f"`objective` must be one of {list(_OBJECTIVES)}, but got {objective=!r}"
            )
        if on_nonfinite not in ("prune", "fail"):
            raise ValueError(f"`on_nonfinite` must be 'prune' or 'fail', but got {on_nonfinite=!r}")
        # The first metric is the one pruning, checkpoints and progress lines follow.
        self.monitor = self.objectives.monitors[0]
        self.direction = self.objectives.directions[0]
        self.monitors = self.objectives.monitors
        self.objective_mode = objective
        self.on_nonfinite = on_nonfinite

        # -- how to train
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise ValueError(f"`max_epochs` must be an int >= 1, but got {max_epochs=!r}")
        self.max_epochs = max_epochs
        self.trainer_kwargs = dict(trainer_kwargs or {})
        _check_kwargs(NAMESPACES[0].Trainer, self.trainer_kwargs, "trainer_kwargs")
        owned = sorted(set(self.trainer_kwargs) & set(_OWNED_TRAINER_KEYS))
        if owned:
            raise ValueError(
                f"`trainer_kwargs` must not set {owned}: the tuner sets them for each trial "
                "(use `max_epochs`, `callbacks`, `loggers`, `keep_checkpoints`, `output_dir`)"
            )
        if (
            isinstance(keep_checkpoints, bool)
            or not isinstance(keep_checkpoints, int)
            or keep_checkpoints < 0
        ):
            raise ValueError(
                f"`keep_checkpoints` must be an int >= 0, but got {keep_checkpoints=!r}"
            )
        self.keep_checkpoints = keep_checkpoints
        self.loggers = check_loggers(loggers)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`seed` must be an int, but got {seed!r}")
        self.seed = seed
        self.quiet = quiet

        # -- where and how to search (checked now, built again per study)
        self.pruner_kwargs = dict(pruner_kwargs or {})
        self.sampler_kwargs = dict(sampler_kwargs or {})
        if strategy not in _STRATEGIES:
            raise ValueError(
                f"`strategy` must be one of {list(_STRATEGIES)}, but got {strategy=!r}"
            )
        if isinstance(pruner, str) and pruner == "auto":
            pruner = "none" if strategy == "pbt" or self.objectives.multi else "hyperband"
        pruner = self.objectives.resolve_pruner(pruner)
        self.objectives.check_sampler(sampler)
        self.pruner = make_pruner(pruner, self.pruner_kwargs, max_resource=self.max_resource)
        self.strategy = strategy
        self.pbt_plan = None
        if strategy == "pbt":
            from lightning_tune.tuner.pbt.reach import check_pbt

            if self.objectives.multi:
                raise ValueError(
                    f"strategy='pbt' ranks members by one metric, but monitor="
                    f"{list(self.monitors)} has {len(self.monitors)}; give one `monitor`"
                )

            self.pbt_plan = check_pbt(self, pbt)
        elif pbt is not None:
            raise ValueError("`pbt` options need strategy='pbt', but got strategy='sweep'")
        self._sampler_source = sampler
        make_sampler(sampler, self.sampler_kwargs, seed=seed, search_space=self.search_space)
        if not isinstance(study_name, str) or not study_name or "/" in study_name:
            raise ValueError(
                f"`study_name` must be a non-empty name without '/', but got {study_name!r}"
            )
        self.study_name = study_name
        self.output_dir = pathlib.Path(output_dir)
        self.study_dir = self.output_dir / study_name
        self._storage_source = storage
        check_storage(storage)  # a malformed URL fails now; nothing is opened or created
        # Crash recovery for the default storage (the study's SQLite file): checked now.
        check_storage(
            None,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_retry=max_retry,
        )
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        self.preflight = check_bool("preflight", preflight)
        self.max_consecutive_failures = check_optional(
            check_int, "max_consecutive_failures", max_consecutive_failures, minimum=1
        )
        self.resume = check_choice("resume", resume, _RESUME)
        self._checked = False
        self._storage: optuna.storages.BaseStorage | None = None
        self.study: optuna.Study | None = None
        self.diagnostics = diagnostics_kwargs(diagnostics)

    # ------------------------------------------------------------------------------ building
    @property
    def max_resource(self) -> int | None:
        """Validations in a full trial (Hyperband's default ``max_resource``), if plain."""
        return _validations_per_trial(self.max_epochs, self.trainer_kwargs)

    def _check_params_consumed(self) -> None:
        """With classes only, a sampled name that no class takes is a typo: say so now."""
        specs = self.search_space.specs
        if specs is None or not inspect.isclass(self.module):
            return
        takers: list[set[str] | None] = [accepted_kwargs(self.module)]
        if inspect.isclass(self.datamodule):
            takers.append(accepted_kwargs(self.datamodule))
        elif callable(self.datamodule) and not isinstance(self.datamodule, _DATAMODULES):
            return
        if callable(self.callbacks) or any(
            not isinstance(c, _CALLBACKS) for c in (self.callbacks or ())
        ):
            return  # a callback factory may take any name
        if any(t is None for t in takers):
            return
        accepted = set().union(*takers)  # type: ignore[arg-type]
        unused = sorted(set(specs) - accepted)
        if unused:
            names = [self.module.__name__] + (
                [self.datamodule.__name__] if inspect.isclass(self.datamodule) else []
            )
            raise ValueError(
                f"search space parameters {unused} are not arguments of {' or '.join(names)}, "
                "and no callback function receives them; accepted names: "
                f"{sorted(accepted)}"
            )

    @staticmethod
    def _from_class(cls: type, fixed: Mapping[str, Any], params: Params) -> Any:
        accepted = accepted_kwargs(cls)
        names = [k for k in dict.keys(params) if accepted is None or k in accepted]
        mark_read(params, names)
        return cls(**{**fixed, **{k: dict.__getitem__(params, k) for k in names}})

    def build_datamodule(self, params: Params) -> pl.LightningDataModule | None:
        """The datamodule for a trial's hyperparameters."""
        source = self.datamodule
        if source is None or isinstance(source, _DATAMODULES):
            return source
        dm = (
            self._from_class(source, self.datamodule_kwargs, params)
            if inspect.isclass(source)
            else source(fresh(params))
        )
        check_lightning(dm, "datamodule(params)", "datamodule")
        return dm

    def build_module(self, params: Params, datamodule: Any = None) -> pl.LightningModule:
        """The LightningModule for a trial's hyperparameters."""
        if inspect.isclass(self.module):
            fixed = dict(self.module_kwargs)
            accepted = accepted_kwargs(self.module)
            if (
                "num_classes" not in fixed
                and "num_classes" not in params
                and (accepted is None or "num_classes" in accepted)
                and isinstance(getattr(datamodule, "num_classes", None), int)
            ):
                fixed["num_classes"] = datamodule.num_classes
            module = self._from_class(self.module, fixed, params)
        else:
            module = self.module(fresh(params))
        check_lightning(module, "module(params)", "module")
        return module

    def build_callbacks(self, params: Params) -> list[pl.Callback]:
        """The user's callbacks for a trial's hyperparameters (fresh objects every trial)."""
        if self.callbacks is None:
            return []
        if callable(self.callbacks):
            built = list(self.callbacks(fresh(params)))
        else:
            built = [
                copy.deepcopy(c) if isinstance(c, _CALLBACKS) else c(fresh(params))
                for c in self.callbacks
            ]
        for i, callback in enumerate(built):
            check_lightning(callback, f"callbacks(params)[{i}]", "callback")
        return built

    def pruning_callback(self, trial: optuna.Trial) -> DistributedOptunaPruning:
        """The callback that reports a trial's metric (DDP-aware: rank 0 decides, all ranks
        stop together, one report per step)."""
        return DistributedOptunaPruning(trial, monitor=self.monitor, on_nonfinite=self.on_nonfinite)

    def make_trainer(
        self,
        callbacks: Sequence[pl.Callback],
        *,
        root: str | pathlib.Path,
        namespace: Any = None,
        **overrides: Any,
    ) -> pl.Trainer:
        """A trial's Trainer with ``callbacks``, the tuner's Trainer settings and ``overrides``,
        from the Lightning package ``namespace`` (default: the first installed)."""
        return (namespace or NAMESPACES[0]).Trainer(
            **{
                **_TRAINER_DEFAULTS,
                "logger": False,
                "enable_checkpointing": False,
                **self.trainer_kwargs,
                "max_epochs": self.max_epochs,
                "default_root_dir": str(root),
                **overrides,
                "callbacks": list(callbacks),
            }
        )

    def check_setup(self, run_batches: bool | None = None) -> None:
        """Fail fast: build trial 0's module, datamodule, callbacks and Trainer (and, with
        ``run_batches`` (default: ``preflight``), fit one training and one validation batch)
        before any trial is written; check that every searched name is read by something.
        Runs once per Tuner; :meth:`run` and :meth:`optimize` call it.

        Raises:
            ConfigurationError: with the step that failed and the original error.
        """
        if self._checked:
            return
        check_setup(self, self.preflight if run_batches is None else run_batches)
        self._checked = True

    def trial_dir(self, number: int) -> pathlib.Path:
        """Logs and checkpoints of trial ``number``."""
        return self.study_dir / "trials" / f"trial_{number:04d}"

    @staticmethod
    def trial_namespace(module: Any, datamodule: Any, callbacks: Sequence[Any]) -> ModuleType:
        """The Lightning package (``pytorch_lightning`` or ``lightning.pytorch``) whose Trainer
        runs these objects: the one the user's classes come from, or, when all of them are
        lightning_tune's own (which work with both), the first installed of the two.
        ``TypeError`` if they mix the two packages."""
        found = {"module": check_lightning(module, "module", "module")}
        if datamodule is not None:
            found["datamodule"] = check_lightning(datamodule, "datamodule", "datamodule")
        for i, callback in enumerate(callbacks):
            found[f"callbacks[{i}]"] = check_lightning(callback, f"callbacks[{i}]", "callback")
        return common_namespace(found)

    def _trial_loggers(
        self, number: int, pl: ModuleType, params: Params | None = None
    ) -> list[Any]:
        return build_trial_loggers(
            self.loggers,
            params=params or {},
            study_name=self.study_name,
            number=number,
            study_dir=self.study_dir,
            namespace=pl,
        )

    # ------------------------------------------------------------------------------- study
    @property
    def storage_source(self) -> str | optuna.storages.BaseStorage | None:
        """The ``storage`` argument as given (None: the study's SQLite file)."""
        return self._storage_source

    def with_storage(self, storage: optuna.storages.BaseStorage | None) -> Tuner:
        """A shallow copy of this tuner that uses ``storage`` and has no study loaded yet.

        With ``storage=None`` the copy keeps this tuner's storage source but holds no open
        storage, so it can be pickled and sent to another process, which opens its own.
        """
        clone = copy.copy(self)
        clone._storage = storage
        if storage is not None:
            clone._storage_source = storage
        clone.study = None
        return clone

    def open_storage(self) -> optuna.storages.BaseStorage:
        """The study's storage, opened once per Tuner (so an in-memory study survives several
        ``run`` calls). A SQLite file or database URL gets Optuna's heartbeat (see
        ``heartbeat_interval``); a journal file recovers through a lease instead.

        Raises:
            ConnectionError: the database cannot be opened (message without the password).
            ImportError: the database driver is not installed.
        """
        if self._storage is not None:
            return self._storage
        heartbeat = heartbeat_settings(
            self._storage_source, self.heartbeat_interval, self.grace_period, self.max_retry
        )
        storage = resolve_storage(self._storage_source, self.study_dir, **heartbeat)
        if isinstance(storage, optuna.storages.BaseStorage):
            self._storage = storage
            return storage
        try:
            self._storage = optuna.storages.get_storage(storage)
            return self._storage
        except Exception as err:  # sqlalchemy/driver errors: say which storage, hide passwords
            raise ValueError(
                f"cannot open storage {mask_url(storage)!r}: {type(err).__name__}: {err}"
            ) from err

    @property
    def recovery(self) -> Recovery | None:
        """How the trials of dead workers are found in this tuner's storage (None: they are
        not, because recovery is off or the storage is in memory)."""
        return Recovery.for_storage(
            self.open_storage(), self.heartbeat_interval, self.grace_period, self.max_retry
        )

    @property
    def storage_description(self) -> str:
        """Where the study lives, passwords hidden."""
        if self._storage is not None:
            return describe_storage(self._storage)
        source = self._storage_source
        if source is None:
            return f"sqlite:///{(self.study_dir / 'study.db').resolve()}"
        if isinstance(source, str):
            return "memory" if source in ("memory", ":memory:") else mask_url(source)
        return type(source).__name__

    @property
    def dashboard_command(self) -> str | None:
        """The ``lightning-tune dashboard`` command that opens this study (None in memory)."""
        if self._storage_source is None:
            return f"lightning-tune dashboard {self.study_dir}"
        where = self.storage_description
        return (
            None if where == "memory" or "://" not in where else f"lightning-tune dashboard {where}"
        )

    def create_study(self) -> optuna.Study:
        """Create the study, or load it if it exists (checking that it was created with the same
        settings: see ``resume`` and :mod:`~lightning_tune.tuner.identity`).

        Nothing is written to an existing study before the check passes. The sampler is seeded
        with ``seed + number of existing trials`` so that a continued study does not replay the
        configurations it already tried.
        """
        self.study_dir.mkdir(parents=True, exist_ok=True)
        storage = self.open_storage()
        n_existing = 0
        identity = study_identity(self)
        write_identity = True
        try:
            existing = optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:
            existing = None
        if existing is not None:
            directions = [d.name.lower() for d in existing.directions]
            if directions != list(self.objectives.directions):
                asked = list(self.objectives.directions)
                raise ValueError(
                    f"study {self.study_name!r} already exists with direction(s) {directions}, "
                    f"but direction={asked[0] if len(asked) == 1 else asked!r} was asked; use "
                    "another `study_name` or the same direction (the existing study was not "
                    "changed)"
                )
            existing_trials = existing.get_trials(deepcopy=False)
            write_identity = self._check_identity(existing, existing_trials, identity)
            n_existing = len(existing_trials)
        # A grid is shuffled by the seed: every process and run must use the same one.
        offset = 0 if self._sampler_source == "grid" else n_existing
        sampler = make_sampler(
            self._sampler_source,
            self.sampler_kwargs,
            seed=self.seed + offset,
            search_space=self.search_space,
        )
        self.study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            directions=list(self.objectives.directions),
            sampler=sampler,
            pruner=self.pruner,
            load_if_exists=True,
        )
        if write_identity:
            self.study.set_user_attr(IDENTITY_ATTR, identity)
            self.study.set_user_attr("monitor", self.monitor)
            self.study.set_user_attr("monitors", list(self.monitors))
        if self.strategy == "pbt":  # round 0 is enqueued once, before any worker starts
            from lightning_tune.tuner.pbt.worker import seed_population

            seed_population(self, self.study)
        return self.study

    def _check_identity(
        self, study: optuna.Study, trials: Sequence[FrozenTrial], identity: dict[str, Any]
    ) -> bool:
        """Refuse to continue ``study`` with other settings; return whether to (re)write the
        identity (a study from before identities were stored, or ``resume="force"``)."""
        if self.resume == "new":
            raise StudyIdentityError(
                f"study {self.study_name!r} already exists in {self.storage_description}; a new "
                "study needs a name that is not taken (nothing was written)"
            )
        stored = study.user_attrs.get(IDENTITY_ATTR)
        if self.resume == "force":
            self._check_space_matches(trials)  # what Optuna itself cannot continue
            return stored != identity
        if stored is None:  # created before identities were stored: what it has must match
            monitor = study.user_attrs.get("monitor")
            changes = (
                []
                if monitor in (None, self.monitor)
                else [f"monitor: {monitor!r} -> {self.monitor!r}"]
            )
            self._check_space_matches(trials)
        else:
            changes = identity_diff(stored, identity)
        if changes:
            raise StudyIdentityError(
                f"study {self.study_name!r} was created with other settings, so its trials "
                f"would not compare with new ones: {'; '.join(changes)}. Start a new study "
                "(`--new-study NAME`, or another `study_name`) or continue this one with the "
                "new settings on purpose (`--force-resume`, resume='force'); nothing was written"
            )
        return stored is None

    def _check_space_matches(self, trials: Sequence[FrozenTrial]) -> None:
        """Refuse a search space whose distributions clash with those the study already has
        (Optuna would only fail inside the next trial, leaving a FAIL trial behind)."""
        space = self.search_space.distributions()
        for trial in trials:
            for name, old in trial.distributions.items():
                if name not in space:
                    continue
                try:
                    optuna.distributions.check_distribution_compatibility(old, space[name])
                except ValueError as err:
                    raise ValueError(
                        f"search space `{name}` is {space[name]}, but study "
                        f"{self.study_name!r} already sampled it from {old} ({err}); use "
                        "another `study_name` for a different space (the existing study was "
                        "not changed)"
                    ) from None
            space = {k: v for k, v in space.items() if k not in trial.distributions}
            if not space:
                return

    # ---------------------------------------------------------------------------- one trial
    def objective(self, trial: optuna.Trial) -> float:
        """Run one trial: sample, seed, build, fit with pruning, record. Returns its value.

        A trial that raises (an error in the module, a NaN metric with ``on_nonfinite="fail"``)
        gets the error in its ``fail_reason`` user attribute before the exception propagates.
        """
        recovery = self.recovery
        renewing = (
            lease(trial.study, self.open_storage(), trial.number, recovery.heartbeat_interval)
            if recovery is not None and recovery.mode == "lease"
            else nullcontext()
        )
        try:
            with renewing:
                return self._run_trial(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            if "fail_reason" not in trial.user_attrs:
                reason = " ".join(f"{type(err).__name__}: {err}".split())
                trial.set_user_attr("fail_reason", reason[:4000])
            log = write_error_log(self.trial_dir(trial.number), err)
            if log is not None:
                trial.set_user_attr("error_log", str(log))
            raise

    def _run_trial(self, trial: optuna.Trial) -> float:
        start = time.perf_counter()
        params = self.search_space.suggest(trial)
        trial.set_user_attr("params", _json_safe(params))
        NAMESPACES[0].seed_everything(self.seed + trial.number, workers=True, verbose=False)
        datamodule = self.build_datamodule(params)
        module = self.build_module(params, datamodule)
        user_callbacks = self.build_callbacks(params)
        pl = self.trial_namespace(module, datamodule, user_callbacks)
        trial_dir = self.trial_dir(trial.number)
        if trial_dir.exists():  # an in-memory study run again: trial numbers restart
            shutil.rmtree(trial_dir)
        pruning = self.pruning_callback(trial)
        recorder = ObjectiveMetrics(self.monitors) if self.objectives.multi else None
        callbacks = [*user_callbacks, pruning, *([recorder] if recorder else [])]
        diagnosis = None if self.diagnostics is None else diagnostics_callback(self.diagnostics)
        if diagnosis is not None:
            callbacks.append(diagnosis)
        checkpoint = None
        if self.keep_checkpoints > 0:
            checkpoint = pl.callbacks.ModelCheckpoint(
                dirpath=trial_dir / "checkpoints",
                filename="best",
                monitor=self.monitor,
                mode="min" if self.direction == "minimize" else "max",
                save_top_k=1,
                enable_version_counter=False,
            )
            callbacks.append(checkpoint)
        loggers = self._trial_loggers(trial.number, pl, params)
        trainer = self.make_trainer(
            callbacks,
            root=trial_dir,
            namespace=pl,
            logger=loggers or False,
            enable_checkpointing=checkpoint is not None,
        )
        trial.set_user_attr("log_dir", str(trial_dir))
        trial.set_user_attr("lightning", pl.__name__)
        fit_start = time.perf_counter()
        try:
            if datamodule is None:
                trainer.fit(module)
            else:
                trainer.fit(module, datamodule=datamodule)
        except BaseException:
            shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)
            raise
        pruning.sync_from_storage()  # ddp_spawn trained in child processes (issue 7)
        trial.set_user_attr("fit_seconds", time.perf_counter() - fit_start)
        trial.set_user_attr("epochs", int(trainer.current_epoch))
        trial.set_user_attr("validations", pruning.validations)
        if diagnosis is not None and diagnosis.errors:
            shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)
            trial.set_user_attr("trial_seconds", time.perf_counter() - start)
            prune_by_diagnosis(trial, diagnosis)
        if pruning.status != "running":
            key = "prune_reason" if pruning.pruned else "fail_reason"
            trial.set_user_attr(key, pruning.reason)
            shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)
            trial.set_user_attr("trial_seconds", time.perf_counter() - start)
            pruning.check()
        if not pruning.values:
            raise ValueError(
                f"trial {trial.number} ran no validation, so {self.monitor!r} was never "
                "reported: check `limit_val_batches`, `check_val_every_n_epoch` and the "
                "validation dataloader"
            )
        value = self._trial_value(pruning.values, recorder)
        if checkpoint is not None and checkpoint.best_model_path:
            trial.set_user_attr(
                "checkpoint", str(pathlib.Path(checkpoint.best_model_path).resolve())
            )
        trial.set_user_attr("trial_seconds", time.perf_counter() - start)
        return value

    def _trial_value(
        self, values: Sequence[float], recorder: ObjectiveMetrics | None
    ) -> float | list[float]:
        """The best or last reported value; with several objectives, all from one validation."""
        if recorder is not None:
            return self.objectives.values(recorder.rows, self.objective_mode)
        if self.objective_mode == "last":
            return float(values[-1])
        return float((min if self.direction == "minimize" else max)(values))

    def prune_checkpoints(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Study callback: keep the checkpoints of the ``keep_checkpoints`` best trials only."""
        if self.keep_checkpoints == 0 or trial.state != TrialState.COMPLETE:
            return
        if self.objectives.multi:  # keep the Pareto front's checkpoints
            front = {t.number for t in study.best_trials}
            for old in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if old.number not in front and old.user_attrs.get("checkpoint"):
                    pathlib.Path(old.user_attrs["checkpoint"]).unlink(missing_ok=True)
            return
        complete = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)
        ]
        complete.sort(key=lambda t: t.value, reverse=self.direction == "maximize")  # type: ignore[arg-type, return-value]
        for old in complete[self.keep_checkpoints :]:
            path = old.user_attrs.get("checkpoint")
            if path:
                pathlib.Path(path).unlink(missing_ok=True)

    # ------------------------------------------------------------------------------- loops
    @contextmanager
    def quiet_libraries(self) -> Iterator[None]:
        """Context manager: Lightning and Optuna logs at WARNING, tuning-irrelevant warnings off."""
        names = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", _OPTUNA_TRIAL_LOG)
        levels = {n: logging.getLogger(n).level for n in names}
        verbosity = optuna.logging.get_verbosity()
        for name in names:
            logging.getLogger(name).setLevel(logging.WARNING)
        # A failed trial is one line from us (traceback in its error.log), not Optuna's
        # warning with the whole traceback.
        logging.getLogger(_OPTUNA_TRIAL_LOG).setLevel(logging.ERROR)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            with warnings.catch_warnings():
                for message in _NOISY_WARNINGS:
                    warnings.filterwarnings("ignore", message=message)
                yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            optuna.logging.set_verbosity(verbosity)

    def optimize(self, n_trials: int | None = None, timeout: float | None = None) -> optuna.Study:
        """Run trials in this process until ``n_trials`` *more* ran or ``timeout`` seconds passed.

        This is Optuna's ``Study.optimize`` meaning of ``n_trials``: trials of earlier runs do
        not count (for "until the study has N finished trials" use ``run(N, total=True)``).
        Creates or loads the study first if :meth:`create_study` was not called. A trial that
        raises is recorded as FAIL with the error in its ``fail_reason`` user attribute and the
        sweep goes on (its traceback in the trial's ``error.log``); a monitored metric that is
        never logged (:class:`~lightning_tune.tuner.pruning.MetricNotFoundError`) or
        ``max_consecutive_failures`` trials in a row failing with the same error type
        (:class:`~lightning_tune.tuner.failfast.TooManyFailuresError`) stop the sweep and are
        raised. Trial 0's objects are built first (:meth:`check_setup`).
        """
        if self.strategy == "pbt":
            return self._run_pbt(timeout)
        _check_budget(n_trials, timeout)
        self.check_setup()
        study = self.study if self.study is not None else self.create_study()
        progress = _Progress(n_trials, list(self.monitors), self.max_epochs, self.quiet)
        config_errors: list[Exception] = []
        streak = FailureStreak(self.max_consecutive_failures)

        def objective(trial: optuna.Trial) -> float:
            try:
                return self.objective(trial)
            except MetricNotFoundError as err:
                config_errors.append(err)
                raise

        def stop_on_config_error(study: optuna.Study, trial: FrozenTrial) -> None:
            try:
                streak.add(trial)
            except TooManyFailuresError as err:
                config_errors.append(err)
            if config_errors:
                study.stop()

        try:
            with self.quiet_libraries(), storage_guard(self.storage_description):
                study.optimize(
                    objective,
                    n_trials=n_trials,
                    timeout=timeout,
                    catch=(Exception,),
                    callbacks=[self.prune_checkpoints, progress, stop_on_config_error],
                )
        finally:
            progress.close()
        if config_errors:
            raise config_errors[0]
        return study

    def _run_pbt(self, timeout: float | None) -> optuna.Study:
        """PBT: the population's segments until it is done (``n_trials`` does not apply)."""
        from lightning_tune.tuner.pbt.worker import run_pbt

        if timeout is not None:
            _check_budget(None, timeout)
        run_pbt(self, timeout=timeout)
        assert self.study is not None
        return self.study

    def result(self, *, report: bool = True, plots: bool = True) -> TuneResult:
        """The result of the study so far; with ``report``, write CSV/summary/plots to
        ``<study_dir>/report``."""
        study = self.study if self.study is not None else self.create_study()
        result = TuneResult(study=study, study_dir=self.study_dir, monitor=self.monitor)
        if report:
            result.report_files = save_report(
                study, self.study_dir / "report", monitor=self.monitor, plots=plots
            )
            if self.strategy == "pbt":
                from lightning_tune.tuner.pbt.report import save_pbt_report

                result.report_files.update(
                    save_pbt_report(study, self.study_dir / "report", self.monitor, plots=plots)
                )
            if self.dashboard_command:
                with result.report_files["summary"].open("a") as f:
                    f.write(f"\nBrowse the study: {self.dashboard_command}\n")
        return result

    def run(
        self,
        n_trials: int | None = None,
        timeout: float | None = None,
        *,
        test_best: bool = False,
        plots: bool = True,
        total: bool = False,
    ) -> TuneResult:
        """Create or continue the study, optimize, write the report and print the summary.

        ``n_trials`` means this many *more* trials (like :meth:`optimize`), or, with
        ``total=True``, the number of *finished* (COMPLETE + PRUNED) trials the study should
        have in the end, trials of earlier runs included: running the same sweep again after a
        crash continues it, and after a finished sweep does nothing. This is what
        ``lightning-tune tune --n-trials N`` does. With ``total=True`` and the default
        storage, a trial left RUNNING by a killed run is marked FAIL once its heartbeat is
        older than ``grace_period`` and retried with its parameters (the run waits for that).

        With ``test_best``, the best configuration is evaluated on the test split (from its
        kept checkpoint, or retrained when it has none).
        """
        if self.strategy != "pbt":
            _check_budget(n_trials, timeout)
        self.check_setup()
        with self.quiet_libraries():
            study = self.create_study()
        if not self.quiet:
            n_old = len(study.get_trials(deepcopy=False))
            state = f"continuing after {n_old} trials" if n_old else "new study"
            print(
                f"Study {self.study_name!r} ({state}), storage {self.storage_description}, "
                f"output in {self.study_dir}"
            )
        announce_grid(study, n_trials, quiet=self.quiet)
        if self.strategy == "pbt":
            self._run_pbt(timeout)
        elif total and n_trials is not None:
            run_worker(self, n_trials, timeout=timeout, name="tune")
        else:
            self.optimize(n_trials=n_trials, timeout=timeout)
        result = self.result(report=True, plots=plots)
        if test_best:
            result.test_metrics = self.test_best(result)
        if not self.quiet:
            print(result.summary())
            if result.report_files:
                print(f"Report: {self.study_dir / 'report'}")
            if self.dashboard_command:
                print(f"Dashboard: {self.dashboard_command}")
        return result

    def test_best(self, result: TuneResult | None = None) -> dict[str, float]:
        """Test metrics of the best configuration: from its checkpoint, or retrained."""
        result = result if result is not None else self.result(report=False)
        # several objectives: the front's trial that is best on the first metric
        best = result.best_trials[0] if self.objectives.multi else result.best_trial
        params = trial_params(best)
        NAMESPACES[0].seed_everything(self.seed + best.number, workers=True, verbose=False)
        datamodule = self.build_datamodule(params)
        module = self.build_module(params, datamodule)
        callbacks = self.build_callbacks(params)
        pl = self.trial_namespace(module, datamodule, callbacks)
        trainer_args = {
            **_TRAINER_DEFAULTS,
            **self.trainer_kwargs,
            "logger": False,
            "enable_checkpointing": False,
            "max_epochs": self.max_epochs,
            "default_root_dir": str(self.study_dir / "best"),
        }
        ckpt = result.best_checkpoint
        with self.quiet_libraries():
            if ckpt is None:
                trainer = pl.Trainer(**trainer_args, callbacks=callbacks)
                trainer.fit(module, datamodule=datamodule)
                metrics = trainer.test(module, datamodule=datamodule, verbose=False)
            else:
                trainer = pl.Trainer(**trainer_args)
                metrics = trainer.test(
                    module, datamodule=datamodule, ckpt_path=str(ckpt), verbose=False
                )
        out = {k: float(v) for k, v in (metrics[0] if metrics else {}).items()}
        (self.study_dir / "report").mkdir(parents=True, exist_ok=True)
        (self.study_dir / "report" / "best_test_metrics.json").write_text(
            json.dumps(
                {
                    "trial": best.number,
                    "params": _json_safe(params),
                    "from_checkpoint": ckpt is not None,
                    "metrics": out,
                },
                indent=2,
            )
        )
        return out
