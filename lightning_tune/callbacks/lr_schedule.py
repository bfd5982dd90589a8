"""One owner for the learning rate: warmup + a main schedule, as a Lightning callback."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from typing_extensions import override

from lightning_tune._compat import check_trainer
from lightning_tune._lightning import Callback
from lightning_tune.schedules import (
    WARMUP_MODES,
    Cyclic,
    Schedule,
    make_schedule,
    warmup_factor,
)
from lightning_tune.schedules import OneCycle as _OneCycleSchedule

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["CyclicLR", "LRSchedule", "OneCycle", "Warmup"]

INTERVALS: tuple[str, ...] = ("step", "epoch")


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


class LRSchedule(Callback):
    """Set every parameter group's LR from a warmup and a main schedule, each optimizer step.

    For each group, ``lr = initial_lr * lr_scale * f(step)``: ``initial_lr`` is the group's
    unscaled base LR (taken from its ``lr`` the first time it is seen if missing), ``lr_scale``
    its multiplier (default 1.0; layer-wise LR decay), and ``f`` a pure function of the step
    (:mod:`lightning_tune.schedules`): a warmup from ``warmup_start_factor`` (or
    ``warmup_start_lr``) to exactly 1.0, then the main schedule over the rest of the run.
    Groups added during the run (e.g. by :class:`~lightning_tune.callbacks.LayerFreezing`) are
    scheduled from the step they appear; a group key ``"warmup_steps"`` (int) gives such a group
    a linear warmup of its own, from ``group.get("warmup_start_factor", 0.0)``, starting at that
    step. The run length comes from ``trainer.estimated_stepping_batches`` (gradient
    accumulation, ``max_steps`` and ``max_epochs`` respected) unless ``total_steps`` is given.

    Differences from the references: the warmup is a prefix (timm's ``warmup_prefix=True``), so
    the peak is reached at step ``warmup`` and the main schedule runs over ``total - warmup``
    steps; timm's default ``warmup_prefix=False`` never reaches the peak. Cyclic and one-cycle
    schedules express ``base_lr``/``max_lr`` as multipliers of the group's peak LR (see
    :class:`CyclicLR` and :class:`OneCycle` for torch's absolute arguments).

    The LRs are logged as ``lr/<group name>`` (``lr/pg<i>`` for unnamed groups,
    ``lr/opt<k>/...`` with several optimizers) every ``trainer.log_every_n_steps`` steps, beside
    any ``LearningRateMonitor``. If ``configure_optimizers`` also returns an LR scheduler for a
    scheduled optimizer, :meth:`on_fit_start` raises instead of letting the two fight.

    In manual optimization the schedule advances once per training batch.

    Args:
        schedule: a name from :data:`lightning_tune.schedules.SCHEDULES` (``"constant"``,
            ``"cosine"``, ``"linear"``, ``"polynomial"``, ``"exponential"``, ``"step"``,
            ``"multistep"``, ``"cyclic"``, ``"cosine_restarts"``, ``"one_cycle"``) with its
            arguments as extra keyword arguments, or a :class:`~lightning_tune.schedules.Schedule`.
        warmup: warmup length: an int (steps, or ``warmup_unit``), or a float in (0, 1) for a
            fraction of the run. 0 = no warmup.
        warmup_mode: ``"linear"``, ``"cosine"`` or ``"exponential"``.
        warmup_start_factor: the warmup starts at this fraction of the peak, in [0, 1]
            (default 0.0; must be > 0 for ``exponential``).
        warmup_start_lr: or an absolute start LR (before ``lr_scale``, as timm's
            ``warmup_lr_init``).
        warmup_unit: ``"step"`` or ``"epoch"`` for an int ``warmup`` (default: ``interval``).
        interval: ``"step"`` (update every optimizer step) or ``"epoch"``; schedule lengths such
            as ``step_size`` or ``period`` count in this unit.
        total_steps: run length in ``interval`` units (default: from the Trainer).
        max_lr: if given, replaces every scheduled group's ``initial_lr`` (its peak).
        cycle_momentum: also cycle the momentum (SGD) or beta1 (Adam) like torch's ``CyclicLR``
            and ``OneCycleLR`` (only ``cyclic`` and ``one_cycle``).
        base_momentum: lowest momentum (default: torch's, 0.8 cyclic / 0.85 one-cycle).
        max_momentum: highest momentum (default: torch's, 0.9 cyclic / 0.95 one-cycle).
        optimizers: indices of the optimizers to schedule (default: all).
        log_lr: log the LRs through the Trainer's loggers.
        **schedule_kwargs: arguments of the named schedule (e.g. ``min_factor=0.01``).

    Example:
        >>> callback = LRSchedule("cosine", warmup=0.1, min_factor=0.01)
        >>> lrs = callback.preview(total_steps=10, lr=1.0)
        >>> [round(lr, 3) for lr in lrs]
        [0.0, 1.0, 0.97, 0.884, 0.752, 0.591, 0.419, 0.258, 0.126, 0.04]
    """

    def __init__(
        self,
        schedule: str | Schedule = "cosine",
        warmup: int | float = 0,
        *,
        warmup_mode: Literal["linear", "cosine", "exponential"] = "linear",
        warmup_start_factor: float | None = None,
        warmup_start_lr: float | None = None,
        warmup_unit: Literal["step", "epoch"] | None = None,
        interval: Literal["step", "epoch"] = "step",
        total_steps: int | None = None,
        max_lr: float | None = None,
        cycle_momentum: bool = False,
        base_momentum: float | None = None,
        max_momentum: float | None = None,
        optimizers: Sequence[int] | None = None,
        log_lr: bool = True,
        **schedule_kwargs: Any,
    ) -> None:
        if isinstance(schedule, Schedule):
            if schedule_kwargs:
                raise TypeError(
                    f"schedule arguments {sorted(schedule_kwargs)} are only accepted with a "
                    f"schedule name; {schedule!r} is already configured"
                )
            self.schedule = schedule
        else:
            self.schedule = make_schedule(schedule, **schedule_kwargs)
        if not _is_number(warmup):
            raise TypeError(f"`warmup` must be an int or a float, but got warmup={warmup!r}")
        if warmup < 0 or (isinstance(warmup, float) and not warmup < 1):
            raise ValueError(
                "`warmup` must be an int >= 0 (a length) or a float in (0, 1) (a fraction of "
                f"the run), but got warmup={warmup!r}"
            )
        if warmup_mode not in WARMUP_MODES:
            raise ValueError(
                f"`warmup_mode` must be one of {list(WARMUP_MODES)}, but got {warmup_mode=!r}"
            )
        if warmup_start_factor is not None and warmup_start_lr is not None:
            raise ValueError(
                "give `warmup_start_factor` or `warmup_start_lr`, not both, but got "
                f"{warmup_start_factor=!r} and {warmup_start_lr=!r}"
            )
        if warmup_start_factor is not None:
            if not _is_number(warmup_start_factor):
                raise TypeError(
                    f"`warmup_start_factor` must be a number, but got {warmup_start_factor=!r}"
                )
            if not 0 <= warmup_start_factor <= 1:
                raise ValueError(
                    f"`warmup_start_factor` must be in [0, 1], but got {warmup_start_factor=!r}"
                )
        if warmup_start_lr is not None:
            if not _is_number(warmup_start_lr):
                raise TypeError(f"`warmup_start_lr` must be a number, but got {warmup_start_lr=!r}")
            if warmup_start_lr < 0:
                raise ValueError(f"`warmup_start_lr` must be >= 0, but got {warmup_start_lr=!r}")
        start = warmup_start_lr if warmup_start_lr is not None else (warmup_start_factor or 0.0)
        if warmup_mode == "exponential" and warmup and not start > 0:
            raise ValueError(
                "warmup_mode='exponential' multiplies up from a positive start: pass "
                "`warmup_start_factor` > 0 (e.g. 0.01) or `warmup_start_lr` > 0, but got "
                f"{warmup_start_factor=!r}, {warmup_start_lr=!r}"
            )
        if warmup_unit is not None and warmup_unit not in INTERVALS:
            raise ValueError(
                f"`warmup_unit` must be one of {list(INTERVALS)} or None, but got {warmup_unit=!r}"
            )
        if interval not in INTERVALS:
            raise ValueError(f"`interval` must be one of {list(INTERVALS)}, but got {interval=!r}")
        if interval == "epoch" and warmup_unit == "step":
            raise ValueError(
                "warmup_unit='step' needs interval='step' (an epoch-wise schedule changes the LR "
                f"once per epoch), but got {interval=!r}"
            )
        if total_steps is not None:
            if isinstance(total_steps, bool) or not isinstance(total_steps, int):
                raise TypeError(f"`total_steps` must be an int or None, but got {total_steps=!r}")
            if total_steps <= 0:
                raise ValueError(f"`total_steps` must be > 0, but got {total_steps=!r}")
        if max_lr is not None:
            if not _is_number(max_lr):
                raise TypeError(f"`max_lr` must be a number or None, but got {max_lr=!r}")
            if not max_lr > 0:
                raise ValueError(f"`max_lr` must be > 0, but got {max_lr=!r}")
        if not isinstance(cycle_momentum, bool):
            raise TypeError(f"`cycle_momentum` must be a bool, but got {cycle_momentum=!r}")
        if cycle_momentum and not self.schedule.cycles_momentum:
            raise ValueError(
                "cycle_momentum=True needs a schedule that cycles the momentum ('cyclic' or "
                f"'one_cycle'), but got schedule={type(self.schedule).__name__}"
            )
        default_base, default_max = self.schedule.default_momentum
        base_momentum = default_base if base_momentum is None else base_momentum
        max_momentum = default_max if max_momentum is None else max_momentum
        for name, value in (("base_momentum", base_momentum), ("max_momentum", max_momentum)):
            if not _is_number(value):
                raise TypeError(f"`{name}` must be a number, but got {name}={value!r}")
            if not 0 <= value < 1:
                raise ValueError(f"`{name}` must be in [0, 1), but got {name}={value!r}")
        if base_momentum > max_momentum:
            raise ValueError(
                f"`base_momentum` must be <= `max_momentum`, but got {base_momentum=} and "
                f"{max_momentum=}"
            )
        if optimizers is not None:
            optimizers = tuple(optimizers)
            if not optimizers or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in optimizers
            ):
                raise ValueError(
                    "`optimizers` must be None (all) or a non-empty list of optimizer indices "
                    f"(ints >= 0), but got optimizers={optimizers!r}"
                )
        self.warmup = warmup
        self.warmup_mode = warmup_mode
        self.warmup_start_factor = float(warmup_start_factor or 0.0)
        self.warmup_start_lr = None if warmup_start_lr is None else float(warmup_start_lr)
        self.warmup_unit = warmup_unit or interval
        self.interval = interval
        self.total_steps = total_steps
        self.max_lr = None if max_lr is None else float(max_lr)
        self.cycle_momentum = cycle_momentum
        self.base_momentum = float(base_momentum)
        self.max_momentum = float(max_momentum)
        self.optimizers = optimizers
        self.log_lr = log_lr

        # Run-time state, set in on_fit_start / on_train_start.
        self._targets: list[tuple[int, torch.optim.Optimizer]] = []
        self._starts: dict[int, list[int]] = {}
        self._names: dict[int, list[str]] = {}
        self._loaded: dict[int, list[tuple[str | None, int]]] | None = None
        self._warmup_steps = 0
        self._main_total: int | None = None
        self._manual = False
        self._manual_steps = 0
        self._applied_step = -1  # the step (and epoch) whose LRs are in the groups now
        self._own_warmup_until = 0  # groups' own warmups ("warmup_steps") end before this step
        self._applied_epoch = -1
        # Lightning reads state_key around every hook call of every step: build it once.
        self._state_key = self._generate_state_key(
            schedule=repr(self.schedule),
            warmup=self.warmup,
            interval=self.interval,
            optimizers=self.optimizers,
        )

    # ----------------------------------------------------------------------- pure API
    def lengths(
        self, total_steps: int | float | None, steps_per_epoch: int | None = None
    ) -> tuple[int, int | None]:
        """``(warmup steps, main schedule length)`` for a run of ``total_steps`` (or None).

        Raises ``ValueError`` when the warmup does not fit the run or the schedule needs a
        length that is unknown.

        Example:
            >>> LRSchedule("cosine", warmup=0.25).lengths(100)
            (25, 75)
        """
        total = self.total_steps if self.total_steps is not None else total_steps
        if total is not None and (total == math.inf or total <= 0):
            total = None
        if total is not None:
            total = int(total)
        if isinstance(self.warmup, float):
            if total is None:
                raise ValueError(
                    f"warmup={self.warmup} is a fraction of the run, but the run length is "
                    "unknown (e.g. max_epochs=-1 and no max_steps): pass an int `warmup`, "
                    "`total_steps`, or give the Trainer `max_epochs` / `max_steps`"
                )
            warmup = max(1, round(self.warmup * total))
        elif self.warmup_unit == "epoch" and self.interval == "step":
            if not steps_per_epoch:
                raise ValueError(
                    f"warmup={self.warmup} epochs needs the number of steps per epoch, which is "
                    "unknown (an iterable dataset?): give `warmup` in steps instead"
                )
            warmup = int(self.warmup) * int(steps_per_epoch)
        else:
            warmup = int(self.warmup)
        if total is not None and warmup >= total:
            raise ValueError(
                f"the warmup ({warmup} {self.interval}s) must be shorter than the run ({total} "
                f"{self.interval}s): lower `warmup` (got warmup={self.warmup!r}) or train longer"
            )
        if self.schedule.needs_total and total is None:
            raise ValueError(
                f"schedule {self.schedule!r} needs the run length, but none can be known "
                "(e.g. max_epochs=-1 and no max_steps, or an iterable dataset): pass "
                "`total_steps` to LRSchedule or give the Trainer `max_epochs` / `max_steps`"
            )
        return warmup, None if total is None else total - warmup

    def factor(
        self,
        step: int,
        warmup_steps: int,
        main_total: int | None,
        start_factor: float | None = None,
    ) -> float:
        """The LR multiplier at ``step`` (in ``interval`` units) for the given lengths.

        Example:
            >>> LRSchedule("linear", warmup=2).factor(3, 2, 4)
            0.75
        """
        if step < warmup_steps:
            start = self.warmup_start_factor if start_factor is None else start_factor
            return warmup_factor(step, warmup_steps, start, self.warmup_mode)
        return self.schedule(step - warmup_steps, main_total)

    def momentum(self, step: int, warmup_steps: int, main_total: int | None) -> float:
        """The cycled momentum at ``step`` (held at its start value during the warmup).

        Example:
            >>> CyclicLR(step_size_up=2).momentum(2, 0, None)
            0.8
        """
        return self.schedule.momentum(
            max(0, step - warmup_steps), main_total, self.base_momentum, self.max_momentum
        )

    def preview(
        self, total_steps: int, lr: float = 1.0, steps_per_epoch: int | None = None
    ) -> list[float]:
        """The LR at every step ``0 .. total_steps - 1`` of a group whose peak LR is ``lr``.

        Uses the same code as training, so what you see is what the optimizer gets.

        Example:
            >>> Warmup(2).preview(4, lr=0.1)
            [0.0, 0.05, 0.1, 0.1]
        """
        warmup, main_total = self.lengths(total_steps, steps_per_epoch)
        peak = self.max_lr if self.max_lr is not None else lr
        start = self.warmup_start_lr / peak if self.warmup_start_lr is not None else None
        return [peak * self.factor(t, warmup, main_total, start) for t in range(total_steps)]

    @property
    def state_key(self) -> str:
        return self._state_key

    # ----------------------------------------------------------------------- Lightning hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_trainer(trainer, self, pl_module)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._manual = not pl_module.automatic_optimization
        own = {id(p) for p in pl_module.parameters()}
        real = [
            i
            for i, opt in enumerate(trainer.optimizers)
            if any(id(p) in own for g in opt.param_groups for p in g["params"])
        ]
        if not real:
            how = (
                "in manual optimization `configure_optimizers` must still return the "
                "optimizer(s) that `self.optimizers()` hands to `training_step`"
                if self._manual
                else "return an optimizer from `configure_optimizers`"
            )
            raise ValueError(
                f"LRSchedule found no optimizer of {type(pl_module).__name__} to schedule "
                f"(configure_optimizers returned {len(trainer.optimizers)} optimizer(s) over its "
                f"parameters: none): {how}"
            )
        chosen = self.optimizers if self.optimizers is not None else tuple(real)
        bad = [i for i in chosen if i >= len(trainer.optimizers)]
        if bad:
            raise ValueError(
                f"LRSchedule(optimizers={list(chosen)}) names optimizer(s) {bad}, but "
                f"configure_optimizers returned {len(trainer.optimizers)} (indices "
                f"{list(range(len(trainer.optimizers)))})"
            )
        self._targets = [(i, trainer.optimizers[i]) for i in chosen]
        for config in trainer.lr_scheduler_configs:
            owner = getattr(config.scheduler, "optimizer", None)
            clash = [i for i, opt in self._targets if owner is None or owner is opt]
            if clash:
                raise ValueError(
                    f"Two owners for the learning rate of optimizer {clash[0]}: "
                    f"{type(pl_module).__name__}.configure_optimizers returns the LR scheduler "
                    f"{type(config.scheduler).__name__}, and the LRSchedule callback sets the LR "
                    "every step. Keep one: remove the scheduler from configure_optimizers (the "
                    "callback covers warmup, cosine, cyclic, one-cycle, ...), remove LRSchedule, "
                    "or pass LRSchedule(optimizers=[...]) without that optimizer's index."
                )
        for other in trainer.callbacks:
            if other is not self and isinstance(other, LRSchedule):
                mine = {i for i, _ in self._targets}
                theirs = set(other.optimizers) if other.optimizers is not None else set(real)
                if mine & theirs:
                    raise ValueError(
                        f"Two LRSchedule callbacks ({self.state_key} and {other.state_key}) set "
                        f"the LR of optimizer(s) {sorted(mine & theirs)}: keep one, or give each "
                        "its own `optimizers=[...]`"
                    )
        if self.cycle_momentum:
            for i, opt in self._targets:
                if "momentum" not in opt.defaults and "betas" not in opt.defaults:
                    raise ValueError(
                        f"cycle_momentum=True, but optimizer {i} ({type(opt).__name__}) has "
                        "neither `momentum` nor `betas`: use SGD/Adam-like optimizers or pass "
                        "cycle_momentum=False"
                    )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.interval == "step":
            total = trainer.estimated_stepping_batches
            batches = trainer.num_training_batches
            per_epoch = (
                math.ceil(batches / trainer.accumulate_grad_batches)
                if batches not in (0, math.inf)
                else None
            )
        else:
            total = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
            per_epoch = None
        self._warmup_steps, self._main_total = self.lengths(total, per_epoch)
        step = self._step(trainer)
        loaded = self._loaded or {}
        self._starts, self._names = {}, {}
        self._own_warmup_until = 0
        for i, opt in self._targets:
            groups = opt.param_groups
            saved = loaded.get(i, [])
            if len(saved) > len(groups):
                raise ValueError(
                    f"The checkpoint's LRSchedule state has {len(saved)} param groups for "
                    f"optimizer {i}, but it now has {len(groups)}: re-add the groups (e.g. with "
                    "the same LayerFreezing callback) before resuming"
                )
            for j, (name, _start) in enumerate(saved):
                if name != groups[j].get("name"):
                    raise ValueError(
                        f"Param group {j} of optimizer {i} was {name!r} in the checkpoint but is "
                        f"{groups[j].get('name')!r} now: resume with the same optimizer setup"
                    )
            self._starts[i] = [start for _name, start in saved]
            self._names[i] = []
            self._register(i, groups, step)
        self._loaded = None
        self._applied_step = -1

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = self._manual_steps if self._manual else trainer.global_step
        # Under gradient accumulation several batches share one optimizer step: set LRs once.
        if step == self._applied_step and (
            self.interval == "step" or trainer.current_epoch == self._applied_epoch
        ):
            return
        self._apply(step, trainer.current_epoch)
        if self.log_lr and step % max(1, trainer.log_every_n_steps) == 0 and trainer.loggers:
            self._log(trainer, step)

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # A group added after on_train_batch_start (by a callback running later) still gets
        # its scheduled LR before its first update.
        for i, opt in self._targets:
            if opt is optimizer and len(opt.param_groups) != len(self._starts[i]):
                self._apply(self._step(trainer), trainer.current_epoch)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._manual:
            self._manual_steps += 1

    @override
    def state_dict(self) -> dict[str, Any]:
        if self._loaded is not None:  # restored but not started yet: keep what was loaded
            return {
                "groups": {i: [list(g) for g in groups] for i, groups in self._loaded.items()},
                "manual_steps": self._manual_steps,
            }
        return {
            "groups": {
                i: [[name, start] for name, start in zip(self._group_names(i), starts)]
                for i, starts in self._starts.items()
            },
            "manual_steps": self._manual_steps,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = {
            int(i): [(name, int(start)) for name, start in groups]
            for i, groups in state_dict.get("groups", {}).items()
        }
        self._manual_steps = int(state_dict.get("manual_steps", 0))

    # ----------------------------------------------------------------------- internals
    def _step(self, trainer: pl.Trainer) -> int:
        return self._manual_steps if self._manual else trainer.global_step

    def _group_names(self, i: int) -> list[str | None]:
        opt = dict(self._targets)[i]
        return [g.get("name") for g in opt.param_groups[: len(self._starts[i])]]

    def _register(self, i: int, groups: list[dict[str, Any]], step: int) -> None:
        starts, names = self._starts[i], self._names[i]
        prefix = f"opt{i}/" if len(self._targets) > 1 else ""
        for j in range(len(starts), len(groups)):
            group = groups[j]
            if self.max_lr is not None:
                group["initial_lr"] = self.max_lr
            group.setdefault("initial_lr", group["lr"])
            warm = group.get("warmup_steps", 0)
            if isinstance(warm, bool) or not isinstance(warm, int) or warm < 0:
                raise ValueError(
                    f"param group {group.get('name', j)!r} of optimizer {i} has "
                    f"warmup_steps={warm!r}; it must be an int >= 0 (optimizer steps)"
                )
            starts.append(step)
        for group, start in zip(groups, starts):
            warm = group.get("warmup_steps") or 0
            self._own_warmup_until = max(self._own_warmup_until, start + warm)
        for j in range(len(names), len(groups)):
            base = f"{prefix}{groups[j].get('name', f'pg{j}')}"
            name = base if base not in names else f"{base}/{j}"
            names.append(name)

    def _apply(self, step: int, epoch: int) -> None:
        self._applied_step, self._applied_epoch = step, epoch
        t = step if self.interval == "step" else epoch
        warmup, main_total = self._warmup_steps, self._main_total
        in_warmup = t < warmup
        shared = 1.0 if in_warmup else self.schedule(t - warmup, main_total)
        momentum = self.momentum(t, warmup, main_total) if self.cycle_momentum else None
        if not in_warmup and momentum is None and step >= self._own_warmup_until:
            # the common case: one multiplier for every group, a few float writes
            for i, opt in self._targets:
                groups = opt.param_groups
                if len(groups) != len(self._starts[i]):
                    self._register(i, groups, step)
                for group in groups:
                    group["lr"] = group["initial_lr"] * group.get("lr_scale", 1.0) * shared
            if step >= self._own_warmup_until:
                return
        start_lr = self.warmup_start_lr
        for i, opt in self._targets:
            groups = opt.param_groups
            starts = self._starts[i]
            if len(groups) != len(starts):
                self._register(i, groups, step)
            for group, start in zip(groups, starts):
                base = group["initial_lr"]
                f = shared
                if in_warmup:
                    f = self.factor(
                        t,
                        warmup,
                        main_total,
                        None if start_lr is None or not base else start_lr / base,
                    )
                own = group.get("warmup_steps")
                if own and step - start < own:
                    f *= warmup_factor(step - start, own, group.get("warmup_start_factor", 0.0))
                group["lr"] = base * group.get("lr_scale", 1.0) * f
                if momentum is not None:
                    if "betas" in group:
                        group["betas"] = (momentum, *group["betas"][1:])
                    else:
                        group["momentum"] = momentum

    def _log(self, trainer: pl.Trainer, step: int) -> None:
        metrics: dict[str, float] = {}
        for i, opt in self._targets:
            for name, group in zip(self._names[i], opt.param_groups):
                metrics[f"lr/{name}"] = group["lr"]
                if self.cycle_momentum:
                    metrics[f"momentum/{name}"] = (
                        group["betas"][0] if "betas" in group else group["momentum"]
                    )
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)


class Warmup(LRSchedule):
    """A warmup to the peak LR, then constant: ``LRSchedule("constant", warmup, ...)``.

    Example:
        >>> Warmup(4, warmup_start_factor=0.2).preview(6, lr=1.0)
        [0.2, 0.4, 0.6000000000000001, 0.8, 1.0, 1.0]
    """

    def __init__(self, warmup: int | float, **kwargs: Any) -> None:
        super().__init__("constant", warmup, **kwargs)


class CyclicLR(LRSchedule):
    """Smith's cyclical LR with torch's ``CyclicLR`` arguments (momentum cycled by default).

    With ``base_lr`` and ``max_lr`` every scheduled group cycles between them (times its
    ``lr_scale``), as in torch; without them, between ``base_factor`` times the group's own
    ``initial_lr`` and that ``initial_lr``.

    Args:
        base_lr: lower LR (with ``max_lr``).
        max_lr: upper LR, >= ``base_lr``.
        step_size_up: steps from base to peak.
        step_size_down: steps from peak to base (default ``step_size_up``).
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: ``exp_range`` decay per step.
        base_factor: lower bound as a fraction of the peak when ``base_lr`` is not given.
        cycle_momentum: cycle momentum / beta1 between ``base_momentum`` and ``max_momentum``.
        base_momentum: torch's default 0.8.
        max_momentum: torch's default 0.9.
        **kwargs: other :class:`LRSchedule` arguments (``warmup``, ``optimizers``, ...).

    Example:
        >>> [round(lr, 6) for lr in CyclicLR(base_lr=0.1, max_lr=0.5, step_size_up=2).preview(5)]
        [0.1, 0.3, 0.5, 0.3, 0.1]
    """

    def __init__(
        self,
        base_lr: float | None = None,
        max_lr: float | None = None,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        base_factor: float = 0.1,
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
        **kwargs: Any,
    ) -> None:
        if (base_lr is None) != (max_lr is None):
            raise ValueError(
                f"give both `base_lr` and `max_lr` (or neither), but got {base_lr=!r}, {max_lr=!r}"
            )
        if base_lr is not None and max_lr is not None:
            for name, value in (("base_lr", base_lr), ("max_lr", max_lr)):
                if not _is_number(value):
                    raise TypeError(f"`{name}` must be a number, but got {name}={value!r}")
                if value < 0:
                    raise ValueError(f"`{name}` must be >= 0, but got {name}={value!r}")
            if not max_lr >= base_lr or max_lr == 0:
                raise ValueError(
                    f"`max_lr` must be > 0 and >= `base_lr`, but got {max_lr=!r} < {base_lr=!r}: "
                    "swap them"
                )
            base_factor = base_lr / max_lr
        schedule = Cyclic(
            step_size_up=step_size_up,
            step_size_down=step_size_down,
            mode=mode,
            gamma=gamma,
            base_factor=base_factor,
        )
        super().__init__(
            schedule,
            max_lr=max_lr,
            cycle_momentum=cycle_momentum,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
            **kwargs,
        )


class OneCycle(LRSchedule):
    """The one-cycle policy with torch's ``OneCycleLR`` arguments (momentum cycled by default).

    Args:
        max_lr: the peak LR of every scheduled group (default: each group's ``initial_lr``).
        pct_start: fraction of the run going up.
        div_factor: start LR = ``max_lr / div_factor``.
        final_div_factor: last LR = start LR / ``final_div_factor``.
        three_phase: torch's three-phase variant.
        anneal: ``"cos"`` or ``"linear"`` (torch's ``anneal_strategy``).
        cycle_momentum: cycle momentum / beta1 between ``base_momentum`` and ``max_momentum``.
        base_momentum: torch's default 0.85.
        max_momentum: torch's default 0.95.
        **kwargs: other :class:`LRSchedule` arguments (``total_steps``, ``optimizers``, ...).

    Example:
        >>> lrs = OneCycle(max_lr=1.0, pct_start=0.5, div_factor=10).preview(5)
        >>> [round(lr, 4) for lr in lrs]
        [0.1, 0.775, 0.9045, 0.3455, 0.0]
    """

    def __init__(
        self,
        max_lr: float | None = None,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        anneal: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        **kwargs: Any,
    ) -> None:
        schedule = _OneCycleSchedule(
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            three_phase=three_phase,
            anneal=anneal,
        )
        super().__init__(
            schedule,
            max_lr=max_lr,
            cycle_momentum=cycle_momentum,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
            **kwargs,
        )
