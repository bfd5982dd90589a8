"""Running one trial: the objective, its value, failures and checkpoints (the ``Tuner``'s third
base class)."""

from __future__ import annotations

import math
import pathlib
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from types import ModuleType
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightning_tune._lightning import NAMESPACES
from lightning_tune.tuner.building import _json_safe
from lightning_tune.tuner.diagnosis import (
    diagnostics_callback,
    prune_by_diagnosis,
)
from lightning_tune.tuner.failfast import (
    write_error_log,
)
from lightning_tune.tuner.objectives import ObjectiveMetrics
from lightning_tune.tuner.recovery import lease

__all__ = ["TrialRunning"]

Params = dict[str, Any]


class TrialRunning:
    """The part of :class:`~lightning_tune.tuner.Tuner` that runs one trial.

    Example:
        >>> from lightning_tune.tuner import Tuner
        >>> issubclass(Tuner, TrialRunning)
        True
    """

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
        checkpoint = self._checkpoint_callback(pl, trial_dir)
        if checkpoint is not None:
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
        pruning.sync_from_storage()  # ddp_spawn trained in child processes
        trial.set_user_attr("fit_seconds", time.perf_counter() - fit_start)
        trial.set_user_attr("epochs", int(trainer.current_epoch))
        trial.set_user_attr("validations", pruning.validations)
        self._stop_if_pruned(trial, trial_dir, start, pruning, diagnosis)
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

    def _checkpoint_callback(self, pl: ModuleType, trial_dir: pathlib.Path) -> Any:
        """The trial's best-checkpoint callback (None with ``keep_checkpoints=0``)."""
        if self.keep_checkpoints <= 0:
            return None
        return pl.callbacks.ModelCheckpoint(
            dirpath=trial_dir / "checkpoints",
            filename="best",
            monitor=self.monitor,
            mode="min" if self.direction == "minimize" else "max",
            save_top_k=1,
            enable_version_counter=False,
        )

    @staticmethod
    def _stop_if_pruned(
        trial: optuna.Trial, trial_dir: pathlib.Path, start: float, pruning: Any, diagnosis: Any
    ) -> None:
        """Raise ``TrialPruned`` (or the failure) for a trial stopped by a diagnostics finding
        or the pruner, after recording why and removing its checkpoint."""
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
