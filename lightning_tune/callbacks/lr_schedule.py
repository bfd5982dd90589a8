"""One owner for the learning rate: warmup + a main schedule, as a Lightning callback."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from typing_extensions import override

from lightning_tune._compat import check_trainer
from lightning_tune._lightning import Callback
from lightning_tune._validation import check_int, prefixed
from lightning_tune.callbacks._lr_settings import (
    INTERVALS,
    build_schedule,
    check_lrs,
    check_momentum,
    check_optimizers,
    check_start_lr,
    check_total_steps,
    check_warmup,
    group_momentum,
    pick,
    set_momentum,
    start_factor,
)
from lightning_tune.callbacks._milestones import run_length
from lightning_tune.callbacks._resume import warn_if_resume_skips_validation
from lightning_tune.schedules import Schedule, warmup_factor

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["INTERVALS", "LRSchedule"]

#: Steps (or epochs) a schedule is laid over under ``Trainer(fast_dev_run=...)``.
_SMOKE_RUN = 1000


class LRSchedule(Callback):
    """Set every parameter group's LR from a warmup and a main schedule, each optimizer step.

    For each group, ``lr = peak * lr_scale * f(step)``: ``peak`` is the group's unscaled base
    LR, its ``initial_lr`` (taken from its ``lr`` the first time it is seen if missing) unless
    ``max_lr`` is given, ``lr_scale`` its multiplier (default 1.0; layer-wise LR decay), and
    ``f`` a pure function of the step
    (:mod:`lightning_tune.schedules`): a warmup from ``warmup_start_factor`` (or
    ``warmup_start_lr``) to exactly 1.0, then the main schedule over the rest of the run.
    Groups added during the run (e.g. by :class:`~lightning_tune.callbacks.LayerFreezing`) are
    scheduled from the step they appear; a group key ``"warmup_steps"`` (int) gives such a group
    a linear warmup of its own, from ``group.get("warmup_start_factor", 0.0)``, starting at that
    step. The run length comes from ``trainer.estimated_stepping_batches`` (gradient
    accumulation, ``max_steps`` and ``max_epochs`` respected) unless ``total_steps`` is given.

    Floors: ``min_factor`` / ``end_factor`` are fractions of each group's peak; ``min_lr``
    (alias ``eta_min``, torch, and ``lr_min``, timm) is an absolute LR, shared or one per group,
    so ``lr = lr_scale * (min_lr + (peak - min_lr) * g(step))`` exactly like torch's schedulers
    (which have no ``lr_scale``) and timm's (which scale the floor by ``lr_scale`` too).

    Differences from the references: the warmup is a prefix (timm's ``warmup_prefix=True``), so
    the peak is reached at step ``warmup`` and the main schedule runs over ``total - warmup``
    steps; timm's default ``warmup_prefix=False`` never reaches the peak. Cyclic and one-cycle
    schedules express ``base_lr``/``max_lr`` as multipliers of the group's peak LR (see
    :class:`~lightning_tune.callbacks.CyclicLR` and :class:`~lightning_tune.callbacks.OneCycle`
    for torch's absolute arguments, per group too).

    The LRs are logged as ``lr/<group name>`` (``lr/pg<i>`` for unnamed groups,
    ``lr/opt<k>/...`` with several optimizers) every ``trainer.log_every_n_steps`` steps, beside
    any ``LearningRateMonitor``. If ``configure_optimizers`` also returns an LR scheduler for a
    scheduled optimizer, :meth:`on_fit_start` raises instead of letting the two fight.

    In manual optimization the schedule advances once per training batch.

    Args:
        schedule: a name from :data:`lightning_tune.schedules.SCHEDULES` (``"constant"``,
            ``"cosine"``, ``"linear"``, ``"stable_decay"``, ``"polynomial"``, ``"exponential"``,
            ``"step"``, ``"multistep"``, ``"cyclic"``, ``"cosine_restarts"``, ``"one_cycle"``)
            with its arguments as extra keyword arguments, or a
            :class:`~lightning_tune.schedules.Schedule`.
        warmup: warmup length: an int (steps, or ``warmup_unit``), or a float in (0, 1) for a
            fraction of the run. 0 = no warmup.
        warmup_mode: ``"linear"``, ``"cosine"`` or ``"exponential"``.
        warmup_start_factor: the warmup starts at this fraction of the peak, in [0, 1]
            (default 0.0; must be > 0 for ``exponential``); an error without a warmup.
        warmup_start_lr: or an absolute start LR (before ``lr_scale``, as timm's
            ``warmup_lr_init``); an error above a group's peak or without a warmup.
        warmup_unit: ``"step"`` or ``"epoch"`` for an int ``warmup`` (default: ``interval``).
        interval: ``"step"`` (update every optimizer step) or ``"epoch"``; schedule lengths such
            as ``step_size`` or ``period`` count in this unit.
        total_steps: run length in ``interval`` units (default: from the Trainer).
        max_lr: if given, the peak of every scheduled group (one float) or of each group (a
            list, as torch's ``max_lr``) instead of its ``initial_lr`` (which is left as is).
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
        self.schedule = build_schedule(schedule, schedule_kwargs)
        check_warmup(
            warmup, warmup_mode, warmup_start_factor, warmup_start_lr, warmup_unit, interval
        )
        total_steps = check_total_steps(total_steps)
        max_lr = check_lrs("max_lr", max_lr)
        base_momentum, max_momentum = check_momentum(
            self.schedule, cycle_momentum, base_momentum, max_momentum
        )
        optimizers = check_optimizers(optimizers)
        if warmup_start_lr is not None and max_lr is not None:
            for j, peak in enumerate(max_lr if isinstance(max_lr, tuple) else (max_lr,)):
                check_start_lr(float(warmup_start_lr), peak, j)
        self.warmup = warmup
        self.warmup_mode = warmup_mode
        self.warmup_start_factor = float(warmup_start_factor or 0.0)
        self.warmup_start_lr = None if warmup_start_lr is None else float(warmup_start_lr)
        self.warmup_unit = warmup_unit or interval
        self.interval = interval
        self.total_steps = total_steps
        self.max_lr = max_lr
        self.cycle_momentum = cycle_momentum
        self.base_momentum = float(base_momentum)
        self.max_momentum = float(max_momentum)
        self.optimizers = optimizers
        self.log_lr = log_lr

        self._reset_run_state()
        # Lightning reads state_key around every hook call of every step: build it once.
        self._state_key = self._generate_state_key(
            schedule=repr(self.schedule).replace(", min_lr=None", ""),
            warmup=self.warmup,
            interval=self.interval,
            optimizers=self.optimizers,
        )

    def _reset_run_state(self) -> None:
        """Run-time state, set in on_fit_start / on_train_start."""
        self._targets: list[tuple[int, torch.optim.Optimizer]] = []
        self._starts: dict[int, list[int]] = {}
        self._names: dict[int, list[str]] = {}
        # per optimizer and group: (peak LR, the schedule with that group's absolute floor)
        self._plans: dict[int, list[tuple[float, Schedule]]] = {}
        per_group = isinstance(self.max_lr, tuple) or getattr(self.schedule, "min_lr", None)
        self._uniform = not per_group
        self._loaded: dict[int, list[tuple[str | None, int]]] | None = None
        self._warmup_steps = 0
        self._main_total: int | None = None
        self._manual = False
        self._manual_steps = 0
        self._applied_step = -1  # the step (and epoch) whose LRs are in the groups now
        self._own_warmup_until = 0  # groups' own warmups ("warmup_steps") end before this step
        self._applied_epoch = -1

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
        schedule: Schedule | None = None,
    ) -> float:
        """The LR multiplier at ``step`` (in ``interval`` units) for the given lengths.

        ``schedule`` is the main schedule of one param group (default: the callback's; a
        schedule with an absolute ``min_lr`` needs ``schedule.for_group(peak)``).

        Example:
            >>> LRSchedule("linear", warmup=2).factor(3, 2, 4)
            0.75
        """
        if step < warmup_steps:
            start = self.warmup_start_factor if start_factor is None else start_factor
            return warmup_factor(step, warmup_steps, start, self.warmup_mode)
        return (schedule or self.schedule)(step - warmup_steps, main_total)

    def momentum(self, step: int, warmup_steps: int, main_total: int | None) -> float:
        """The cycled momentum at ``step`` (held at its start value during the warmup).

        Example:
            >>> LRSchedule("cyclic", step_size_up=2, cycle_momentum=True).momentum(2, 0, None)
            0.8
        """
        return self.schedule.momentum(
            max(0, step - warmup_steps), main_total, self.base_momentum, self.max_momentum
        )

    def preview(
        self,
        total_steps: int,
        lr: float = 1.0,
        steps_per_epoch: int | None = None,
        group: int = 0,
    ) -> list[float]:
        """The LR at every step ``0 .. total_steps - 1`` of param group ``group`` whose peak
        LR is ``lr`` (or ``max_lr``), before its ``lr_scale``.

        Uses the same code as training, so what you see is what the optimizer gets.

        Example:
            >>> LRSchedule("constant", warmup=2).preview(4, lr=0.1)
            [0.0, 0.05, 0.1, 0.1]
            >>> [round(x, 4) for x in LRSchedule("linear", min_lr=0.02).preview(3, lr=0.1)]
            [0.1, 0.0733, 0.0467]
        """
        warmup, main_total = self.lengths(total_steps, steps_per_epoch)
        peak, schedule = self._plan_for(lr, group)
        start = start_factor(self.warmup_start_lr, peak)
        return [
            peak * self.factor(t, warmup, main_total, start, schedule) for t in range(total_steps)
        ]

    def _plan_for(self, initial_lr: float, index: int) -> tuple[float, Schedule]:
        """(peak LR, main schedule) of param group ``index`` whose ``initial_lr`` is given."""
        peak = float(initial_lr) if self.max_lr is None else pick(self.max_lr, "max_lr", index)
        if self.warmup_start_lr is not None:
            check_start_lr(self.warmup_start_lr, peak, index)
        return peak, self.schedule.for_group(peak, index)

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
            total, per_epoch = run_length(trainer)
        else:
            total = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
            per_epoch = None
        if trainer.fast_dev_run:
            # A smoke test of a few batches (also the tuner's pre-flight) cannot hold the real
            # run's warmup: lay the schedule over a nominal run instead of refusing it.
            total = max(_SMOKE_RUN, per_epoch or 0)
        self._warmup_steps, self._main_total = self.lengths(total, per_epoch)
        step = self._step(trainer)
        loaded = self._loaded or {}
        self._starts, self._names, self._plans = {}, {}, {}
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
            self._plans[i] = []
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
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        warn_if_resume_skips_validation(trainer)

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
        starts, names, plans = self._starts[i], self._names[i], self._plans[i]
        prefix = f"opt{i}/" if len(self._targets) > 1 else ""
        for j in range(len(starts), len(groups)):
            group = groups[j]
            group.setdefault("initial_lr", group["lr"])
            with prefixed(f"param group {group.get('name', j)!r} of optimizer {i}"):
                check_int(
                    "warmup_steps",
                    group.get("warmup_steps", 0),
                    minimum=0,
                    what="an int (optimizer steps)",
                    type_error=ValueError,
                )
            starts.append(step)
        for j in range(len(plans), len(groups)):
            try:
                plans.append(self._plan_for(groups[j]["initial_lr"], j))
            except ValueError as err:
                raise ValueError(
                    f"param group {groups[j].get('name', j)!r} of optimizer {i}: {err}"
                ) from None
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
        momentum = self.momentum(t, warmup, main_total) if self.cycle_momentum else None
        for i, opt in self._targets:
            if len(opt.param_groups) != len(self._starts[i]):
                self._register(i, opt.param_groups, step)
        # the common case: one multiplier for every group, a few float writes
        uniform = self._uniform and not in_warmup and momentum is None
        uniform = uniform and step >= self._own_warmup_until
        shared = self.schedule(t - warmup, main_total) if uniform else None
        for i, opt in self._targets:
            groups = opt.param_groups
            if shared is not None:
                for group, (peak, _) in zip(groups, self._plans[i]):
                    group["lr"] = peak * group.get("lr_scale", 1.0) * shared
                continue
            for group, start, (peak, schedule) in zip(groups, self._starts[i], self._plans[i]):
                f = self.factor(
                    t, warmup, main_total, start_factor(self.warmup_start_lr, peak), schedule
                )
                own = group.get("warmup_steps")
                if own and step - start < own:
                    f *= warmup_factor(step - start, own, group.get("warmup_start_factor", 0.0))
                group["lr"] = peak * group.get("lr_scale", 1.0) * f
                if momentum is not None:
                    set_momentum(group, momentum)

    def _log(self, trainer: pl.Trainer, step: int) -> None:
        metrics: dict[str, float] = {}
        for i, opt in self._targets:
            for name, group in zip(self._names[i], opt.param_groups):
                metrics[f"lr/{name}"] = group["lr"]
                if self.cycle_momentum:
                    metrics[f"momentum/{name}"] = group_momentum(group)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
