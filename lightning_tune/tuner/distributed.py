"""Pruning for trials that train with several processes (DDP): decided once, shared by all ranks.

With ``strategy="ddp_spawn"`` (or ``"ddp"`` with processes started by a cluster launcher) every
rank runs the callbacks. :class:`DistributedOptunaPruning` lets only rank 0 report the metric to
the trial and ask the pruner, then broadcasts the decision (with the callback's whole state) so
that every rank stops at the same validation: the trial is reported once and no rank waits for
another in a collective that never comes.

``ddp_spawn`` trains in child processes, so the callback object in the launching process sees
nothing of it; rank 0 therefore also stores the callback state in the trial's user attribute
``pruning_state``, and :meth:`DistributedOptunaPruning.sync_from_storage` reads it back after
``fit``. The study's storage must be one that other processes can write to (SQLite, journal
file, PostgreSQL), not ``"memory"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from typing_extensions import override

from lightning_tune.tuner.pruning import OptunaPruning

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["STATE_ATTR", "DistributedOptunaPruning"]

#: Trial user attribute in which rank 0 keeps the callback state for the launching process.
STATE_ATTR = "pruning_state"


class DistributedOptunaPruning(OptunaPruning):
    """:class:`~lightning_tune.tuner.pruning.OptunaPruning` that also works under DDP.

    In one process it behaves exactly like its base class. With several processes, rank 0
    reports and decides, every rank receives the decision, and ``reports_here`` counts the
    reports each process made (1 per validation on rank 0, 0 elsewhere).

    Example:
        >>> import optuna
        >>> callback = DistributedOptunaPruning(optuna.create_study().ask(), monitor="val_loss")
        >>> callback.reports_here, callback.status
        (0, 'running')
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reports_here = 0

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.world_size == 1:
            before = len(self.values)
            super().on_validation_end(trainer, pl_module)
            self.reports_here += len(self.values) - before
            return
        error: str | None = None
        if trainer.is_global_zero:
            before = len(self.values)
            try:
                super().on_validation_end(trainer, pl_module)
            except Exception as err:  # raised on every rank below, not only here
                error = f"{type(err).__name__}: {err}"
            self.reports_here += len(self.values) - before
            if error is None:
                self.trial.set_user_attr(STATE_ATTR, self.state_dict())
        message = trainer.strategy.broadcast({"state": self.state_dict(), "error": error}, src=0)
        if message["error"] is not None:
            raise RuntimeError(f"rank 0 of the trial failed: {message['error']}")
        self.load_state_dict(message["state"])
        if self.status != "running":
            trainer.should_stop = True

    def sync_from_storage(self) -> None:
        """After ``fit``: take the state rank 0 stored if training ran in other processes."""
        if self.validations:
            return  # this process ran the validations itself
        for trial in self.trial.study.get_trials(deepcopy=False):
            if trial.number == self.trial.number:
                state = trial.user_attrs.get(STATE_ATTR)
                if state:
                    self.load_state_dict(state)
                return
