"""Where a checkpoint is taken matters for resuming: find the points that lose a validation."""

from __future__ import annotations

import warnings
import weakref
from typing import TYPE_CHECKING, Any

from lightning_tune._lightning import NAMESPACES

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["resume_skips_validation", "warn_if_resume_skips_validation"]

_WARNED: weakref.WeakSet[Any] = weakref.WeakSet()


def _has_validation_step(module: Any) -> bool:
    """Whether ``module`` defines ``validation_step`` (Lightning's own is a placeholder)."""
    impl = getattr(type(module), "validation_step", None)
    return impl is not None and all(
        impl is not getattr(ns.LightningModule, "validation_step", None) for ns in NAMESPACES
    )


def resume_skips_validation(trainer: pl.Trainer) -> bool:
    """Whether a checkpoint written now would, on resume, skip a validation that is due.

    True inside the hooks of an epoch's last training batch (where ``ModelCheckpoint(
    every_n_train_steps=...)`` saves when the step lands there) when a validation is due at
    that epoch's end: Lightning resumes such a checkpoint at the next epoch and never runs it.
    Not when ``val_check_interval`` puts the validation elsewhere (the resumed run validates
    where the uninterrupted one does).
    Also after a fit that stopped there (an exception in those hooks): the loops' state, and so
    the checkpoint, is the same.

    Example:
        >>> trainer = NAMESPACES[0].Trainer(logger=False, enable_progress_bar=False)
        >>> resume_skips_validation(trainer)
        False
    """
    if trainer.lightning_module is None:
        return False
    progress = trainer.fit_loop.epoch_loop.batch_progress
    if not progress.is_last_batch or progress.current.completed >= progress.current.processed:
        return False
    if trainer.limit_val_batches == 0 or not _has_validation_step(trainer.lightning_module):
        return False
    every = trainer.check_val_every_n_epoch
    if every is not None and (trainer.current_epoch + 1) % every != 0:
        return False
    # Lightning validates after every `val_check_batch`-th batch, counted in the epoch (or over
    # the run without `check_val_every_n_epoch`); `inf` (no length): at the last batch.
    interval = trainer.val_check_batch
    if interval is None or interval == float("inf"):
        return True
    counted = progress.total if every is None else progress.current
    return counted.ready % int(interval) == 0


def warn_if_resume_skips_validation(trainer: pl.Trainer) -> None:
    """Warn once per Trainer when a checkpoint is written where resuming skips a validation.

    Example:
        >>> warn_if_resume_skips_validation(NAMESPACES[0].Trainer(logger=False))
    """
    if trainer in _WARNED or not resume_skips_validation(trainer):
        return
    if not trainer.is_global_zero:
        return
    _WARNED.add(trainer)
    batches = trainer.num_training_batches
    warnings.warn(
        f"lightning_tune: a checkpoint is written at the last training batch of epoch "
        f"{trainer.current_epoch} (step {trainer.global_step}), before that epoch's validation. "
        "Lightning resumes such a checkpoint at the next epoch and skips that validation, so "
        "EarlyStopping, a monitored ModelCheckpoint and pruning miss one check (every other "
        "state of lightning_tune's callbacks resumes exactly). Checkpoints written after the "
        "validation avoid it: ModelCheckpoint(every_n_epochs=1) or "
        "ModelCheckpoint(save_on_train_epoch_end=False), or an `every_n_train_steps` that does "
        f"not land on an epoch's last batch ({batches} batches per epoch).",
        UserWarning,
        stacklevel=2,
    )
