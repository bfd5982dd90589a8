"""Freeze a backbone and unfreeze it gradually, with layer-wise LR decay, for timm models."""

from __future__ import annotations

import itertools
import math
import re
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_tune._compat import check_trainer
from lightning_tune._lightning import Callback
from lightning_tune.callbacks._milestones import Unit, check_moment, describe, run_length, to_steps
from lightning_tune.callbacks._resume import warn_if_resume_skips_validation
from lightning_tune.callbacks.lr_schedule import LRSchedule
from lightning_tune.timm_utils import find_timm_model, finetuning_groups

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["STRATEGIES", "LayerFreezing"]

Strategy = Literal["gradual", "freeze_then_unfreeze", "none"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

# Public BatchNorm classes (timm's BatchNormAct2d subclasses BatchNorm2d).
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, but got {name}={value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, but got {name}={value!r}")
    return value


class LayerFreezing(Callback):
    """Freeze a model's lower layers, unfreeze them top-down, and give each layer its own LR.

    The layer groups come from the model itself: for a timm model (a :class:`TimmClassifier`, or
    any LightningModule with a timm model attribute) timm's ``group_matcher`` gives the stem, the
    stages (``coarse=True``) or blocks (``coarse=False``), and the head, which always holds the
    classifier (``get_classifier()`` / ``pretrained_cfg["classifier"]``). For other models pass
    ``groups``: module names or regex patterns over parameter names, bottom to top, head last.

    Strategies (``keep_frozen=K`` additionally keeps the lowest K groups frozen for the whole
    run, whatever the strategy):

    ============================  =================================================================
    ``"gradual"``                 head only, then ``groups_per_step`` more groups top-down at
                                  ``unfreeze_at``, every ``unfreeze_every``, or at the explicit
                                  moments in ``milestones``
    ``"freeze_then_unfreeze"``    head only until ``unfreeze_at``, then everything
    ``"none"``                    everything trains from the start (only discriminative LRs;
                                  with ``keep_frozen`` the bottom layers stay frozen)
    ============================  =================================================================

    Learning rates follow the shared contract of ``lightning_tune``: a group at depth ``d``
    (0 = head) gets ``lr_scale = lr_decay ** d``, its ``initial_lr`` is the unscaled base LR, and
    :class:`~lightning_tune.callbacks.LRSchedule` sets ``lr = initial_lr * lr_scale * f(step)``
    for every group, including those added here. At fit start the optimizer's own groups get
    their ``lr_scale`` multiplied by the decay (a group mixing depths is split by depth). When a
    layer group is unfrozen its parameters are added to the optimizer as new groups (weight decay
    and no-weight-decay, by parameter name), with ``warmup_steps`` for a warmup of their own;
    existing groups and their optimizer state are untouched.

    BatchNorm: layers of frozen groups are put in eval mode, so their running statistics are
    neither used from the batch nor updated; with ``train_bn=True`` they keep training (their
    affine parameters train and the statistics update), as in Lightning's ``BaseFinetuning``.

    The trainable-parameter count is logged as ``freezing/trainable_params`` each epoch (and
    reported on each change). With ``verify_frozen=True`` the first training step after each
    change checks, by checksum, that frozen weights (and frozen BatchNorm statistics) did not
    move, and raises ``RuntimeError`` if they did.

    **When**: ``unfreeze_at``, ``unfreeze_every`` and ``milestones`` count epochs by default
    (``unit="epoch"``), optimizer steps with ``unit="step"``, and a float in [0, 1) is a
    fraction of the run's optimizer steps (``trainer.estimated_stepping_batches``), so a run of
    30 steps and one of 3,000 get the same shape: with 31 images and batch 32 an epoch is one
    step, and ``unfreeze_at_epoch=10`` would freeze a third of a 30-epoch run. Steps and
    fractions are applied at the optimizer step they fall on, epochs at the start of their
    epoch; :meth:`describe_schedule` shows both. ``warmup_steps`` may be a fraction too.

    The state (unfrozen groups, the optimizer's groups by parameter name) is saved in
    checkpoints: resuming rebuilds exactly the same frozen set and param groups before Lightning
    loads the optimizer state, so a resumed run equals the uninterrupted one. Parameters that were
    already frozen when ``fit`` started (frozen by the user) are never unfrozen.

    Args:
        strategy: one of ``"gradual"``, ``"freeze_then_unfreeze"``, ``"none"``.
        unfreeze_at_epoch: epoch of the first unfreeze (default 1); not with ``"none"``.
        unfreeze_every: ``"gradual"``: ``unit``s (or a fraction of the run) between unfreezes
            (default 1).
        groups_per_step: ``"gradual"``: groups unfrozen at each step (default 1).
        milestones: ``"gradual"``: explicit, increasing moments (``unit``s, or fractions of the
            run) of the unfreeze steps instead of ``unfreeze_at``/``unfreeze_every``; groups
            beyond the last step stay frozen.
        keep_frozen: number of bottom groups frozen for the whole run.
        lr_decay: layer-wise LR decay in (0, 1]; 1 gives every group the same LR.
        warmup_steps: optimizer steps (or a float fraction of the run) of linear warmup for each
            newly unfrozen group (driven by ``LRSchedule`` through the group key
            ``"warmup_steps"``).
        train_bn: keep BatchNorm layers of frozen groups training.
        coarse: timm grouping by stage (True) or by block (False).
        groups: explicit groups for non-timm models (each a module name, a regex over parameter
            names, or a list of those), bottom to top; the last one is the head. Parameters no
            entry claims join the head.
        model_attribute: path of the timm model in the LightningModule when it is ambiguous.
        lr: base LR of added groups; default the ``initial_lr`` of the group holding the head.
        weight_decay: weight decay of added groups; default the largest of the optimizer's groups.
        verify_frozen: check after a step that frozen tensors did not change.
        unfreeze_at: the first unfreeze, in ``unit``s or as a fraction of the run (the general
            form of ``unfreeze_at_epoch``; default 1 ``unit``).
        unit: ``"epoch"`` or ``"step"`` (optimizer steps), for int moments.

    Example:
        >>> from lightning_tune import TimmClassifier
        >>> freezing = LayerFreezing("gradual", unfreeze_at_epoch=1, unfreeze_every=2,
        ...                          lr_decay=0.5, warmup_steps=10)
        >>> for epoch, groups in freezing.plan(TimmClassifier("test_resnet"), epochs=4):
        ...     print(epoch, groups, [freezing.lr_scale(g) for g in groups])
        0 ['head'] [1.0]
        1 ['head', 'layer4'] [1.0, 0.5]
        2 ['head', 'layer4'] [1.0, 0.5]
        3 ['head', 'layer4', 'layer3'] [1.0, 0.5, 0.25]

        Train with it (``LRSchedule`` drives the LR of the groups it adds):
        ``pl.Trainer(callbacks=[freezing, LRSchedule("cosine", warmup=0.1)])``.
    """

    def __init__(
        self,
        strategy: Strategy = "gradual",
        *,
        unfreeze_at_epoch: int | None = None,
        unfreeze_every: int | float = 1,
        groups_per_step: int = 1,
        milestones: Sequence[int | float] | None = None,
        keep_frozen: int = 0,
        lr_decay: float = 1.0,
        warmup_steps: int | float = 0,
        unfreeze_at: int | float | None = None,
        unit: Unit = "epoch",
        train_bn: bool = False,
        coarse: bool = True,
        groups: Sequence[str | Sequence[str]] | None = None,
        model_attribute: str | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        verify_frozen: bool = True,
    ) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"`strategy` must be one of {list(STRATEGIES)}, but got {strategy=!r}")
        if unfreeze_at is not None and unfreeze_at_epoch is not None:
            raise ValueError(
                "pass either `unfreeze_at` (in `unit`s or a fraction of the run) or "
                f"`unfreeze_at_epoch`, not both, but got {unfreeze_at=}, {unfreeze_at_epoch=}"
            )
        if unfreeze_at_epoch is not None:
            if unit != "epoch":
                raise ValueError(
                    f"`unfreeze_at_epoch` counts epochs, but got {unit=!r}: use `unfreeze_at`"
                )
            _int("unfreeze_at_epoch", unfreeze_at_epoch, 0)
        unfreeze_at_epoch = unfreeze_at if unfreeze_at is not None else unfreeze_at_epoch
        if strategy == "none" and (unfreeze_at_epoch is not None or milestones is not None):
            raise ValueError(
                "`strategy='none'` trains every group from the start; `unfreeze_at_epoch` and "
                f"`milestones` need 'gradual' or 'freeze_then_unfreeze', but got "
                f"{unfreeze_at_epoch=}, {milestones=}"
            )
        if milestones is not None:
            if strategy != "gradual":
                raise ValueError(
                    f"`milestones` is for strategy='gradual', but got {strategy=!r}; use "
                    "`unfreeze_at_epoch` for 'freeze_then_unfreeze'"
                )
            if unfreeze_at_epoch is not None:
                raise ValueError(
                    "pass either `milestones` or `unfreeze_at_epoch`, not both, but got "
                    f"{milestones=}, {unfreeze_at_epoch=}"
                )
            if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
                raise TypeError(
                    f"`milestones` must be a list of ints or fractions, but got {milestones!r}"
                )
            milestones = [check_moment("milestones", m, unit) for m in milestones]
            kinds = {isinstance(m, float) for m in milestones}
            if (
                not milestones
                or len(kinds) > 1
                or any(b <= a for a, b in itertools.pairwise(milestones))
            ):
                raise ValueError(
                    f"`milestones` must be a non-empty, strictly increasing list of {unit}s >= 0 "
                    f"or of fractions of the run (not both), but got {milestones=}"
                )
        if unfreeze_at_epoch is not None:
            check_moment("unfreeze_at", unfreeze_at_epoch, unit)
        check_moment("unfreeze_every", unfreeze_every, unit, minimum=1)
        _int("groups_per_step", groups_per_step, 1)
        _int("keep_frozen", keep_frozen, 0)
        check_moment("warmup_steps", warmup_steps, "step")
        if isinstance(lr_decay, bool) or not isinstance(lr_decay, (int, float)):
            raise TypeError(f"`lr_decay` must be a float, but got {lr_decay=!r}")
        if not 0 < lr_decay <= 1:
            raise ValueError(f"`lr_decay` must be in (0, 1], but got {lr_decay=}")
        for name, value in (("lr", lr), ("weight_decay", weight_decay)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise TypeError(f"`{name}` must be a float or None, but got {name}={value!r}")
        if lr is not None and not lr > 0:
            raise ValueError(f"`lr` must be > 0 or None, but got {lr=}")
        if weight_decay is not None and weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0 or None, but got {weight_decay=}")
        for name, flag in (
            ("train_bn", train_bn),
            ("coarse", coarse),
            ("verify_frozen", verify_frozen),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"`{name}` must be a bool, but got {name}={flag!r}")
        if groups is not None:
            if (
                isinstance(groups, (str, bytes))
                or not isinstance(groups, Sequence)
                or len(groups) < 2
            ):
                raise ValueError(
                    "`groups` must be a list of at least 2 entries (bottom to top, head last), "
                    f"each a module name, a regex or a list of those, but got {groups=!r}"
                )
            groups = [[g] if isinstance(g, str) else list(g) for g in groups]
            if any(not entry or not all(isinstance(x, str) for x in entry) for entry in groups):
                raise TypeError(
                    f"`groups` entries must be str or non-empty lists of str: {groups!r}"
                )
        if groups is not None and model_attribute is not None:
            raise ValueError("pass either `groups` or `model_attribute`, not both")

        self.strategy: str = strategy
        self.unfreeze_at_epoch = (
            1 if unfreeze_at_epoch is None and strategy != "none" else unfreeze_at_epoch
        )
        self.unfreeze_every = unfreeze_every
        self.unit: str = unit
        # Milestones in steps or fractions are applied at the step they fall on, epochs at the
        # start of their epoch (as before); both are resolved to steps when training starts.
        self.by_step = unit == "step" or any(
            isinstance(v, float) for v in (unfreeze_at_epoch, unfreeze_every, *(milestones or ()))
        )
        self._lengths: tuple[int | None, int | None] = (None, None)  # run steps, steps/epoch
        self._resolved: tuple[Any, list[tuple[int, list[int]]]] | None = None
        self._warmup = 0 if isinstance(warmup_steps, float) else warmup_steps
        self.groups_per_step = groups_per_step
        self.milestones: list[int | float] | None = (
            list(milestones) if milestones is not None else None
        )
        self.keep_frozen = keep_frozen
        self.lr_decay = float(lr_decay)
        self.warmup_steps = warmup_steps
        self.train_bn = train_bn
        self.coarse = coarse
        self.group_spec: list[list[str]] | None = groups  # type: ignore[assignment]
        self.model_attribute = model_attribute
        self.lr = None if lr is None else float(lr)
        self.weight_decay = None if weight_decay is None else float(weight_decay)
        self.verify_frozen = verify_frozen

        # Resolved in setup.
        self._groups: list[tuple[str, list[str]]] = []
        self._no_weight_decay: set[str] = set()
        self._user_frozen: set[str] = set()
        self._unfrozen: set[int] = set()
        self._restored: dict[str, Any] | None = None
        self._show_plan = False
        self._reference: tuple[list[str], torch.Tensor] | None = None
        self._verify_pending = False
        self._trainer_ref: weakref.ref[pl.Trainer] | None = None
        self._bn_modules: list[tuple[nn.Module, set[str]]] = []
        self._bn_param_names: set[str] = set()
        self._frozen_bn: list[nn.Module] = []
        self._thawed_bn: list[nn.Module] = []
        # Lightning reads state_key around every hook call of every step: build it once.
        self._state_key = self._generate_state_key(
            strategy=self.strategy, coarse=self.coarse, keep_frozen=self.keep_frozen
        )

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    # ------------------------------------------------------------------------- public view
    @property
    def group_names(self) -> list[str]:
        """Names of the layer groups, bottom to top (resolved in ``setup``)."""
        return [name for name, _ in self._groups]

    @property
    def unfrozen_groups(self) -> list[str]:
        """Names of the groups unfrozen so far, in the order they train (head first)."""
        return [self._groups[i][0] for i in sorted(self._unfrozen, reverse=True)]

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """``(name, parameter names)`` of every group, bottom to top (resolved in ``setup``)."""
        return [(name, list(names)) for name, names in self._groups]

    def depth(self, group: int) -> int:
        """Depth of group ``group`` (0 = head); its ``lr_scale`` is ``lr_decay ** depth``."""
        return len(self._groups) - 1 - group

    def lr_scale(self, group: str) -> float:
        """The ``lr_scale`` of the named group: ``lr_decay ** depth``."""
        names = self.group_names
        if group not in names:
            raise ValueError(f"unknown group {group!r}; the groups are {names}")
        return self.lr_decay ** self.depth(names.index(group))

    def plan(
        self, pl_module: pl.LightningModule, epochs: int, steps_per_epoch: int = 1
    ) -> list[tuple[int, list[str]]]:
        """Preview, without training: the groups that train in each of the first ``epochs``.

        Resolves the layer groups of ``pl_module`` (nothing is frozen) and returns
        ``(epoch, group names, head first)`` per epoch; :meth:`lr_scale` gives their scales.
        Milestones in steps or fractions of the run are shown at the first step of each epoch
        of a run of ``epochs * steps_per_epoch`` optimizer steps.
        """
        _int("epochs", epochs, 1)
        _int("steps_per_epoch", steps_per_epoch, 1)
        self._resolve_groups(pl_module)
        self._lengths = (epochs * steps_per_epoch, steps_per_epoch)
        per = steps_per_epoch if self.by_step else 1
        return [
            (epoch, [self._groups[i][0] for i in sorted(self._target(epoch * per), reverse=True)])
            for epoch in range(epochs)
        ]

    def schedule(self) -> list[tuple[int | float, list[str]]]:
        """``(moment, group names)`` of each unfreeze step (resolved in ``setup``): the moment
        as given (epochs, steps or fractions of the run); :meth:`step_schedule` in steps."""
        return [(when, [self._groups[i][0] for i in idx]) for when, idx in self._steps()]

    def step_schedule(self) -> list[tuple[int, list[str]]]:
        """``(optimizer step, group names)`` of each unfreeze step (known once training starts).

        Example:
            >>> from lightning_tune import TimmClassifier
            >>> freezing = LayerFreezing("freeze_then_unfreeze", unfreeze_at=0.25)
            >>> _ = freezing.plan(TimmClassifier("test_resnet"), epochs=30)
            >>> freezing.step_schedule()[0][0], freezing.describe_schedule()[0]
            (8, 'at 25% of the run (step 8 of 30)')
        """
        return [(step, [self._groups[i][0] for i in idx]) for step, idx in self._step_schedule()]

    def describe_schedule(self) -> list[str]:
        """Each unfreeze step in words, with its optimizer step once the run's length is known."""
        total, _ = self._lengths
        lines = []
        for (when, _), (step, _) in zip(self._steps(), self._step_schedule()):
            where = f" (step {step} of {total})" if total is not None else ""
            lines.append(f"at {describe(when, self.unit)}{where}")
        return lines

    def plan_table(self, pl_module: pl.LightningModule | None = None) -> str:
        """The plan as a table: group, parameters, when it starts training, LR scale.

        Printed at the start of a fresh fit (resolved in ``setup``; the steps once the run's
        length is known; see :meth:`plan` for a preview).
        """
        total, _ = self._lengths
        starts = {i: describe(0, self.unit) for i in self._initial()}
        for (when, idx), (step, _) in zip(self._steps(), self._step_schedule()):
            notes = []
            if total is not None:
                if isinstance(when, float) or self.unit == "step":
                    notes.append(f"step {step} of {total}")
                if step >= total:
                    notes.append("after the run")
            text = describe(when, self.unit) + (f" ({', '.join(notes)})" if notes else "")
            starts.update({i: text for i in idx})
        sizes = {n: p.numel() for n, p in pl_module.named_parameters()} if pl_module else {}
        rows = []
        for i in range(len(self._groups) - 1, -1, -1):
            name, names = self._groups[i]
            count = f"{sum(sizes.get(n, 0) for n in names):,}" if sizes else f"{len(names)} tensors"
            rows.append(
                (name, count, starts.get(i, "never"), f"{self.lr_decay ** self.depth(i):.4g}")
            )
        header = ("group", "params", "trains from", "LR scale")
        widths = [max(len(r[k]) for r in [header, *rows]) for k in range(4)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]
        ]
        title = f"LayerFreezing plan (strategy={self.strategy!r}, lr_decay={self.lr_decay:g}):"
        return "\n".join([title, *lines])

    # ------------------------------------------------------------------------- structure
    def _resolve_groups(self, pl_module: pl.LightningModule) -> None:
        if self.group_spec is None:
            prefix, model = find_timm_model(pl_module, self.model_attribute)
            dot = f"{prefix}." if prefix else ""
            groups = [
                (name, [dot + n for n in names])
                for name, names in finetuning_groups(model, coarse=self.coarse)
            ]
            no_wd = getattr(model, "no_weight_decay", None)
            self._no_weight_decay = {dot + n for n in (no_wd() if callable(no_wd) else ())}
        else:
            groups = self._explicit_groups(pl_module)
            self._no_weight_decay = set()
        self._groups = groups

    def _explicit_groups(self, pl_module: pl.LightningModule) -> list[tuple[str, list[str]]]:
        assert self.group_spec is not None
        params = [n for n, _ in pl_module.named_parameters()]
        modules = dict(pl_module.named_modules())
        claimed: set[str] = set()
        groups: list[tuple[str, list[str]]] = []
        for i, entry in enumerate(self.group_spec):
            names: list[str] = []
            for item in entry:
                if item in modules:
                    prefix = f"{item}." if item else ""
                    found = [n for n in params if n.startswith(prefix)]
                    if not found:
                        raise ValueError(
                            f"`groups[{i}]`: module {item!r} has no parameters to train or freeze"
                        )
                else:
                    try:
                        pattern = re.compile(item)
                    except re.error as err:
                        raise ValueError(
                            f"`groups[{i}]`: {item!r} is neither a module name "
                            f"nor a valid regex ({err})"
                        ) from err
                    found = [n for n in params if pattern.match(n)]
                    if not found:
                        raise ValueError(
                            f"`groups[{i}]`: {item!r} is neither a module of "
                            f"{type(pl_module).__name__} nor a regex matching a parameter name; "
                            f"top-level modules: {[n for n, _ in pl_module.named_children()]}"
                        )
                names += [n for n in found if n not in claimed and n not in names]
            claimed.update(names)
            groups.append((f"group_{i}", names))
        head_name = "head"
        groups[-1] = (head_name, [*groups[-1][1], *(n for n in params if n not in claimed)])
        empty = [name for name, names in groups if not names]
        if empty:
            raise ValueError(f"`groups`: {empty} claim no parameter that earlier entries left")
        return groups

    def _steps(self) -> list[tuple[int, list[int]]]:
        if self.strategy == "none" or not self._groups:
            return []
        order = list(range(len(self._groups) - 2, self.keep_frozen - 1, -1))  # top-down
        if not order:
            return []
        if self.strategy == "freeze_then_unfreeze":
            assert self.unfreeze_at_epoch is not None
            return [(self.unfreeze_at_epoch, order)]
        chunks = [
            order[i : i + self.groups_per_step] for i in range(0, len(order), self.groups_per_step)
        ]
        if self.milestones is not None:
            return list(zip(self.milestones, chunks))
        assert self.unfreeze_at_epoch is not None
        return [
            (self.unfreeze_at_epoch + j * self.unfreeze_every, chunk)
            for j, chunk in enumerate(chunks)
        ]

    def _step_schedule(self) -> list[tuple[int, list[int]]]:
        """The unfreeze steps in optimizer steps (needs the run's lengths, set at train start)."""
        key = (self._lengths, len(self._groups))
        if self._resolved is not None and self._resolved[0] == key:  # asked every step
            return self._resolved[1]
        total, per_epoch = self._lengths
        native = self._steps()
        if not native:  # strategy="none", or nothing left to unfreeze
            steps: list[tuple[int, list[int]]] = []
        elif self.milestones is not None or self.strategy == "freeze_then_unfreeze":
            steps = [(to_steps(v, self.unit, total, per_epoch), idx) for v, idx in native]
        else:
            assert self.unfreeze_at_epoch is not None
            first = to_steps(self.unfreeze_at_epoch, self.unit, total, per_epoch)
            every = max(1, to_steps(self.unfreeze_every, self.unit, total, per_epoch))
            steps = [(first + j * every, idx) for j, (_, idx) in enumerate(native)]
        self._resolved = (key, steps)
        return steps

    def _initial(self) -> set[int]:
        head = len(self._groups) - 1
        if self.strategy == "none":
            return set(range(self.keep_frozen, head + 1))
        return {head}

    def _target(self, t: int) -> set[int]:
        """Groups that train at epoch ``t`` (or optimizer step ``t`` when ``by_step``)."""
        target = self._initial()
        for when, idx in self._step_schedule() if self.by_step else self._steps():
            if when <= t:
                target.update(idx)
        return target

    def _validate(self, trainer: pl.Trainer) -> None:
        n = len(self._groups)
        backbone = n - 1
        if self.keep_frozen > backbone:
            raise ValueError(
                f"`keep_frozen={self.keep_frozen}` is out of range: the model has {n} layer groups "
                f"({backbone} below the head {self.group_names}), so at most {backbone}"
            )
        unfreezable = backbone - self.keep_frozen
        if self.strategy == "gradual" and unfreezable and self.groups_per_step > unfreezable:
            raise ValueError(
                f"`groups_per_step={self.groups_per_step}` is out of range: the model has {n} "
                f"layer groups and {unfreezable} of them can be unfrozen (keep_frozen="
                f"{self.keep_frozen}, head excluded)"
            )
        if self.milestones is not None:
            steps = math.ceil(unfreezable / self.groups_per_step)
            if len(self.milestones) > steps:
                raise ValueError(
                    f"`milestones={self.milestones}` has {len(self.milestones)} steps, but the "
                    f"model has {n} layer groups, {unfreezable} to unfreeze {self.groups_per_step} "
                    f"at a time: at most {steps} milestones"
                )
        max_epochs = trainer.max_epochs
        if not self.by_step and max_epochs is not None and max_epochs >= 0:
            late = [(epoch, names) for epoch, names in self.schedule() if epoch >= max_epochs]
            if late:
                rank_zero_warn(
                    f"LayerFreezing: unfreeze steps {late} are at or beyond max_epochs={max_epochs}"
                    "; those groups stay frozen for the whole run"
                )
        if self.warmup_steps and not any(isinstance(cb, LRSchedule) for cb in trainer.callbacks):
            rank_zero_warn(
                f"LayerFreezing(warmup_steps={self.warmup_steps}) marks new groups with "
                "'warmup_steps', which only `lightning_tune.callbacks.LRSchedule` applies; without "
                "it new groups start at their full LR"
            )

    # ------------------------------------------------------------------------- freezing
    def _trainable_names(self, unfrozen: set[int]) -> set[str]:
        names = {n for i in unfrozen for n in self._groups[i][1]}
        if self.train_bn:
            names |= self._bn_param_names
        return names - self._user_frozen

    def _apply(self, pl_module: pl.LightningModule, unfrozen: set[int]) -> None:
        """Set ``requires_grad`` and the BatchNorm modes for the given unfrozen groups."""
        trainable = self._trainable_names(unfrozen)
        managed = {n for _, names in self._groups for n in names}
        for name, param in pl_module.named_parameters():
            if name in managed and name not in self._user_frozen:
                param.requires_grad_(name in trainable)
        self._unfrozen = set(unfrozen)
        # Modes are set in the training hooks: Lightning warns about eval modules at fit start.
        before = {id(m) for m in self._frozen_bn}
        self._frozen_bn = [
            m for m, names in self._bn_modules if not self.train_bn and not names & trainable
        ]
        now = {id(m) for m in self._frozen_bn}
        self._thawed_bn += [m for m, _ in self._bn_modules if id(m) in before - now]
        self._verify_pending = self.verify_frozen

    def _collect_bn(self, pl_module: pl.LightningModule) -> None:
        self._bn_modules = []
        for name, module in pl_module.named_modules():
            if isinstance(module, _BATCH_NORMS):
                prefix = f"{name}." if name else ""
                self._bn_modules.append(
                    (module, {prefix + n for n, _ in module.named_parameters(recurse=False)})
                )
        self._bn_param_names = {n for _, names in self._bn_modules for n in names}
        self._frozen_bn = []
        self._thawed_bn = []

    # ------------------------------------------------------------------------- optimizer groups
    @staticmethod
    def _names_of(pl_module: pl.LightningModule) -> dict[int, str]:
        return {id(p): n for n, p in pl_module.named_parameters()}

    def _group_of(self) -> dict[str, int]:
        return {n: i for i, (_, names) in enumerate(self._groups) for n in names}

    def _scale_existing_groups(
        self, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Give the optimizer's own groups ``initial_lr``/``lr_scale`` by depth (fresh runs)."""
        if (
            any(g.get("lr_scale", 1.0) != 1.0 for g in optimizer.param_groups)
            and self.lr_decay != 1
        ):
            rank_zero_warn(
                "LayerFreezing(lr_decay=...) multiplies the `lr_scale` the optimizer's groups "
                "already have (e.g. TimmClassifier(layer_decay=...)): use one of the two"
            )
        names_of = self._names_of(pl_module)
        group_of = self._group_of()
        head = len(self._groups) - 1
        rebuilt: list[dict[str, Any]] = []
        for group in optimizer.param_groups:
            by_depth: dict[int, list[torch.Tensor]] = {}
            for p in group["params"]:
                depth = self.depth(group_of.get(names_of.get(id(p), ""), head))
                # With lr_decay == 1 depths do not matter: keep the group whole.
                by_depth.setdefault(depth if self.lr_decay != 1 else 0, []).append(p)
            base_scale = float(group.get("lr_scale", 1.0))
            initial_lr = float(group.get("initial_lr", group["lr"]))
            for depth, params in sorted(by_depth.items(), reverse=True):
                new = {k: v for k, v in group.items() if k not in ("params", "param_names")}
                new["params"] = params
                if "param_names" in group:
                    new["param_names"] = [names_of[id(p)] for p in params]
                if "name" in group:
                    new["name"] = self._group_name(group["name"], params, names_of, depth)
                    if len(by_depth) > 1 and new["name"] == group["name"]:
                        new["name"] = f"{group['name']}/depth{depth}"
                new["initial_lr"] = initial_lr
                new["lr_scale"] = base_scale * self.lr_decay**depth
                new["lr"] = initial_lr * new["lr_scale"]
                rebuilt.append(new)
        if len(rebuilt) != len(optimizer.param_groups):
            if optimizer.state:
                raise ValueError(
                    "LayerFreezing must split optimizer groups that mix layer depths "
                    "(lr_decay < 1), but the optimizer already has state; create it fresh in "
                    "`configure_optimizers`"
                )
            optimizer.param_groups.clear()
            for group in rebuilt:
                optimizer.add_param_group(group)
        else:
            for group, new in zip(optimizer.param_groups, rebuilt):
                group.update(
                    {k: new[k] for k in ("initial_lr", "lr_scale", "lr", "name") if k in new}
                )

    def _group_name(
        self, name: str, params: list[torch.Tensor], names_of: dict[int, str], depth: int
    ) -> str:
        """``all/decay`` -> ``head/decay`` when all of a group's parameters are in one layer
        group (the head at fit start): the optimizer's group says which layers it trains."""
        first, _, rest = str(name).partition("/")
        group_of = self._group_of()
        owners = {group_of.get(names_of.get(id(p), ""), -1) for p in params}
        if first != "all" or len(owners) != 1 or -1 in owners:
            return name
        layer = self._groups[owners.pop()][0]
        return f"{layer}/{rest}" if rest else layer

    def _head_optimizer(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> torch.optim.Optimizer:
        """The optimizer that trains the head: unfrozen groups join it (GAN-style setups keep
        their other optimizers untouched)."""
        params = dict(pl_module.named_parameters())
        head = {id(params[n]) for n in self._groups[-1][1]}
        for optimizer in trainer.optimizers:
            if any(id(p) in head for g in optimizer.param_groups for p in g["params"]):
                return optimizer
        if not trainer.optimizers:
            raise ValueError(
                "LayerFreezing found no optimizer: return one from `configure_optimizers`"
            )
        return trainer.optimizers[0]

    def _base_lr(self, optimizer: torch.optim.Optimizer, pl_module: pl.LightningModule) -> float:
        if self.lr is not None:
            return self.lr
        head = set(self._groups[-1][1])
        names_of = self._names_of(pl_module)
        for group in optimizer.param_groups:
            if any(names_of.get(id(p)) in head for p in group["params"]):
                return float(group.get("initial_lr", group["lr"]))
        first = optimizer.param_groups[0]
        return float(first.get("initial_lr", first["lr"]))

    def _add_groups(
        self, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer, indices: list[int]
    ) -> list[str]:
        present = {id(p) for g in optimizer.param_groups for p in g["params"]}
        params = dict(pl_module.named_parameters())
        with_names = "param_names" in optimizer.param_groups[0]
        base_lr = self._base_lr(optimizer, pl_module)
        decay = self.weight_decay
        if decay is None:
            decay = max(
                (float(g.get("weight_decay", 0.0)) for g in optimizer.param_groups), default=0.0
            )
        added: list[str] = []
        for i in indices:
            name, names = self._groups[i]
            chosen = [n for n in names if params[n].requires_grad and id(params[n]) not in present]
            already = [
                n
                for n in names
                if params[n].requires_grad
                and id(params[n]) in present
                and n not in self._bn_param_names
            ]
            if already and self.lr_decay != 1:  # same LR either way with lr_decay == 1
                rank_zero_warn(
                    f"LayerFreezing: {len(already)} parameters of {name} (e.g. {already[0]}) were "
                    "already in the optimizer while frozen, so they train with that group's LR, "
                    "not lr_scale; build the optimizer from trainable parameters only "
                    "(`p.requires_grad`) for per-layer LRs"
                )
            scale = self.lr_decay ** self.depth(i)
            for with_decay in (True, False):
                part = [n for n in chosen if self._decays(n, params[n]) is with_decay]
                if not part:
                    continue
                group: dict[str, Any] = {
                    "params": [params[n] for n in part],
                    "name": f"{name}/{'decay' if with_decay else 'no_decay'}",
                    "weight_decay": decay if with_decay else 0.0,
                    "initial_lr": base_lr,
                    "lr_scale": scale,
                    "lr": base_lr * scale,
                }
                if with_names:
                    group["param_names"] = part
                if self._warmup:
                    group["warmup_steps"] = self._warmup
                optimizer.add_param_group(group)
                added.append(group["name"])
        return added

    def _decays(self, name: str, param: torch.Tensor) -> bool:
        return not (param.ndim <= 1 or name.endswith(".bias") or name in self._no_weight_decay)

    # ------------------------------------------------------------------------- verification
    def _frozen_tensors(self, pl_module: pl.LightningModule) -> list[tuple[str, torch.Tensor]]:
        tensors = [(n, p) for n, p in pl_module.named_parameters() if not p.requires_grad]
        frozen_bn = {id(m) for m in self._frozen_bn}
        for name, module in pl_module.named_modules():
            if id(module) in frozen_bn:
                tensors += [(f"{name}.{b}", t) for b, t in module.named_buffers(recurse=False)]
        return tensors

    @staticmethod
    def _checksum(tensors: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
        with torch.no_grad():
            if not tensors:
                return torch.zeros(0, 2, dtype=torch.float64)
            return torch.stack(
                [torch.stack([t.double().sum(), t.double().abs().sum()]) for _, t in tensors]
            ).cpu()

    # ------------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_trainer(trainer, self, pl_module)
        if stage != "fit":
            return
        self._trainer_ref = weakref.ref(trainer)
        self._resolve_groups(pl_module)
        self._validate(trainer)
        managed = {n for _, names in self._groups for n in names}
        self._user_frozen = {
            n for n, p in pl_module.named_parameters() if n in managed and not p.requires_grad
        }
        self._collect_bn(pl_module)
        initial = self._initial()
        if not self._trainable_names(initial):
            raise ValueError(
                f"LayerFreezing leaves no trainable parameter at the start: the trainable groups "
                f"{[self._groups[i][0] for i in sorted(initial)]} have all their parameters "
                "frozen already (requires_grad=False)"
            )
        self._apply(pl_module, initial)
        self._reference = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after `configure_optimizers` and before Lightning loads the optimizer state.
        if self._restored is None:
            for optimizer in trainer.optimizers:
                self._scale_existing_groups(pl_module, optimizer)
            steps = self.schedule()
            if trainer.lr_scheduler_configs and steps:
                scheduler = type(trainer.lr_scheduler_configs[0].scheduler).__name__
                raise ValueError(
                    f"LayerFreezing adds param groups during training ({steps}, as ({self.unit}, "
                    f"groups)), but configure_optimizers returns the torch LR scheduler "
                    f"{scheduler}, which only knows the groups it was built with: the added ones "
                    "would keep a fixed LR and break the layer-wise order (lr_scale). Remove the "
                    "scheduler and add `lightning_tune.callbacks.LRSchedule` (it schedules added "
                    "groups with their lr_scale), or use LayerFreezing(strategy='none') (no "
                    "groups added)"
                )
            self._show_plan = True  # at train start, once the run's length is known
            return
        state, self._restored = self._restored, None
        known = {name: i for i, name in enumerate(self.group_names)}
        unknown = [g for g in state["unfrozen"] if g not in known]
        if unknown:
            raise ValueError(
                f"checkpoint of LayerFreezing names groups {unknown} this model "
                f"does not have; its groups are {self.group_names}"
            )
        self._apply(pl_module, {known[g] for g in state["unfrozen"]})
        params = dict(pl_module.named_parameters())
        saved = state.get("optimizers", [])
        for optimizer, groups in zip(trainer.optimizers, saved):
            missing = [n for g in groups for n in g["params"] if n not in params]
            if missing:
                raise ValueError(
                    f"checkpoint of LayerFreezing refers to parameters {missing[:5]} "
                    "this model does not have"
                )
            if optimizer.state:
                raise ValueError(
                    "LayerFreezing must rebuild the optimizer's groups on resume, "
                    "but the optimizer already has state"
                )
            optimizer.param_groups.clear()
            for group in groups:
                optimizer.add_param_group({**group, "params": [params[n] for n in group["params"]]})

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._lengths = run_length(trainer)
        total = self._lengths[0]
        self._warmup = to_steps(self.warmup_steps, "step", total, None)
        if self._show_plan:
            self._show_plan = False
            rank_zero_info(self.plan_table(pl_module))
        if self.by_step and total is not None:
            late = [(s, names) for s, names in self.step_schedule() if s >= total]
            if late:
                rank_zero_warn(
                    f"LayerFreezing: unfreeze steps {late} are at or beyond the run's {total} "
                    "optimizer steps; those groups stay frozen for the whole run"
                )

    def _unfreeze_due(self, trainer: pl.Trainer, pl_module: pl.LightningModule, t: int) -> None:
        """Unfreeze the groups due at epoch (or step) ``t`` and add them to the optimizer."""
        new = sorted(self._target(t) - self._unfrozen, reverse=True)
        if not new:
            return
        self._apply(pl_module, self._unfrozen | set(new))
        added = self._add_groups(pl_module, self._head_optimizer(trainer, pl_module), new)
        when = f"step {t}" if self.by_step else f"epoch {t}"
        rank_zero_info(
            f"LayerFreezing: {when}: unfroze {[self._groups[i][0] for i in new]} "
            f"(new param groups {added}); {self._count(pl_module):,} of "
            f"{sum(p.numel() for p in pl_module.parameters()):,} parameters trainable"
        )

    def _set_bn_modes(self) -> None:
        for module in self._thawed_bn:
            module.train()
        self._thawed_bn = []
        for module in self._frozen_bn:
            module.eval()

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.by_step:
            self._unfreeze_due(trainer, pl_module, trainer.current_epoch)
        self._set_bn_modes()
        pl_module.log(
            "freezing/trainable_params", float(self._count(pl_module)), on_step=False, on_epoch=True
        )

    @staticmethod
    def _count(pl_module: pl.LightningModule) -> int:
        return sum(p.numel() for p in pl_module.parameters() if p.requires_grad)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        t = trainer.global_step if self.by_step else trainer.current_epoch
        if self._target(t) - self._unfrozen:
            # By step, groups come due mid-epoch. By epoch, a run resumed from a checkpoint
            # written at an epoch's last batch starts the next epoch without
            # `on_train_epoch_start`: the frozen set follows the epoch here as well.
            self._unfreeze_due(trainer, pl_module, t)
            self._set_bn_modes()
        for module in self._frozen_bn:  # a user's `train()` call must not wake them up
            if module.training:  # an attribute read per step; eval() only when needed
                module.eval()
        if self._verify_pending:
            tensors = self._frozen_tensors(pl_module)
            self._reference = ([n for n, _ in tensors], self._checksum(tensors))

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._verify_pending or self._reference is None:
            return
        names, before = self._reference
        tensors = dict(self._frozen_tensors(pl_module))
        after = self._checksum([(n, tensors[n]) for n in names])
        self._verify_pending = False
        self._reference = None
        changed = [n for n, a, b in zip(names, after, before) if not torch.equal(a, b)]
        if changed:
            raise RuntimeError(
                f"LayerFreezing: {len(changed)} frozen tensors changed during a training step: "
                f"{changed[:8]}. Something else updates them (an optimizer group with "
                "zero_grad(set_to_none=False) and weight decay or momentum, or a BatchNorm put "
                "back in train mode); frozen parameters must not receive updates"
            )

    # ------------------------------------------------------------------------- state
    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        warn_if_resume_skips_validation(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        optimizers: list[list[dict[str, Any]]] = []
        if trainer is not None and trainer.lightning_module is not None:
            names_of = self._names_of(trainer.lightning_module)
            for optimizer in trainer.optimizers:
                optimizers.append(
                    [
                        {
                            **{k: v for k, v in g.items() if k != "params"},
                            "params": [names_of[id(p)] for p in g["params"]],
                        }
                        for g in optimizer.param_groups
                    ]
                )
        return {"unfrozen": self.unfrozen_groups, "optimizers": optimizers}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = {
            "unfrozen": list(state_dict.get("unfrozen", [])),
            "optimizers": state_dict.get("optimizers", []),
        }
