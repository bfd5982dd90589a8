"""Gradient clipping as a callback: by norm, by value, adaptive (AGC) or automatic (AutoClip).

Clipping runs in the callback hook ``on_before_optimizer_step``, which Lightning calls after the
AMP grad scaler has unscaled the gradients and before ``configure_gradient_clipping`` and
``optimizer.step()``. It therefore sees true (unscaled) gradients, works for every optimizer of
the module, and also fires in manual optimization when the module calls ``opt.step()`` on the
optimizers returned by ``self.optimizers()``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from fnmatch import fnmatch
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import nn
from torch.nn.utils import clip_grad_value_, clip_grads_with_norm_, get_total_norm
from typing_extensions import override

from lightning_tune._compat import check_trainer
from lightning_tune._lightning import Callback, classes
from lightning_tune._validation import check_int, check_number, check_optional

if TYPE_CHECKING:
    import pytorch_lightning as pl

_MIXED_PRECISION = classes("plugins.precision.MixedPrecision")

__all__ = ["CLIPPING_MODES", "GradientClipping"]

ClippingMode = Literal["norm", "value", "adaptive", "auto"]

#: Up to this many gradient tensors, norms and scaling run tensor by tensor (cheaper than the
#: grouping of the ``foreach`` helpers); above it, torch's ``foreach`` helpers.
_FEW_TENSORS = 16

#: The clipping modes and the argument that holds each mode's threshold.
CLIPPING_MODES: dict[str, str] = {
    "norm": "max_norm",
    "value": "clip_value",
    "adaptive": "clip_factor",
    "auto": "percentile",
}


def unitwise_norm(x: torch.Tensor, norm_type: float = 2.0) -> torch.Tensor:
    """Norm of each output unit (first dimension) of a weight, or the whole norm of a vector.

    Example:
        >>> unitwise_norm(torch.tensor([[3.0, 4.0], [0.0, 1.0]])).flatten().tolist()
        [5.0, 1.0]
    """
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x, norm_type)
    return torch.linalg.vector_norm(x, norm_type, dim=tuple(range(1, x.ndim)), keepdim=True)


class GradientClipping(Callback):
    """Clip gradients by norm, by value, adaptively (AGC) or at a percentile of their history.

    Modes (``mode``):

    * ``"norm"``: scale all gradients of an optimizer so that their total ``norm_type``-norm
      (any p, including ``float("inf")``) is at most ``max_norm``
      (``torch.nn.utils.clip_grads_with_norm_``).
    * ``"value"``: clamp every gradient element to ``[-clip_value, clip_value]``.
    * ``"adaptive"``: adaptive gradient clipping from NFNets (as timm's ``adaptive_clip_grad``):
      each output unit's gradient norm is capped at ``clip_factor`` times the unit's parameter
      norm (at least ``eps``). As in NFNets and timm, the classifier head is not clipped when the
      module names it (``classifier_parameter_names``, as :class:`~lightning_tune.TimmClassifier`
      does) unless ``exclude`` says otherwise.
    * ``"auto"``: AutoClip (Seetharaman et al., 2020): clip by norm at the ``percentile``-th
      percentile of the gradient norms seen so far (the last ``history_size`` steps, the current
      one included, so the first step is never clipped). No threshold to tune or schedule.

    The total gradient norm (one fused ``foreach`` norm) is computed every step; it also detects
    non-finite gradients. With ``skip_non_finite`` such a step is skipped: the gradients are set
    to ``None`` so that the optimizer leaves the weights *and its own state* (momentum, Adam
    moments, weight decay) untouched; the skip is counted (``skipped_steps``) and warned about,
    and after ``max_consecutive_skips`` skips in a row training stops with a ``RuntimeError``.
    Under fp16 AMP the grad scaler already skips such steps (and lowers its scale), so they are
    neither counted nor warned about there.

    Every ``log_every_n_steps`` optimizer steps the norm before and after clipping is logged as
    ``grad_norm/before`` and ``grad_norm/after`` (suffixed ``_<i>`` for optimizer ``i`` when the
    module has several).

    Do not combine with ``Trainer(gradient_clip_val=...)``: ``setup`` refuses it.

    Args:
        max_norm: the norm threshold of mode ``"norm"`` (> 0).
        mode: ``"norm"``, ``"value"``, ``"adaptive"`` or ``"auto"``.
        norm_type: the p of the p-norm (> 0, ``float("inf")`` allowed).
        clip_value: the threshold of mode ``"value"`` (> 0).
        clip_factor: the ratio of mode ``"adaptive"`` (> 0; NFNets use 0.01 to 0.16).
        eps: mode ``"adaptive"``: the smallest parameter norm used (> 0), so that zero-initialised
            weights can still move.
        percentile: mode ``"auto"``: percentile of the norm history, in (0, 100].
        history_size: mode ``"auto"``: how many past norms to keep (None: all).
        exclude: ``fnmatch`` patterns of parameter names that are neither measured nor clipped.
            Default: the classifier head in mode ``"adaptive"``, nothing otherwise.
        log_every_n_steps: log the norms every N optimizer steps (None: the Trainer's
            ``log_every_n_steps``; 0: never).
        skip_non_finite: skip optimizer steps whose gradients contain NaN or inf.
        max_consecutive_skips: raise after this many consecutive skipped steps (None: never).

    Attributes:
        skipped_steps: number of optimizer steps skipped for non-finite gradients.
        last_norm: the total gradient norm of the last step (before clipping), as a float when
            it was read, else a tensor.

    Example:
        >>> clip = GradientClipping(max_norm=1.0)
        >>> clip.mode, clip.max_norm
        ('norm', 1.0)
        >>> GradientClipping(mode="auto", percentile=25).threshold_name
        'percentile'
        >>> GradientClipping(mode="clamp")
        Traceback (most recent call last):
        ...
        ValueError: `mode` must be one of ['adaptive', 'auto', 'norm', 'value'], but got mode='clamp'
    """

    def __init__(
        self,
        max_norm: float = 1.0,
        mode: ClippingMode = "norm",
        norm_type: float = 2.0,
        clip_value: float = 1.0,
        clip_factor: float = 0.01,
        eps: float = 1e-3,
        percentile: float = 10.0,
        history_size: int | None = 1000,
        exclude: Sequence[str] | None = None,
        log_every_n_steps: int | None = None,
        skip_non_finite: bool = True,
        max_consecutive_skips: int | None = 10,
    ) -> None:
        super().__init__()
        if mode not in CLIPPING_MODES:
            raise ValueError(
                f"`mode` must be one of {sorted(CLIPPING_MODES)}, but got mode={mode!r}"
            )
        self.mode: ClippingMode = mode
        positive = {"low": 0, "low_open": True, "finite": False}  # inf is a valid threshold
        self.max_norm = check_number("max_norm", max_norm, **positive)
        self.norm_type = check_number("norm_type", norm_type, **positive)
        self.clip_value = check_number("clip_value", clip_value, **positive)
        self.clip_factor = check_number("clip_factor", clip_factor, **positive)
        self.eps = check_number("eps", eps, **positive)
        self.percentile = check_number("percentile", percentile, low=0, low_open=True, high=100)
        self.history_size = check_optional(check_int, "history_size", history_size, minimum=1)
        if exclude is not None and (isinstance(exclude, str) or not isinstance(exclude, Iterable)):
            raise TypeError(
                f"`exclude` must be a sequence of parameter-name patterns or None, "
                f"but got exclude={exclude!r}"
            )
        self.exclude: tuple[str, ...] | None = None if exclude is None else tuple(exclude)
        self.log_every_n_steps = check_optional(
            check_int, "log_every_n_steps", log_every_n_steps, minimum=0
        )
        if not isinstance(skip_non_finite, bool):
            raise TypeError(f"`skip_non_finite` must be a bool, but got {skip_non_finite=!r}")
        self.skip_non_finite = skip_non_finite
        self.max_consecutive_skips = check_optional(
            check_int, "max_consecutive_skips", max_consecutive_skips, minimum=1
        )
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.last_norm: float | torch.Tensor | None = None
        self._history: dict[int, deque[float]] = {}
        self._names: dict[int, str] = {}
        self._excluded: set[int] = set()
        self._params_cache: dict[int, tuple[tuple[int, int], list[nn.Parameter]]] = {}
        self._scaled = False
        self._log_every = 0
        # Lightning reads state_key around every hook call: build it once.
        self._state_key = self._generate_state_key(mode=mode)

    @property
    def threshold_name(self) -> str:
        """The argument that holds the threshold of this mode."""
        return CLIPPING_MODES[self.mode]

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    # ------------------------------------------------------------------------------ setup
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_trainer(trainer, self, pl_module)
        if trainer.gradient_clip_val:
            raise ValueError(
                f"GradientClipping cannot run together with "
                f"`Trainer(gradient_clip_val={trainer.gradient_clip_val!r})`: both would clip "
                f"the same gradients. Remove `gradient_clip_val` from the Trainer (use "
                f"GradientClipping(max_norm=...) or GradientClipping(mode='value', "
                f"clip_value=...) instead)."
            )
        self._names = {id(p): n for n, p in pl_module.named_parameters()}
        patterns = self.exclude
        if patterns is None:
            head = getattr(pl_module, "classifier_parameter_names", None)
            patterns = tuple(head) if self.mode == "adaptive" and head else ()
        self._excluded = {
            pid for pid, name in self._names.items() if any(fnmatch(name, p) for p in patterns)
        }
        if self.exclude and not self._excluded:
            rank_zero_warn(
                f"GradientClipping(exclude={list(self.exclude)!r}) matches no parameter of "
                f"{type(pl_module).__name__}; every parameter is clipped."
            )
        self._params_cache = {}
        plugin = trainer.precision_plugin
        self._scaled = isinstance(plugin, _MIXED_PRECISION) and plugin.scaler is not None
        every = self.log_every_n_steps
        self._log_every = trainer.log_every_n_steps if every is None else every

    def _parameters(self, optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
        groups = optimizer.param_groups
        # Groups can be added during training (layer unfreezing): the key notices that.
        key = (len(groups), sum(len(g["params"]) for g in groups))
        cached = self._params_cache.get(id(optimizer))
        if cached is None or cached[0] != key:
            params = [p for g in groups for p in g["params"] if id(p) not in self._excluded]
            self._params_cache[id(optimizer)] = cached = (key, params)
        return [p for p in cached[1] if p.grad is not None]

    # ------------------------------------------------------------------------------ clipping
    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        params = self._parameters(optimizer)
        if not params:
            return
        grads = [p.grad for p in params]
        norm = self._total_norm(grads)
        self.last_norm = norm
        check = self.skip_non_finite or self.mode == "auto"
        value = float(norm) if check else None  # the one host sync, only when needed
        if value is not None:
            self.last_norm = value
            if not math.isfinite(value):
                self._non_finite(trainer, optimizer, params, value)
                return
            self.consecutive_skips = 0
        index = self._optimizer_index(trainer, optimizer)
        after: torch.Tensor | float | None = None
        if self.mode == "norm":
            # (the same coefficient as torch's clip_grad_norm_; skipped when it is known to be 1)
            if value is None or value + 1e-6 > self.max_norm:
                self._scale(params, grads, self.max_norm, norm)
        elif self.mode == "auto":
            history = self._history.setdefault(index, deque(maxlen=self.history_size))
            history.append(value)  # type: ignore[arg-type]
            threshold = float(
                torch.quantile(
                    torch.tensor(list(history), dtype=torch.float64), self.percentile / 100.0
                )
            )
            if value + 1e-6 > threshold:  # type: ignore[operator]
                self._scale(params, grads, threshold, norm)
            after = min(threshold, value)  # type: ignore[type-var]
        elif self.mode == "value":
            clip_grad_value_(params, self.clip_value, foreach=True)
        else:
            self._adaptive(params)
        if self._log_every and trainer.global_step % self._log_every == 0:
            if self.mode == "norm":
                after = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0) * norm
            elif after is None:
                after = get_total_norm([p.grad for p in params], self.norm_type, foreach=True)
            suffix = f"_{index}" if len(trainer.optimizers) > 1 else ""
            pl_module.log(f"grad_norm/before{suffix}", norm, on_step=True, on_epoch=False)
            pl_module.log(f"grad_norm/after{suffix}", after, on_step=True, on_epoch=False)

    def _total_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """The total ``norm_type``-norm of ``grads``: the norm of the per-tensor norms.

        ``get_total_norm(foreach=True)`` computes exactly that, after grouping the tensors by
        device and dtype; for a handful of tensors (a small model, where the grouping costs more
        than the arithmetic) the per-tensor norms are taken directly: ~2x cheaper, same value.
        """
        if len(grads) > _FEW_TENSORS:
            return get_total_norm(grads, self.norm_type, foreach=True)
        norms = [torch.linalg.vector_norm(g.detach(), self.norm_type) for g in grads]
        return torch.linalg.vector_norm(torch.stack(norms), self.norm_type)

    @staticmethod
    def _scale(
        params: list[nn.Parameter], grads: list[torch.Tensor], max_norm: float, norm: torch.Tensor
    ) -> None:
        """Scale the gradients by ``min(1, max_norm / (norm + 1e-6))``, as ``clip_grads_with_norm_``."""
        if len(grads) > _FEW_TENSORS:
            clip_grads_with_norm_(params, max_norm, norm, foreach=True)
            return
        # a 0-dim tensor, as torch computes it (no host sync when the norm was not read)
        coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for grad in grads:
            grad.detach().mul_(coefficient)

    def _adaptive(self, params: list[nn.Parameter]) -> None:
        for p in params:
            grad = p.grad.detach()  # type: ignore[union-attr]
            max_norm = unitwise_norm(p.detach(), self.norm_type).clamp_(min=self.eps)
            max_norm.mul_(self.clip_factor)
            grad_norm = unitwise_norm(grad, self.norm_type)
            clipped = grad * (max_norm / grad_norm.clamp(min=1e-6))
            grad.copy_(torch.where(grad_norm < max_norm, grad, clipped))

    @staticmethod
    def _optimizer_index(trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> int:
        for i, opt in enumerate(trainer.optimizers):
            if opt is optimizer:
                return i
        return 0

    def _non_finite(
        self,
        trainer: pl.Trainer,
        optimizer: torch.optim.Optimizer,
        params: list[nn.Parameter],
        value: float,
    ) -> None:
        if self._scaled:
            return  # the grad scaler skips this step and lowers its scale: expected under AMP
        if not self.skip_non_finite:
            return
        bad = [
            self._names.get(id(p), "?") for p in params if not bool(torch.isfinite(p.grad).all())
        ]  # type: ignore[arg-type]
        for p in optimizer.param_groups:
            for param in p["params"]:
                param.grad = None
        self.skipped_steps += 1
        self.consecutive_skips += 1
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        limit = self.max_consecutive_skips
        if limit is not None and self.consecutive_skips >= limit:
            raise RuntimeError(
                f"GradientClipping: {self.consecutive_skips} consecutive optimizer steps had "
                f"non-finite gradients (last at global step {trainer.global_step}, norm={value}, "
                f"in {shown}). Training diverged: lower the learning rate, check the data and "
                f"loss for NaN/inf, or raise `max_consecutive_skips` (None never stops)."
            )
        rank_zero_warn(
            f"GradientClipping: non-finite gradients (norm={value}) at global step "
            f"{trainer.global_step} in {shown}; skipping this optimizer step "
            f"({self.consecutive_skips} in a row, {self.skipped_steps} in total)."
        )

    # ------------------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "skipped_steps": self.skipped_steps,
            "consecutive_skips": self.consecutive_skips,
            "history": {str(i): list(h) for i, h in self._history.items()},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        self.consecutive_skips = int(state_dict.get("consecutive_skips", 0))
        self._history = {
            int(i): deque(values, maxlen=self.history_size)
            for i, values in state_dict.get("history", {}).items()
        }
