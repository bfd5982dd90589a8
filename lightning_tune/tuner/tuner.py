"""The tuner: an Optuna study over a LightningModule, with pruning, checkpoints and reports."""

from __future__ import annotations

import json
import logging
import pathlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Literal

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from lightning_tune._lightning import NAMESPACES, logs_at
from lightning_tune._validation import check_bool, check_choice, check_int, check_optional
from lightning_tune.tuner.building import _TRAINER_DEFAULTS, TrialBuilding, _json_safe
from lightning_tune.tuner.diagnosis import (
    diagnostics_kwargs,
)
from lightning_tune.tuner.factories import make_pruner, make_sampler
from lightning_tune.tuner.failfast import (
    FailureStreak,
    TooManyFailuresError,
    accepted_kwargs,
)
from lightning_tune.tuner.grid import announce_grid
from lightning_tune.tuner.loop import check_timeout, run_worker
from lightning_tune.tuner.objectives import Objectives
from lightning_tune.tuner.pruning import MetricNotFoundError
from lightning_tune.tuner.recovery import HEARTBEAT_INTERVAL, MAX_RETRY
from lightning_tune.tuner.report import (
    format_trial_line,
    save_report,
    trial_params,
)
from lightning_tune.tuner.result import TuneResult
from lightning_tune.tuner.space import SearchSpace
from lightning_tune.tuner.storage_files import storage_guard
from lightning_tune.tuner.studies import StudyHandling
from lightning_tune.tuner.trials import TrialRunning

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


_STRATEGIES = ("sweep", "pbt")
_RESUME = ("check", "force", "new")
_OBJECTIVES = ("best", "last")
# Lightning warnings that say nothing about a tuning run (tiny epochs, our own test-time reload).
_NOISY_WARNINGS = (
    ".*smaller than the logging interval.*",
    ".*LeafSpec.*",
    ".*callbacks used to create the checkpoint need to be provided.*",
    ".*does not have many workers.*",
)
# The logger of Optuna's optimize loop, which logs each failed trial with its traceback.
_OPTUNA_TRIAL_LOG = "optuna.study._optimize"


def _check_budget(n_trials: int | None, timeout: float | None) -> None:
    if n_trials is None and timeout is None:
        raise ValueError("give `n_trials` and/or `timeout`, so that the sweep ends")
    check_optional(check_int, "n_trials", n_trials, minimum=1, type_error=ValueError)
    check_timeout(timeout)


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


class Tuner(TrialBuilding, StudyHandling, TrialRunning):
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
        heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
        grace_period: int | None = None,
        max_retry: int | None = MAX_RETRY,
        strategy: Literal["sweep", "pbt"] = "sweep",
        pbt: Any = None,
        diagnostics: bool | Mapping[str, Any] = False,
        preflight: bool = False,
        max_consecutive_failures: int | None = 3,
        resume: Literal["check", "force", "new"] = "check",
    ) -> None:
        self._set_sources(module, module_kwargs, datamodule, datamodule_kwargs, callbacks)
        self.search_space = SearchSpace.coerce(search_space)
        self._check_params_consumed()
        # -- what to optimize (several metrics: a multi-objective study)
        self.objectives = Objectives.parse(monitor, direction)
        # The first metric is the one pruning, checkpoints and progress lines follow.
        self.monitor = self.objectives.monitors[0]
        self.direction = self.objectives.directions[0]
        self.monitors = self.objectives.monitors
        self.objective_mode = check_choice("objective", objective, _OBJECTIVES)
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ("prune", "fail"))
        self._set_training(max_epochs, trainer_kwargs, keep_checkpoints, loggers, seed)
        self.quiet = quiet
        self._set_search(strategy, pruner, pruner_kwargs, sampler, sampler_kwargs, pbt)
        self._set_study(
            study_name, output_dir, storage, heartbeat_interval, grace_period, max_retry
        )
        self.preflight = check_bool("preflight", preflight)
        self.max_consecutive_failures = check_optional(
            check_int, "max_consecutive_failures", max_consecutive_failures, minimum=1
        )
        self.resume = check_choice("resume", resume, _RESUME)
        self._checked = False
        self.diagnostics = diagnostics_kwargs(diagnostics)

    def _set_search(
        self,
        strategy: str,
        pruner: Any,
        pruner_kwargs: Mapping[str, Any] | None,
        sampler: Any,
        sampler_kwargs: Mapping[str, Any] | None,
        pbt: Any,
    ) -> None:
        """Where and how to search: checked now, built again per study."""
        self.pruner_kwargs = dict(pruner_kwargs or {})
        self.sampler_kwargs = dict(sampler_kwargs or {})
        self.strategy = check_choice("strategy", strategy, _STRATEGIES)
        if isinstance(pruner, str) and pruner == "auto":
            pruner = "none" if strategy == "pbt" or self.objectives.multi else "hyperband"
        pruner = self.objectives.resolve_pruner(pruner)
        self.objectives.check_sampler(sampler)
        self.pruner = make_pruner(pruner, self.pruner_kwargs, max_resource=self.max_resource)
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
        make_sampler(sampler, self.sampler_kwargs, seed=self.seed, search_space=self.search_space)

    # ------------------------------------------------------------------------------- loops
    @contextmanager
    def quiet_libraries(self) -> Iterator[None]:
        """Context manager: Lightning and Optuna logs at WARNING, tuning-irrelevant warnings off."""
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            # A failed trial is one line from us (traceback in its error.log), not Optuna's
            # warning with the whole traceback.
            with (
                logs_at(logging.WARNING),
                logs_at(logging.ERROR, [_OPTUNA_TRIAL_LOG]),
                warnings.catch_warnings(),
            ):
                for message in _NOISY_WARNINGS:
                    warnings.filterwarnings("ignore", message=message)
                yield
        finally:
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
