"""What a sweep found: :class:`TuneResult`."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from lightning_tune.tuner.report import (
    objective_names,
    pareto_front,
    summary_table,
    trial_params,
    trials_frame,
)

__all__ = ["TuneResult"]


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
