"""Label smoothing during training only, so validation and test losses stay comparable."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from lightning_tune._compat import check_trainer
from lightning_tune._lightning import Callback
from lightning_tune._validation import check_int, check_number

if TYPE_CHECKING:
    import pytorch_lightning as pl
from lightning_tune.callbacks._resume import warn_if_resume_skips_validation

__all__ = ["LabelSmoothing", "smooth_targets"]

#: Loss modules the callback finds on its own, and whether their targets are binary.
LOSS_TYPES: dict[type[nn.Module], bool] = {
    nn.CrossEntropyLoss: False,
    nn.BCEWithLogitsLoss: True,
    nn.BCELoss: True,
}


def smooth_targets(
    targets: torch.Tensor,
    epsilon: float,
    num_classes: int | None = None,
    binary: bool = False,
    one_sided: bool = False,
) -> torch.Tensor:
    """Smoothed (soft) targets.

    * multi-class: class indices (int) or probabilities over ``num_classes`` become
      ``(1 - epsilon) * one_hot + epsilon / num_classes`` (as ``nn.CrossEntropyLoss``);
    * binary / multi-label (``binary=True``): ``y * (1 - epsilon) + epsilon / 2`` (towards 0.5);
    * ``one_sided=True`` (binary only): only positives are softened, ``y * (1 - epsilon)``.

    Example:
        >>> smooth_targets(torch.tensor([1]), 0.1, num_classes=2).tolist()
        [[0.05000000074505806, 0.949999988079071]]
        >>> smooth_targets(torch.tensor([0.0, 1.0]), 0.2, binary=True, one_sided=True).tolist()
        [0.0, 0.800000011920929]
    """
    if binary:
        targets = (
            targets.to(torch.get_default_dtype()) if not targets.is_floating_point() else targets
        )
        if one_sided:
            return targets * (1.0 - epsilon)
        return targets * (1.0 - epsilon) + 0.5 * epsilon
    if not targets.is_floating_point():
        if num_classes is None:
            raise ValueError("`num_classes` is needed to smooth class-index targets")
        if targets.numel():  # one pass and one read back for both ends
            low, high = torch.stack(torch.aminmax(targets)).tolist()
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"class-index targets must be in [0, {num_classes}) to be smoothed, but "
                    f"got values from {low} to {high}. An ignore_index (e.g. -100) works with "
                    f"nn.CrossEntropyLoss or F.cross_entropy, whose own label_smoothing is used"
                )
        targets = F.one_hot(targets.long(), num_classes).to(torch.get_default_dtype())
        if targets.ndim > 2:  # (N, d1, ..., C) -> (N, C, d1, ...) as cross_entropy expects
            targets = targets.movedim(-1, 1)
    classes = targets.shape[1] if targets.ndim > 1 else targets.shape[0]
    return targets * (1.0 - epsilon) + epsilon / classes


def _takes_label_smoothing(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` has a ``label_smoothing`` keyword (``F.cross_entropy`` and partials)."""
    try:
        return "label_smoothing" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature (some builtins)
        return False


class _SmoothedLoss:
    """Wraps a loss function ``fn(input, target, ...)`` while active: a multi-class function
    with its own ``label_smoothing`` keyword (``F.cross_entropy``) gets ε there, which keeps
    its ``ignore_index`` working; any other function gets smoothed targets."""

    def __init__(self, fn: Callable[..., torch.Tensor], owner: LabelSmoothing) -> None:
        self.fn = fn
        self.owner = owner
        self.native = not owner._binary and _takes_label_smoothing(fn)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __call__(self, input: torch.Tensor, target: torch.Tensor, *args: Any, **kw: Any) -> Any:
        if self.owner.active and self.owner.current_epsilon > 0:
            if self.native:
                kw = {**kw, "label_smoothing": self.owner.current_epsilon}
            else:
                target = self.owner.smooth(target, input)
        return self.fn(input, target, *args, **kw)


