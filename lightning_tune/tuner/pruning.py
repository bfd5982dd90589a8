"""Report validation metrics to an Optuna trial and stop pruned trials cleanly.

Unlike raising :class:`optuna.TrialPruned` from inside ``fit`` (as optuna-integration's
``PyTorchLightningPruningCallback`` does), :class:`OptunaPruning` only sets
``trainer.should_stop``: ``fit`` returns normally, dataloaders, loggers and checkpoints are
closed by Lightning, and the caller decides what to record (:meth:`OptunaPruning.check`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import optuna
from typing_extensions import override

from lightning_tune._lightning import Callback

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["MetricNotFoundError", "NonFiniteMetricError", "OptunaPruning", "final_validation"]

_ON_NONFINITE = ("prune", "fail")


class MetricNotFoundError(ValueError):
    """The monitored metric was not logged; the message lists the metrics that were.

    Example:
        >>> issubclass(MetricNotFoundError, ValueError)  # a configuration error
        True
    """


class NonFiniteMetricError(RuntimeError):
    """The monitored metric became NaN or infinite and the trial is failed (``on_nonfinite="fail"``).

    Example:
        >>> issubclass(NonFiniteMetricError, RuntimeError)
        True
    """


def final_validation(trainer: pl.Trainer) -> bool:
    """Whether the validation that just ran is the last one of ``fit`` (its full budget).

    True at the last training batch of the last epoch (``max_epochs``) or once ``max_steps``
    optimizer steps are done.

    Example:
        >>> import pytorch_lightning as pl
        >>> final_validation(pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False))
        False
    """
    if trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step:
        return True
    max_epochs = trainer.max_epochs
    if max_epochs is None or max_epochs < 0:
        return False
    return trainer.current_epoch >= max_epochs - 1 and bool(trainer.is_last_batch)


class OptunaPruning(Callback):
    """Report ``monitor`` to ``trial`` after every validation and stop the trainer when pruned.

    The reported step is the number of validations run before this one (0, 1, 2, ...), so it
    equals the epoch index when validating once per epoch and stays unique when validating
    several times per epoch (``val_check_interval``). The sanity check is not reported. The
    final validation (last batch of the last epoch, or ``max_steps`` reached) is reported but
    never pruned: a trial that has used its whole budget completes.

    After ``fit`` returns, call :meth:`check`: it raises :class:`optuna.TrialPruned` (with the
    reason) if the trial was pruned, or :class:`NonFiniteMetricError` if the metric became
    NaN/inf and ``on_nonfinite="fail"``.

    Args:
        trial: the Optuna trial to report to.
        monitor: the logged metric to report (e.g. ``"val_loss"``).
        on_nonfinite: ``"prune"`` (default) or ``"fail"`` the trial when the metric is NaN or
            infinite; either way training stops and the reason is kept in :attr:`reason`.

    Example:
        >>> study = optuna.create_study()
        >>> callback = OptunaPruning(study.ask(), monitor="val_loss")
        >>> callback.state_key
        "OptunaPruning{'monitor': 'val_loss'}"
        >>> callback.check()  # nothing happened yet: neither pruned nor failed
    """

    def __init__(
        self,
        trial: optuna.Trial,
        monitor: str = "val_loss",
        on_nonfinite: Literal["prune", "fail"] = "prune",
    ) -> None:
        super().__init__()
        if not isinstance(trial, optuna.Trial):
            raise TypeError(f"`trial` must be an optuna.Trial, but got {type(trial).__name__}")
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"`monitor` must be a non-empty string, but got {monitor!r}")
        if on_nonfinite not in _ON_NONFINITE:
            raise ValueError(
                f"`on_nonfinite` must be one of {list(_ON_NONFINITE)}, but got {on_nonfinite=!r}"
            )
        self.trial = trial
        self.monitor = monitor
        self.on_nonfinite = on_nonfinite
        self.validations = 0
        self.values: list[float] = []
        self.status: Literal["running", "pruned", "failed"] = "running"
        self.reason: str | None = None
        # Lightning reads state_key around every hook call of every step: build it once.
        self._state_key = self._generate_state_key(monitor=self.monitor)

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    @property
    def pruned(self) -> bool:
        """Whether the trial was pruned (including a NaN/inf metric with ``"prune"``)."""
        return self.status == "pruned"

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        step = self.validations
        self.validations += 1
        if self.status != "running":
            return  # already stopping (e.g. held by min_epochs): report nothing more
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise MetricNotFoundError(
                f"OptunaPruning: the monitored metric {self.monitor!r} was not logged at "
                f"validation {step}; logged metrics: {sorted(metrics)}. Set `monitor` to one "
                "of them or log it with `self.log` in `validation_step`."
            )
        value = float(metrics[self.monitor])
        if not math.isfinite(value):
            self.status = "pruned" if self.on_nonfinite == "prune" else "failed"
            self.reason = (
                f"{self.monitor}={value} at validation step {step} (epoch {trainer.current_epoch})"
            )
            trainer.should_stop = True
            return
        self.values.append(value)
        if len(self.trial.study.directions) > 1:
            return  # Optuna prunes single-objective studies only: nothing to report to
        self.trial.report(value, step)
        # A trial that has used its whole budget completes: pruning it now would save nothing
        # and drop a fully trained configuration from the ranking.
        if not final_validation(trainer) and self.trial.should_prune():
            self.status = "pruned"
            self.reason = (
                f"pruned at validation step {step} (epoch {trainer.current_epoch}) with "
                f"{self.monitor}={value:.6g}"
            )
            trainer.should_stop = True

    def check(self) -> None:
        """Raise ``optuna.TrialPruned`` or :class:`NonFiniteMetricError` if the trial ended so."""
        if self.status == "pruned":
            raise optuna.TrialPruned(self.reason)
        if self.status == "failed":
            raise NonFiniteMetricError(f"trial {self.trial.number} failed: {self.reason}")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "validations": self.validations,
            "values": list(self.values),
            "status": self.status,
            "reason": self.reason,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = int(state_dict.get("validations", 0))
        self.values = [float(v) for v in state_dict.get("values", [])]
        self.status = state_dict.get("status", "running")
        self.reason = state_dict.get("reason")
