"""LayerFreezing's plan: its arguments, the layer groups and when each one trains (no Trainer
needed to read it), the first base class of :class:`~lightning_tune.callbacks.LayerFreezing`."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from lightning_utilities.core.rank_zero import rank_zero_warn

from lightning_tune._validation import check_int, check_number, check_optional
from lightning_tune.callbacks._milestones import check_moment, describe, to_steps
from lightning_tune.callbacks.lr_schedule import LRSchedule
from lightning_tune.timm_utils import find_timm_model, finetuning_groups

if TYPE_CHECKING:
    import pytorch_lightning as pl


__all__ = ["STRATEGIES", "FreezingPlan", "check_options"]

Strategy = Literal["gradual", "freeze_then_unfreeze", "none"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


def _check_when(
    strategy: Any, unfreeze_at_epoch: Any, unfreeze_at: Any, milestones: Any, unit: Any
) -> tuple[Any, list[int | float] | None]:
    """When groups unfreeze: ``(unfreeze_at_epoch, milestones)`` checked and normalised
    (``unfreeze_at`` merged into ``unfreeze_at_epoch``, milestones as a list)."""
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
        check_int("unfreeze_at_epoch", unfreeze_at_epoch, minimum=0)
    unfreeze_at_epoch = unfreeze_at if unfreeze_at is not None else unfreeze_at_epoch
    if strategy == "none" and (unfreeze_at_epoch is not None or milestones is not None):
        raise ValueError(
            "`strategy='none'` trains every group from the start; `unfreeze_at_epoch` and "
            f"`milestones` need 'gradual' or 'freeze_then_unfreeze', but got "
            f"{unfreeze_at_epoch=}, {milestones=}"
        )
    if milestones is not None:
        milestones = _check_milestones(strategy, milestones, unfreeze_at_epoch, unit)
    if unfreeze_at_epoch is not None:
        check_moment("unfreeze_at", unfreeze_at_epoch, unit)
    return unfreeze_at_epoch, milestones


def _check_milestones(
    strategy: Any, milestones: Any, unfreeze_at_epoch: Any, unit: Any
) -> list[int | float]:
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
        raise TypeError(f"`milestones` must be a list of ints or fractions, but got {milestones!r}")
    milestones = [check_moment("milestones", m, unit) for m in milestones]
    kinds = {isinstance(m, float) for m in milestones}
    if not milestones or len(kinds) > 1 or any(b <= a for a, b in itertools.pairwise(milestones)):
        raise ValueError(
            f"`milestones` must be a non-empty, strictly increasing list of {unit}s >= 0 "
            f"or of fractions of the run (not both), but got {milestones=}"
        )
    return milestones


def _check_rates(lr_decay: Any, lr: Any, weight_decay: Any) -> None:
    check_number("lr_decay", lr_decay, low=0, low_open=True, high=1)
    check_optional(check_number, "lr", lr, low=0, low_open=True, finite=False)
    check_optional(check_number, "weight_decay", weight_decay, low=0, finite=False)


def _check_groups(groups: Any, model_attribute: Any) -> list[list[str]] | None:
    if groups is None:
        return None
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or len(groups) < 2:
        raise ValueError(
            "`groups` must be a list of at least 2 entries (bottom to top, head last), "
            f"each a module name, a regex or a list of those, but got {groups=!r}"
        )
    groups = [[g] if isinstance(g, str) else list(g) for g in groups]
    if any(not entry or not all(isinstance(x, str) for x in entry) for entry in groups):
        raise TypeError(f"`groups` entries must be str or non-empty lists of str: {groups!r}")
    if model_attribute is not None:
        raise ValueError("pass either `groups` or `model_attribute`, not both")
    return groups


def check_options(strategy: Any, **options: Any) -> dict[str, Any]:
    """Check ``LayerFreezing``'s arguments (by their names); return them normalised
    (``unfreeze_at`` merged into ``unfreeze_at_epoch``, ``milestones`` and ``groups`` as
    lists).

    Example:
        >>> from lightning_tune.callbacks import LayerFreezing
        >>> LayerFreezing("gradual", milestones=[3, 1])
        Traceback (most recent call last):
        ...
        ValueError: `milestones` must be a non-empty, strictly increasing list of epochs >= 0 or of fractions of the run (not both), but got milestones=[3, 1]
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {list(STRATEGIES)}, but got {strategy=!r}")
    unit = options["unit"]
    options["unfreeze_at_epoch"], options["milestones"] = _check_when(
        strategy, options["unfreeze_at_epoch"], options["unfreeze_at"], options["milestones"], unit
    )
    check_moment("unfreeze_every", options["unfreeze_every"], unit, minimum=1)
    check_int("groups_per_step", options["groups_per_step"], minimum=1)
    check_int("keep_frozen", options["keep_frozen"], minimum=0)
    check_moment("warmup_steps", options["warmup_steps"], "step")
    _check_rates(options["lr_decay"], options["lr"], options["weight_decay"])
    for name in ("train_bn", "coarse", "verify_frozen"):
        if not isinstance(options[name], bool):
            raise TypeError(f"`{name}` must be a bool, but got {name}={options[name]!r}")
    options["groups"] = _check_groups(options["groups"], options["model_attribute"])
    return {"strategy": strategy, **options}


class FreezingPlan:
    """Groups and schedule of a :class:`~lightning_tune.callbacks.LayerFreezing`."""

    def _configure(self, options: dict[str, Any]) -> None:
        """Set the checked options (see :func:`check_options`) as attributes."""
        strategy, unit = options["strategy"], options["unit"]
        unfreeze_at_epoch, unfreeze_every = options["unfreeze_at_epoch"], options["unfreeze_every"]
        milestones, warmup_steps = options["milestones"], options["warmup_steps"]
        groups, lr, weight_decay = options["groups"], options["lr"], options["weight_decay"]
        groups_per_step, keep_frozen = options["groups_per_step"], options["keep_frozen"]
        lr_decay, train_bn, coarse = options["lr_decay"], options["train_bn"], options["coarse"]
        model_attribute, verify_frozen = options["model_attribute"], options["verify_frozen"]
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
        check_int("epochs", epochs, minimum=1)
        check_int("steps_per_epoch", steps_per_epoch, minimum=1)
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
            >>> from lightning_tune.callbacks import LayerFreezing
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
