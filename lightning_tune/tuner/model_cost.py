"""Model size and speed as validation metrics, to trade against accuracy in a multi-objective sweep."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from typing_extensions import override

from lightning_tune._lightning import Callback
from lightning_tune._validation import check_bool, check_int

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["ModelCost"]


def _first_tensor(batch: Any) -> torch.Tensor:
    """The model input of a batch: the batch itself, its first element, or ``batch["image"]``/
    ``batch["x"]`` / ``batch["input"]``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("image", "x", "input", "inputs"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise TypeError(
        "ModelCost(latency=True) cannot find the model input in a validation batch of type "
        f"{type(batch).__name__}; give `input_fn=lambda batch: ...`"
    )


class ModelCost(Callback):
    """Logs ``params_m`` (parameters, in millions) and ``inference_ms`` (forward time per sample).

    Add it to a sweep's callbacks and monitor its metrics next to the accuracy:
    ``Tuner(..., callbacks=[ModelCost()], monitor=["val_loss", "params_m"],
    direction=["minimize", "minimize"])``. Both are logged after every validation (not in the
    sanity check), so they are in ``trainer.callback_metrics`` when the tuner reads them.

    ``inference_ms`` is measured, not estimated: the median over ``repeats`` timed forward passes
    (``pl_module(x)``, no grad, eval mode, after one warm-up pass) on the first validation batch,
    divided by its batch size, with CUDA synchronised around each pass. It is wall time, so it
    carries the machine's noise; compare trials measured on the same machine.

    Args:
        params: log ``params_m``.
        latency: log ``inference_ms``.
        trainable_only: count only parameters with ``requires_grad``.
        repeats: timed forward passes per validation (>= 1).
        input_fn: ``batch -> input tensor`` when the batch is not ``x``, ``(x, y, ...)`` or a
            dict with an ``"image"``/``"x"``/``"input"`` tensor.

    Example:
        >>> cost = ModelCost(latency=False)
        >>> cost.metric_names
        ['params_m']
        >>> ModelCost(repeats=0)
        Traceback (most recent call last):
        ...
        ValueError: `repeats` must be an int >= 1, but got repeats=0
    """

    def __init__(
        self,
        params: bool = True,
        latency: bool = True,
        *,
        trainable_only: bool = False,
        repeats: int = 5,
        input_fn: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.params = check_bool("params", params)
        self.latency = check_bool("latency", latency)
        self.trainable_only = check_bool("trainable_only", trainable_only)
        self.repeats = check_int("repeats", repeats, minimum=1)
        if input_fn is not None and not callable(input_fn):
            raise TypeError(f"`input_fn` must be a function batch -> tensor, but got {input_fn!r}")
        if not (params or latency):
            raise ValueError("ModelCost needs `params` or `latency` (or both) to log anything")
        self.input_fn = input_fn
        self._example: torch.Tensor | None = None

    @property
    def metric_names(self) -> list[str]:
        """The metrics this callback logs."""
        return [n for n, on in (("params_m", self.params), ("inference_ms", self.latency)) if on]

    def count_parameters(self, module: torch.nn.Module) -> float:
        """Parameters of ``module`` in millions."""
        total = sum(
            p.numel() for p in module.parameters() if p.requires_grad or not self.trainable_only
        )
        return total / 1e6

    def measure_ms(self, module: torch.nn.Module, x: torch.Tensor) -> float:
        """Median forward time per sample, in milliseconds."""
        cuda = x.is_cuda
        times = []
        with torch.no_grad():
            module(x)  # warm-up: lazy init, caches
            for _ in range(self.repeats):
                if cuda:
                    torch.cuda.synchronize(x.device)
                start = time.perf_counter()
                module(x)
                if cuda:
                    torch.cuda.synchronize(x.device)
                times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times) / max(1, len(x))

    @override
    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.latency and batch_idx == 0 and dataloader_idx == 0:
            x = self.input_fn(batch) if self.input_fn is not None else _first_tensor(batch)
            self._example = x.detach()

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.params:
            pl_module.log("params_m", self.count_parameters(pl_module), sync_dist=False)
        if self.latency and self._example is not None:
            was_training = pl_module.training
            pl_module.eval()
            try:
                ms = self.measure_ms(pl_module, self._example)
            finally:
                pl_module.train(was_training)
            pl_module.log("inference_ms", ms, sync_dist=False)
            self._example = None
