"""Where a checkpoint is taken matters for resuming: find the points that lose a validation."""

from __future__ import annotations

import weakref

import pytorch_lightning as pl
from pytorch_lightning.utilities.model_helpers import is_overridden
from pytorch_lightning.utilities.rank_zero import rank_zero_warn

__all__ = ["resume_skips_validation", "warn_if_resume_skips_validation"]

_WARNED: weakref.WeakSet[pl.Trainer] = weakref.WeakSet()


def resume_skips_validation(trainer: pl.Trainer) -> bool:
    """Whether a checkpoint written now would, on resume, skip a validation that is due.

    True inside the hooks of an epoch's last training batch (where ``ModelCheckpoint(
    every_n_train_steps=...)`` saves when the step lands there) when a validation is due at
    that epoch's end: Lightning resumes such a checkpoint at the next epoch and never runs it.

    Example:
        >>> resume_skips_validation(pl.Trainer(logger=False, enable_progress_bar=False))
        False
    """
    if not trainer.training or trainer.lightning_module is None:
        return False
    progress = trainer.fit_loop.epoch_loop.batch_progress
    if not progress.is_last_batch or progress.current.completed >= progress.current.processed:
        return False
    if trainer.limit_val_batches == 0 or not is_overridden(
        "validation_step", trainer.lightning_module
    ):
        return False
    every = trainer.check_val_every_n_epoch
    return every is None or (trainer.current_epoch + 1) % every == 0


def warn_if_resume_skips_validation(trainer: pl.Trainer) -> None:
    """Warn once per Trainer when a checkpoint is written where resuming skips a validation.

    Example:
        >>> warn_if_resume_skips_validation(pl.Trainer(logger=False, enable_progress_bar=False))
    """
    if trainer in _WARNED or not resume_skips_validation(trainer):
        return
    _WARNED.add(trainer)
    batches = trainer.num_training_batches
    rank_zero_warn(
        f"lightning_tune: a checkpoint is written at the last training batch of epoch "
        f"{trainer.current_epoch} (step {trainer.global_step}), before that epoch's validation. "
        "Lightning resumes such a checkpoint at the next epoch and skips that validation, so "
        "EarlyStopping, a monitored ModelCheckpoint and pruning miss one check (every other "
        "state of lightning_tune's callbacks resumes exactly). Checkpoints written after the "
        "validation avoid it: ModelCheckpoint(every_n_epochs=1) or "
        "ModelCheckpoint(save_on_train_epoch_end=False), or an `every_n_train_steps` that does "
        f"not land on an epoch's last batch ({batches} batches per epoch)."
    )
