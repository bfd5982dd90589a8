"""Hand a segment's hyperparameters to the running training after its checkpoint is restored.

A segment builds a fresh module, datamodule and callbacks from its hyperparameters, so every
constructor setting (a callback's ε or clipping threshold, a datamodule's batch size) already
has the new value. What the checkpoint brings back on top of that is the optimizer's state,
*including its param groups' hyperparameters*; :class:`HyperparameterUpdate` sets those again
once the checkpoint is loaded, then calls the module's ``on_hyperparameters_changed(params)``
hook for anything else a checkpoint would overwrite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from typing_extensions import override

from lightning_tune._lightning import Callback

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["HOOK", "OPTIMIZER_KEYS", "HyperparameterUpdate", "set_optimizer_hyperparameters"]

#: Hyperparameters set on the optimizer's param groups, by name.
OPTIMIZER_KEYS = ("lr", "weight_decay", "momentum")
#: The LightningModule method called with the hyperparameters of every resumed segment.
HOOK = "on_hyperparameters_changed"


def set_optimizer_hyperparameters(
    optimizer: torch.optim.Optimizer, params: Mapping[str, Any], keys: Sequence[str]
) -> None:
    """Set ``keys`` (of :data:`OPTIMIZER_KEYS`) of every param group from ``params``.

    ``lr`` is the unscaled base LR: each group gets ``initial_lr = lr`` and keeps its
    ``lr_scale`` (layer-wise decay) and its current schedule factor, so ``group["lr"]`` becomes
    ``lr * lr_scale * (old lr / (old initial_lr * lr_scale))``. ``weight_decay`` changes only
    groups that decay (norms and biases stay at 0); ``momentum`` only groups that have one (SGD).

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([{"params": [w], "lr": 0.05, "initial_lr": 0.1,
        ...                         "lr_scale": 0.5}], momentum=0.9)
        >>> set_optimizer_hyperparameters(opt, {"lr": 0.2, "momentum": 0.8}, ["lr", "momentum"])
        >>> group = opt.param_groups[0]
        >>> group["initial_lr"], group["lr"], group["momentum"]
        (0.2, 0.1, 0.8)
    """
    for group in optimizer.param_groups:
        if "lr" in keys and "lr" in params:
            scale = float(group.get("lr_scale", 1.0))
            old_base = float(group.get("initial_lr", group["lr"] / scale if scale else 0.0))
            factor = group["lr"] / (old_base * scale) if old_base and scale else 1.0
            group["initial_lr"] = float(params["lr"])
            group["lr"] = float(params["lr"]) * scale * factor
        if "weight_decay" in keys and "weight_decay" in params and group.get("weight_decay"):
            group["weight_decay"] = float(params["weight_decay"])
        if "momentum" in keys and "momentum" in params and "momentum" in group:
            group["momentum"] = float(params["momentum"])


class HyperparameterUpdate(Callback):
    """After a checkpoint is restored, set the optimizer hyperparameters and call the hook.

    At ``on_train_start`` (the optimizer state has been loaded by then): the ``optimizer_keys``
    of every optimizer's param groups are set from ``params``
    (:func:`set_optimizer_hyperparameters`); an :class:`~lightning_tune.callbacks.LRSchedule`
    with ``max_lr`` gets it as every group's peak again (``initial_lr``); then the module's
    ``on_hyperparameters_changed(params)`` is called if it has one, with all the segment's
    hyperparameters.

    Args:
        params: the segment's hyperparameters.
        optimizer_keys: which of :data:`OPTIMIZER_KEYS` to set.
        resumed: whether the segment starts from a checkpoint (a fresh start needs nothing).

    Example:
        >>> HyperparameterUpdate({"lr": 0.1}, ["lr"]).optimizer_keys
        ('lr',)
    """

    def __init__(
        self, params: Mapping[str, Any], optimizer_keys: Sequence[str], resumed: bool = True
    ) -> None:
        super().__init__()
        unknown = sorted(set(optimizer_keys) - set(OPTIMIZER_KEYS))
        if unknown:
            raise ValueError(
                f"`optimizer_keys` must be among {list(OPTIMIZER_KEYS)}, but got {unknown}"
            )
        self.params = dict(params)
        self.optimizer_keys = tuple(optimizer_keys)
        self.resumed = resumed

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.resumed:
            return
        from lightning_tune.callbacks import LRSchedule

        for optimizer in trainer.optimizers:
            set_optimizer_hyperparameters(optimizer, self.params, self.optimizer_keys)
        for callback in trainer.callbacks:
            if isinstance(callback, LRSchedule) and callback.max_lr is not None:
                for optimizer in trainer.optimizers:
                    for group in optimizer.param_groups:
                        group["initial_lr"] = callback.max_lr
        hook = getattr(pl_module, HOOK, None)
        if callable(hook):
            hook(dict(self.params))
