"""Early stopping with best-weight restoring, a grace period, relative deltas and smoothing."""

from __future__ import annotations

import logging
import math
import operator
import os
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning_utilities.core.rank_zero import rank_zero_warn
from typing_extensions import override

from lightning_tune._compat import check_trainer
from lightning_tune._lightning import NAMESPACES, Callback, LightningEarlyStopping, classes
from lightning_tune._validation import check_choice, check_int, check_number, check_optional
from lightning_tune.callbacks._resume import warn_if_resume_skips_validation

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

#: Why training stopped (the enum of the default Lightning package; compare by ``.name``).
EarlyStoppingReason = NAMESPACES[0].callbacks.early_stopping.EarlyStoppingReason
_CHECKPOINTS = classes("callbacks.ModelCheckpoint")

__all__ = ["EarlyStopping", "EarlyStoppingReason"]

log = logging.getLogger(__name__)

#: ``mode`` -> (is ``a`` better than ``b``, symbol for messages, worst possible value).
MODES: dict[str, tuple[Any, str, float]] = {
    "min": (operator.lt, "<", math.inf),  # no lambdas: the callback must pickle (ddp_spawn)
    "max": (operator.gt, ">", -math.inf),
}
#: ``min_delta_mode`` -> the margin an improvement must exceed, given ``min_delta`` and the best.
DELTA_MODES: dict[str, Any] = {
    "abs": lambda delta, best: delta,
    "rel": lambda delta, best: delta * abs(best),
}
RESTORE_SOURCES = ("auto", "memory", "checkpoint")


