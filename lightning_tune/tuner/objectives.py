"""What a sweep optimizes: one metric, or several at once (a Pareto front).

``Tuner(monitor=["val_loss", "params_m"], direction=["minimize", "minimize"])`` makes a
multi-objective Optuna study. Every monitored metric must be logged at each validation, by the
module or by a callback such as :class:`~lightning_tune.callbacks.ModelCost` (parameter count,
measured inference time). A trial's values all come from *one* validation: the last one
(``objective="last"``) or the one where the first metric was best (``objective="best"``), so a
trial's point on the front is a model that existed. Optuna cannot prune multi-objective trials
(``Trial.report`` is single-objective), so the default ``pruner="auto"`` means Hyperband for one
metric and no pruning for several, and asking for a pruner with several metrics is an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.pruners import BasePruner, NopPruner
from optuna.samplers import CmaEsSampler
from typing_extensions import override

from lightning_tune._lightning import Callback
from lightning_tune.tuner.factories import MULTI_OBJECTIVE_SAMPLERS
from lightning_tune.tuner.pruning import MetricNotFoundError

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["DIRECTIONS", "ObjectiveMetrics", "Objectives"]

DIRECTIONS = ("minimize", "maximize")


def _names(monitor: Any) -> tuple[str, ...]:
    names = (monitor,) if isinstance(monitor, str) else monitor
    if (
        isinstance(names, (bytes, dict))
        or not isinstance(names, Sequence)
        or not names
        or not all(isinstance(m, str) and m for m in names)
    ):
        raise TypeError(
            "`monitor` must be a metric name or a list of metric names, but got "
            f"monitor={monitor!r}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"`monitor` must not repeat a metric, but got monitor={list(names)!r}")
    return tuple(names)


@dataclass(frozen=True)
class Objectives:
    """The monitored metrics and their directions, checked together.

    Example:
        >>> objectives = Objectives.parse(["val_loss", "params_m"], ["minimize", "minimize"])
        >>> objectives.multi, objectives.resolve_pruner("auto")
        (True, 'none')
        >>> Objectives.parse(["val_loss", "params_m"], ["minimize"])
        Traceback (most recent call last):
        ...
        ValueError: `direction` has 1 entry but `monitor` has 2 metrics ['val_loss', 'params_m']: give one direction per metric, e.g. direction=['minimize', 'minimize']
    """

    monitors: tuple[str, ...]
    directions: tuple[str, ...]

    @classmethod
    def parse(cls, monitor: str | Sequence[str], direction: str | Sequence[str]) -> Objectives:
        """Check ``monitor`` and ``direction`` (one direction per metric)."""
        monitors = _names(monitor)
        if isinstance(direction, str):
            if len(monitors) > 1:
                raise ValueError(
                    f"`direction` must be a list with one direction per metric of `monitor` "
                    f"{list(monitors)}, but got direction={direction!r}"
                )
            directions: tuple[Any, ...] = (direction,)
        elif isinstance(direction, Sequence):
            directions = tuple(direction)
        else:
            raise TypeError(f"`direction` must be a string or a list, but got {direction=!r}")
        if len(directions) != len(monitors):
            entries = "entry" if len(directions) == 1 else "entries"
            raise ValueError(
                f"`direction` has {len(directions)} {entries} but `monitor` has "
                f"{len(monitors)} metrics {list(monitors)}: give one direction per metric, "
                f"e.g. direction={['minimize'] * len(monitors)}"
            )
        bad = [d for d in directions if d not in DIRECTIONS]
        if bad:
            shown = directions[0] if len(directions) == 1 else list(directions)
            raise ValueError(
                f"`direction` must be one of {list(DIRECTIONS)} (one per metric), but got "
                f"direction={shown!r}"
            )
        return cls(monitors, directions)

    @property
    def multi(self) -> bool:
        """Whether there are several objectives."""
        return len(self.monitors) > 1

    def resolve_pruner(self, pruner: Any) -> Any:
        """``"auto"``: Hyperband for one metric, none for several; pruning several is refused."""
        if isinstance(pruner, str) and pruner == "auto":
            return "none" if self.multi else "hyperband"
        pruning = not (pruner is None or pruner == "none" or isinstance(pruner, NopPruner))
        if self.multi and pruning:
            shown = type(pruner).__name__ if isinstance(pruner, BasePruner) else repr(pruner)
            raise ValueError(
                f"`pruner`={shown} cannot prune a sweep with several objectives (monitor="
                f"{list(self.monitors)}): Optuna prunes single-objective studies only; use "
                "pruner='none' (what the default pruner='auto' does)"
            )
        return pruner

    def check_sampler(self, sampler: Any) -> None:
        """Refuse a single-objective sampler for several objectives."""
        if self.multi and (sampler == "cmaes" or isinstance(sampler, CmaEsSampler)):
            raise ValueError(
                f"`sampler`='cmaes' optimizes a single objective, but monitor="
                f"{list(self.monitors)} has {len(self.monitors)}; use one of "
                f"{list(MULTI_OBJECTIVE_SAMPLERS)} (e.g. 'nsga2' or 'tpe')"
            )

    def values(self, rows: Sequence[dict[str, float]], mode: str) -> list[float]:
        """The trial's values: all metrics from the last validation (``mode="last"``) or from
        the one where the first metric was best (``"best"``)."""
        if mode == "last":
            row = rows[-1]
        else:
            first, sign = self.monitors[0], 1.0 if self.directions[0] == "minimize" else -1.0
            finite = [r for r in rows if math.isfinite(r[first])] or list(rows)
            row = min(finite, key=lambda r: sign * r[first])
        return [float(row[m]) for m in self.monitors]


class ObjectiveMetrics(Callback):
    """Records every monitored metric after each validation (not the sanity check).

    A metric that is not logged is a :class:`~lightning_tune.tuner.pruning.MetricNotFoundError`
    listing the logged ones.

    Example:
        >>> recorder = ObjectiveMetrics(["val_loss", "params_m"])
        >>> recorder.state_key, recorder.rows
        ("ObjectiveMetrics{'monitors': ['val_loss', 'params_m']}", [])
    """

    def __init__(self, monitors: Sequence[str]) -> None:
        super().__init__()
        self.monitors = list(_names(list(monitors)))
        self.rows: list[dict[str, float]] = []
        self._state_key = self._generate_state_key(monitors=self.monitors)

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        missing = [m for m in self.monitors if m not in metrics]
        if missing:
            raise MetricNotFoundError(
                f"the monitored metrics {missing} were not logged at validation "
                f"{len(self.rows)}; logged metrics: {sorted(metrics)}. Log them with `self.log` "
                "in the module, or add a callback that does (e.g. ModelCost for params_m / "
                "inference_ms)."
            )
        self.rows.append({m: float(metrics[m]) for m in self.monitors})

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]