class LabelSmoothing(Callback):
    """Label smoothing ε for training steps only: validation and test losses stay unsmoothed.

    Smoothing is switched on in ``on_train_batch_start`` and off again in ``on_train_batch_end``
    (and on any exception), so ``val_loss`` is the plain loss and stays comparable between runs
    with different ε — which is what a tuner compares. How the callback reaches the loss
    (``loss_attribute`` names it; otherwise it is found in ``setup``):

    1. a loss module: the module's one ``nn.CrossEntropyLoss`` (its ``label_smoothing`` is set,
       which handles class indices and soft targets), ``nn.BCEWithLogitsLoss`` or ``nn.BCELoss``
       (their target is smoothed by a forward pre-hook);
    2. a loss function stored as an attribute (``self.loss_fn = F.cross_entropy``, or any
       ``fn(input, target, ...)``; found when it is the one attribute whose name contains
       ``loss`` or ``criterion``): it is wrapped for the fit and restored afterwards. A
       function with a ``label_smoothing`` keyword (``F.cross_entropy``) gets ε there, so its
       ``ignore_index`` keeps working; any other gets smoothed targets;
    3. a float attribute ``label_smoothing`` on the module, for modules that call the loss
       themselves: ``F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)``.
       The callback sets it to ε for training steps and back to its value otherwise.

    A module offering none of these fails in ``setup`` with a message that lists its loss-like
    attributes. Binary / multi-label targets (BCE losses, or ``binary=True``) are smoothed towards
    0.5; ``one_sided=True`` only softens positives (``1 -> 1 - ε``, the GAN discriminator trick).

    ε can be annealed linearly to 0 over the last ``anneal_epochs`` epochs of
    ``Trainer(max_epochs=...)``: the last epoch trains with 0. It is a closed form of
    ``trainer.current_epoch``, computed at every training batch, so a run resumed from any
    checkpoint (also one written at an epoch's last batch, where Lightning skips the next
    ``on_train_epoch_start``) uses exactly the ε of the run that never stopped.

    Args:
        epsilon: the smoothing ε in [0, 1).
        anneal_epochs: anneal ε linearly to 0 over this many final epochs (0: constant ε).
        loss_attribute: name (dotted for submodules) of the loss module, loss function or float
            attribute to smooth (None: find it).
        binary: the targets are binary / multi-label (None: from the loss: BCE modules and
            functions named ``*binary*`` are binary, everything else multi-class).
        one_sided: soften only positive binary labels.

    Attributes:
        current_epsilon: ε of the current epoch.
        active: whether smoothing is on right now (inside a training step).

    Example:
        >>> from lightning_tune import TimmClassifier
        >>> module = TimmClassifier("test_resnet", num_classes=3)
        >>> smoothing = LabelSmoothing(epsilon=0.1, anneal_epochs=2)
        >>> smoothing.epsilon_at(epoch=0, max_epochs=5), smoothing.epsilon_at(4, 5)
        (0.1, 0.0)
        >>> smoothing.find_loss(module)
        ('criterion', CrossEntropyLoss())
    """

    def __init__(
        self,
        epsilon: float = 0.1,
        anneal_epochs: int = 0,
        loss_attribute: str | None = None,
        binary: bool | None = None,
        one_sided: bool = False,
    ) -> None:
        super().__init__()
        epsilon = check_number("epsilon", epsilon, low=0, high=1, high_open=True)
        check_int("anneal_epochs", anneal_epochs, minimum=0)
        if loss_attribute is not None and (
            not isinstance(loss_attribute, str) or not loss_attribute
        ):
            raise TypeError(f"`loss_attribute` must be a name or None, but got {loss_attribute=!r}")
        if binary is not None and not isinstance(binary, bool):
            raise TypeError(f"`binary` must be a bool or None, but got {binary=!r}")
        if one_sided and binary is False:
            raise ValueError(
                "`one_sided=True` softens positive labels of binary targets, but got binary=False"
            )
        self.epsilon = epsilon
        self.anneal_epochs = anneal_epochs
        self.loss_attribute = loss_attribute
        self.binary = binary
        self.one_sided = bool(one_sided)
        self.current_epsilon = self.epsilon
        self.active = False
        self._apply: Callable[[float], None] | None = None
        self._undo: Callable[[], None] | None = None
        self._binary = bool(binary)
        self._max_epochs: int | None = None

    # --------------------------------------------------------------------------- schedule
    def epsilon_at(self, epoch: int, max_epochs: int | None = None) -> float:
        """ε for ``epoch`` (0-based) of a run of ``max_epochs`` epochs."""
        if not self.anneal_epochs or max_epochs is None:
            return self.epsilon
        remaining = max_epochs - 1 - epoch  # epochs after this one
        return self.epsilon * min(1.0, max(0.0, remaining / self.anneal_epochs))

    # --------------------------------------------------------------------------- finding the loss
    @staticmethod
    def _get(obj: Any, dotted: str) -> tuple[Any, str, Any]:
        *parents, name = dotted.split(".")
        for part in parents:
            obj = getattr(obj, part)
        return obj, name, getattr(obj, name)

    def find_loss(self, pl_module: pl.LightningModule) -> tuple[str, Any]:
        """The name and object of the loss the callback smooths (see the class docstring).

        Raises:
            ValueError: no reachable loss, or several loss modules and no ``loss_attribute``.
        """
        if self.loss_attribute is not None:
            try:
                return self.loss_attribute, self._get(pl_module, self.loss_attribute)[2]
            except AttributeError:
                raise ValueError(
                    f"LabelSmoothing(loss_attribute={self.loss_attribute!r}): "
                    f"{type(pl_module).__name__} has no such attribute. Loss-like attributes: "
                    f"{self._loss_like(pl_module) or 'none'}"
                ) from None
        losses = [(n, m) for n, m in pl_module.named_modules() if type(m) in LOSS_TYPES]
        if len(losses) == 1:
            return losses[0]
        if len(losses) > 1:
            raise ValueError(
                f"LabelSmoothing found several loss modules in {type(pl_module).__name__}: "
                f"{[n for n, _ in losses]}. Pass `loss_attribute=` to pick one."
            )
        value = getattr(pl_module, "label_smoothing", None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return "label_smoothing", value
        functions = [
            n
            for n in self._loss_like(pl_module)
            if callable(getattr(pl_module, n, None))
            and not isinstance(getattr(pl_module, n), nn.Module)
        ]
        if len(functions) == 1:
            return functions[0], getattr(pl_module, functions[0])
        if len(functions) > 1:
            raise ValueError(
                f"LabelSmoothing found several loss functions in {type(pl_module).__name__}: "
                f"{functions}. Pass `loss_attribute=` to pick one."
            )
        raise ValueError(
            f"LabelSmoothing cannot reach the loss of {type(pl_module).__name__}: it has no "
            f"nn.CrossEntropyLoss / nn.BCEWithLogitsLoss / nn.BCELoss submodule and no float "
            f"`label_smoothing` attribute. Loss-like attributes: "
            f"{self._loss_like(pl_module) or 'none'}. "
            f"Store the loss as a module attribute (self.criterion = nn.CrossEntropyLoss()), "
            f"pass `loss_attribute=` naming a loss module or loss function attribute, or add "
            f"`self.label_smoothing = 0.0` and pass it to F.cross_entropy(..., "
            f"label_smoothing=self.label_smoothing)."
        )

    @staticmethod
    def _loss_like(pl_module: pl.LightningModule) -> list[str]:
        names = [n for n in vars(pl_module) if not n.startswith("_")]
        names += [n for n, _ in pl_module.named_children()]
        return sorted({n for n in names if "loss" in n.lower() or "criterion" in n.lower()})

    # --------------------------------------------------------------------------- setup
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_trainer(trainer, self, pl_module)
        if stage != "fit":
            return
        max_epochs = trainer.max_epochs
        if self.anneal_epochs and (max_epochs is None or max_epochs < 0):
            raise ValueError(
                f"LabelSmoothing(anneal_epochs={self.anneal_epochs}) anneals over the last epochs "
                f"of the run, so it needs Trainer(max_epochs=...), but got max_epochs={max_epochs}"
            )
        self._max_epochs = max_epochs
        name, loss = self.find_loss(pl_module)
        owner, attr, _ = self._get(pl_module, name)
        if isinstance(loss, nn.CrossEntropyLoss) and not self.one_sided and not self.binary:
            original = loss.label_smoothing
            self._binary = False

            def apply_ce(eps: float) -> None:
                loss.label_smoothing = eps

            def undo_ce() -> None:
                loss.label_smoothing = original

            self._apply, self._undo = apply_ce, undo_ce
        elif isinstance(loss, nn.Module):
            self._binary = LOSS_TYPES.get(type(loss), False) if self.binary is None else self.binary
            if self.one_sided and not self._binary:
                raise ValueError(
                    f"LabelSmoothing(one_sided=True) needs binary targets, but "
                    f"{name} is a {type(loss).__name__}; pass binary=True if its targets are 0/1"
                )

            def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
                if not self.active or self.current_epsilon == 0 or len(args) < 2:
                    return None
                return (args[0], self.smooth(args[1], args[0]), *args[2:])

            handle = loss.register_forward_pre_hook(pre_hook)
            self._apply, self._undo = None, handle.remove
        elif isinstance(loss, (int, float)):
            if self.one_sided or self.binary:
                raise ValueError(
                    "LabelSmoothing through a float `label_smoothing` attribute is multi-class "
                    "only; use a BCE loss module or loss function for binary/one_sided smoothing"
                )
            original_value = loss

            def apply_attr(eps: float) -> None:
                setattr(owner, attr, eps)

            def undo_attr() -> None:
                setattr(owner, attr, original_value)

            self._apply, self._undo = apply_attr, undo_attr
        elif callable(loss):
            self._binary = (
                ("binary" in getattr(loss, "__name__", "")) if self.binary is None else self.binary
            )
            setattr(owner, attr, _SmoothedLoss(loss, self))

            def undo_fn() -> None:
                setattr(owner, attr, loss)

            self._apply, self._undo = None, undo_fn
        else:
            raise TypeError(
                f"LabelSmoothing(loss_attribute={name!r}) must name a loss module, a loss "
                f"function or a float, but it is a {type(loss).__name__}"
            )

    def smooth(self, target: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """Smooth ``target`` for a loss on ``input`` with the current ε."""
        classes = input.shape[1] if input.ndim > 1 else None
        return smooth_targets(
            target,
            self.current_epsilon,
            num_classes=classes,
            binary=self._binary,
            one_sided=self.one_sided,
        ).to(input.dtype)

    def _off(self) -> None:
        if self.active and self._undo is not None and self._apply is not None:
            self._undo()
        self.active = False

    # --------------------------------------------------------------------------- hooks
    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.current_epsilon = self.epsilon_at(trainer.current_epoch, self._max_epochs)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # From the epoch at every batch: a run resumed from a checkpoint written at an
        # epoch's last batch starts the next epoch without `on_train_epoch_start`.
        self.current_epsilon = self.epsilon_at(trainer.current_epoch, self._max_epochs)
        self.active = True
        if self._apply is not None:
            self._apply(self.current_epsilon)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._off()

    def _detach(self) -> None:
        self._off()
        if self._undo is not None and self._apply is None:  # hook / wrapper: remove it
            self._undo()
        self._apply = self._undo = None

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._detach()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._detach()

    # --------------------------------------------------------------------------- state
    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        warn_if_resume_skips_validation(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        # ε is a closed form of the epoch (restored by the Trainer): this is for inspection.
        return {"current_epsilon": self.current_epsilon}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.current_epsilon = float(state_dict.get("current_epsilon", self.current_epsilon))