class EarlyStopping(LightningEarlyStopping):
    """Stop training when a monitored metric stops improving; optionally restore the best weights.

    A subclass of Lightning's ``EarlyStopping`` with its own implementation: the Trainer treats
    it as an early-stopping callback (``trainer.early_stopping_callback``, and its
    ``on_train_epoch_end`` check runs after the LightningModule's, so metrics logged there are
    seen).

    Does what Lightning's ``EarlyStopping`` does (``monitor``, ``mode``, ``patience``,
    ``min_delta``, ``stopping_threshold``, ``divergence_threshold``, ``check_finite``, ``strict``,
    ``check_on_train_epoch_end``, ``stopping_reason`` / ``stopping_reason_message``) and also:

    * ``restore_best_weights``: at the end of ``fit`` the module holds the weights of the best
      check. They are kept as a CPU copy (saved in checkpoints too, so resuming keeps them), or,
      with ``restore_from="checkpoint"`` (or ``"auto"`` when a ``ModelCheckpoint`` monitors the
      same metric and mode and this callback has no smoothing, delta or grace period), read
      back from that callback's ``best_model_path`` without any copy in memory.
    * ``start_from_epoch``: checks before this epoch are ignored entirely (no best, no patience).
    * ``Trainer(min_epochs=..., min_steps=...)``: the stop is only signalled once they are met,
      so Lightning never has to refuse it (and never runs extra validations); patience keeps
      counting meanwhile.
    * ``min_delta_mode="rel"``: an improvement must beat the best by ``min_delta * |best|``.
    * ``smoothing``: compare an exponential moving average of the metric,
      ``ema = smoothing * ema + (1 - smoothing) * value``, instead of the raw value.
    * Validation every N epochs or several times per epoch: by default the check runs after
      each validation (at train-epoch end only when validation runs exactly once per epoch);
      ``patience`` counts checks.
    * Resuming continues wait count, best score, smoothing and best weights from the
      checkpoint; the constructor's settings (``patience``, ...) are never overwritten.

    Args:
        monitor: the logged metric to watch.
        mode: ``"min"`` or ``"max"``.
        patience: checks without improvement before stopping (>= 0).
        min_delta: the margin (>= 0) an improvement must exceed.
        min_delta_mode: ``"abs"`` (margin = ``min_delta``) or ``"rel"`` (``min_delta * |best|``).
        start_from_epoch: grace period: ignore checks of epochs before this one.
        smoothing: EMA factor in [0, 1) applied to the metric before comparing (0: none).
        restore_best_weights: load the best weights into the module at the end of ``fit``.
        restore_from: where the best weights come from: ``"auto"``, ``"memory"`` or
            ``"checkpoint"`` (a ``ModelCheckpoint`` with the same ``monitor`` and ``mode``).
        stopping_threshold: stop as soon as the metric is better than this.
        divergence_threshold: stop as soon as the metric is worse than this.
        check_finite: stop when the metric becomes NaN or infinite.
        strict: raise if the metric is missing (else warn once and skip the check).
        check_on_train_epoch_end: check at the end of the training epoch instead of after
            validation (None: only if validation runs exactly once every epoch).
        verbose: log every improvement and the reason for stopping.

    Attributes:
        wait_count: checks since the last improvement.
        best_score: the best (smoothed) value so far.
        best_epoch: the epoch of the best check (None before the first one).
        stopped_epoch: the epoch at which training was stopped (0 if it was not).
        stopping_reason: an ``EarlyStoppingReason``.
        stopping_reason_message: why training stopped, in words (None if it did not).
        restored_epoch: the epoch whose weights were restored at the end of ``fit`` (or None).

    Example:
        >>> early = EarlyStopping("val_loss", patience=2, min_delta=0.01, min_delta_mode="rel")
        >>> early.state_key
        "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"
        >>> EarlyStopping("val_loss", patience=-1)
        Traceback (most recent call last):
        ...
        ValueError: `patience` must be an int >= 0, but got patience=-1
    """

    def __init__(
        self,
        monitor: str,
        mode: Literal["min", "max"] = "min",
        patience: int = 3,
        min_delta: float = 0.0,
        min_delta_mode: Literal["abs", "rel"] = "abs",
        start_from_epoch: int = 0,
        smoothing: float = 0.0,
        restore_best_weights: bool = False,
        restore_from: Literal["auto", "memory", "checkpoint"] = "auto",
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_finite: bool = True,
        strict: bool = True,
        check_on_train_epoch_end: bool | None = None,
        verbose: bool = False,
    ) -> None:
        # Lightning's __init__ would validate, flip min_delta's sign and keep tensors: our
        # settings and state are all set here, and every hook it defines is overridden.
        Callback.__init__(self)
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"`monitor` must be a non-empty metric name, but got {monitor=!r}")
        self.monitor = monitor
        self.mode = check_choice("mode", mode, sorted(MODES))
        check_choice("min_delta_mode", min_delta_mode, sorted(DELTA_MODES))
        check_choice("restore_from", restore_from, RESTORE_SOURCES)
        self.patience = check_int("patience", patience, minimum=0)
        self.min_delta = check_number("min_delta", min_delta, low=0)
        self.min_delta_mode = min_delta_mode
        self.start_from_epoch = check_int("start_from_epoch", start_from_epoch, minimum=0)
        self.smoothing = check_number("smoothing", smoothing, low=0, high=1, high_open=True)
        self.restore_best_weights = bool(restore_best_weights)
        self.restore_from = restore_from
        self.stopping_threshold = check_optional(
            check_number, "stopping_threshold", stopping_threshold, finite=False
        )
        self.divergence_threshold = check_optional(
            check_number, "divergence_threshold", divergence_threshold, finite=False
        )
        self.check_finite = bool(check_finite)
        self.strict = bool(strict)
        if check_on_train_epoch_end is not None and not isinstance(check_on_train_epoch_end, bool):
            raise TypeError(
                f"`check_on_train_epoch_end` must be a bool or None, "
                f"but got {check_on_train_epoch_end=!r}"
            )
        self.check_on_train_epoch_end = check_on_train_epoch_end
        self.verbose = bool(verbose)
        self._better, self._symbol, worst = MODES[mode]
        # Lightning reads state_key around every hook call: build it once.
        self._state_key = self._generate_state_key(monitor=monitor, mode=mode)
        self._reset_state(worst)

    def _reset_state(self, worst: float) -> None:
        """What a run learns (saved in checkpoints) and its runtime helpers."""
        self.wait_count = 0
        self.best_score: float = worst
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        self.smoothed: float | None = None
        self.stopped_epoch = 0
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None
        self.restored_epoch: int | None = None
        self._best_weights: dict[str, torch.Tensor] | None = None
        self._checkpoint: ModelCheckpoint | None = None
        self._on_epoch_end = bool(self.check_on_train_epoch_end)
        self._warned_missing = False
        self._restored = False  # loaded from a checkpoint and not checked since
        self._pending: float | None = None  # the metric of a validation before the epoch's check

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    # ---------------------------------------------------------------------------------- setup
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_trainer(trainer, self, pl_module)
        if self.check_on_train_epoch_end is None:
            self._on_epoch_end = (
                trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1
            )
        self._checkpoint = None
        if not self.restore_best_weights or self.restore_from == "memory":
            return
        matching = [
            cb
            for cb in trainer.checkpoint_callbacks
            if isinstance(cb, _CHECKPOINTS)
            and cb.monitor == self.monitor
            and cb.mode == self.mode
            and cb.save_top_k != 0
        ]
        same_rule = self.smoothing == 0 and self.min_delta == 0 and self.start_from_epoch == 0
        if matching and (same_rule or self.restore_from == "checkpoint"):
            self._checkpoint = matching[0]
        elif self.restore_from == "checkpoint":
            found = [
                f"ModelCheckpoint(monitor={cb.monitor!r}, mode={getattr(cb, 'mode', '?')!r})"
                for cb in trainer.checkpoint_callbacks
            ]
            raise ValueError(
                f"EarlyStopping(restore_from='checkpoint') needs a ModelCheckpoint with "
                f"monitor={self.monitor!r}, mode={self.mode!r} and save_top_k != 0, but the "
                f"Trainer has {found or 'no checkpoint callback'}. Add one, or use "
                f"restore_from='memory'."
            )

    # ---------------------------------------------------------------------------------- hooks
    def _skip(self, trainer: pl.Trainer) -> bool:
        return trainer.state.fn != "fit" or trainer.sanity_checking or bool(trainer.fast_dev_run)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._on_epoch_end and not self._skip(trainer):
            self._check(trainer, pl_module, at_epoch_end=True)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._skip(trainer):
            return
        if not self._on_epoch_end:
            self._check(trainer, pl_module, at_epoch_end=trainer.is_last_batch)
        elif self.monitor in trainer.callback_metrics:
            # Checked at this epoch's end. Kept in the state: a checkpoint written now (at the
            # end of this validation) resumes at that check with no metric logged.
            self._pending = float(trainer.callback_metrics[self.monitor].squeeze())

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.restore_best_weights and self.best_epoch is not None:
            self._restore(pl_module)

    # ---------------------------------------------------------------------------------- check
    def _metric(self, trainer: pl.Trainer) -> float | None:
        logs = trainer.callback_metrics
        if self.monitor in logs:
            return float(logs[self.monitor].squeeze())
        message = (
            f"EarlyStopping(monitor={self.monitor!r}) found no metric {self.monitor!r}. "
            f"Logged metrics: {sorted(logs) or 'none'}. Log it with `self.log({self.monitor!r}, "
            f"...)` (in validation, or in training with check_on_train_epoch_end=True), or "
            f"monitor one of the logged metrics."
        )
        if self.strict:
            raise RuntimeError(message)
        if not self._warned_missing:
            rank_zero_warn(message + " (strict=False: skipping the check)")
            self._warned_missing = True
        return None

    def _check(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, at_epoch_end: bool
    ) -> None:
        restored, self._restored = self._restored, False
        pending, self._pending = self._pending, None
        if restored and self.monitor not in trainer.callback_metrics:
            # Resumed from a checkpoint written at the end of a validation: Lightning ends that
            # validation (and the train epoch) again without running it, so nothing is logged.
            # A check at validation end is already in the state; one at the epoch's end uses
            # the value that validation logged (kept in the state).
            if pending is None:
                return
            current: float | None = pending
        else:
            current = self._metric(trainer)
        if current is None or trainer.current_epoch < self.start_from_epoch:
            return
        value = current
        if self.smoothing and math.isfinite(current):
            prev = self.smoothed
            value = (
                current if prev is None else self.smoothing * prev + (1 - self.smoothing) * current
            )
            self.smoothed = value
        stop, reason, message = self._evaluate(current, value)
        if message is None:  # improved
            self.best_score, self.wait_count = value, 0
            self.best_epoch, self.best_step = trainer.current_epoch, trainer.global_step
            if self.restore_best_weights and self._checkpoint is None:
                self._best_weights = {
                    k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()
                }
            if self.verbose:
                log.info(
                    f"EarlyStopping: {self.monitor} improved to {value:.6g} "
                    f"at epoch {trainer.current_epoch}"
                )
            stop = False
        else:
            completed = trainer.current_epoch + int(at_epoch_end)
            allowed = completed >= (trainer.min_epochs or 0) and trainer.global_step >= (
                trainer.min_steps or 0
            )
            stop = stop and allowed
        # Every rank takes part in this collective, improved or not (else DDP hangs when the
        # ranks' metrics differ); any rank's stop stops all.
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch
            if message is not None:  # else: stopped by another rank
                self.stopping_reason = reason
                self.stopping_reason_message = message
                if self.verbose:
                    log.info(f"EarlyStopping: {message}")

    def _evaluate(
        self, current: float, value: float
    ) -> tuple[bool, EarlyStoppingReason, str | None]:
        """Return (stop, reason, message); ``message`` is None when the metric improved."""
        name, sym = self.monitor, self._symbol
        best = f"{self.best_score:.6g}" + (
            f" at epoch {self.best_epoch}" if self.best_epoch is not None else ""
        )
        if self.check_finite and not math.isfinite(current):
            return (
                True,
                EarlyStoppingReason.NON_FINITE_METRIC,
                (f"{name} = {current} is not finite; best was {best}. Stopping."),
            )
        if self.stopping_threshold is not None and self._better(current, self.stopping_threshold):
            return (
                True,
                EarlyStoppingReason.STOPPING_THRESHOLD,
                (
                    f"stopping threshold reached: {name} = {current:.6g} {sym} "
                    f"{self.stopping_threshold:.6g}. Stopping."
                ),
            )
        if self.divergence_threshold is not None and self._better(
            self.divergence_threshold, current
        ):
            return (
                True,
                EarlyStoppingReason.DIVERGENCE_THRESHOLD,
                (
                    f"divergence threshold reached: {name} = {current:.6g} is worse than "
                    f"{self.divergence_threshold:.6g}. Stopping."
                ),
            )
        margin = 0.0
        if math.isfinite(self.best_score):
            margin = DELTA_MODES[self.min_delta_mode](self.min_delta, self.best_score)
        target = self.best_score + margin if self.mode == "max" else self.best_score - margin
        if math.isfinite(value) and self._better(value, target):
            return False, EarlyStoppingReason.NOT_STOPPED, None
        self.wait_count += 1
        stop = self.wait_count >= self.patience
        smoothed = " (smoothed)" if self.smoothing else ""
        return (
            stop,
            EarlyStoppingReason.PATIENCE_EXHAUSTED,
            (
                f"{name}{smoothed} did not improve in the last {self.wait_count} checks "
                f"(patience={self.patience}, min_delta={self.min_delta} {self.min_delta_mode}); "
                f"best was {best}. Stopping."
            ),
        )

    # -------------------------------------------------------------------------------- restore
    def _restore(self, pl_module: pl.LightningModule) -> None:
        if self._checkpoint is not None:
            path = self._checkpoint.best_model_path
            if not path or not os.path.exists(path):
                rank_zero_warn(
                    f"EarlyStopping(restore_best_weights=True): the ModelCheckpoint has no best "
                    f"checkpoint ({path!r}); the module keeps its last weights."
                )
                return
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            epoch = checkpoint.get("epoch")
            if epoch != self.best_epoch:
                rank_zero_warn(
                    f"EarlyStopping: the best checkpoint {path!r} is from epoch {epoch}, but the "
                    f"best check was at epoch {self.best_epoch}; restoring the checkpoint."
                )
            pl_module.load_state_dict(checkpoint["state_dict"])
            self.restored_epoch = epoch
        elif self._best_weights is not None:
            pl_module.load_state_dict(self._best_weights)
            self.restored_epoch = self.best_epoch
        if self.verbose and self.restored_epoch is not None:
            log.info(f"EarlyStopping: restored the weights of epoch {self.restored_epoch}")

    # ---------------------------------------------------------------------------------- state
    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        warn_if_resume_skips_validation(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "wait_count": self.wait_count,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "smoothed": self.smoothed,
            "stopped_epoch": self.stopped_epoch,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
        }
        if self._best_weights is not None:
            state["best_weights"] = self._best_weights
        if self._pending is not None:
            state["pending"] = self._pending
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Only run state: the constructor's settings (patience, min_delta, ...) stay as given.
        self.wait_count = int(state_dict.get("wait_count", 0))
        best = state_dict.get("best_score", self.best_score)
        self.best_score = float(best)
        self.best_epoch = state_dict.get("best_epoch")
        self.best_step = state_dict.get("best_step")
        self.smoothed = state_dict.get("smoothed")
        self.stopped_epoch = int(state_dict.get("stopped_epoch", 0))
        self.stopping_reason = EarlyStoppingReason(
            state_dict.get("stopping_reason", EarlyStoppingReason.NOT_STOPPED.value)
        )
        self.stopping_reason_message = state_dict.get("stopping_reason_message")
        self._best_weights = state_dict.get("best_weights")
        self._pending = state_dict.get("pending")
        self._restored = True
