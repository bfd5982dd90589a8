"""Pure schedules: closed forms, validation, and parity with torch's and timm's schedulers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from timm.scheduler import CosineLRScheduler
from torch.optim import lr_scheduler

from lightning_tune.callbacks import CyclicLR, LRSchedule, OneCycle
from lightning_tune.schedules import (
    SCHEDULES,
    Constant,
    Cosine,
    CosineRestarts,
    Cyclic,
    Exponential,
    Linear,
    MultiStep,
    Polynomial,
    StableDecay,
    Step,
    make_schedule,
    schedule_factor,
    warmup_factor,
)
from lightning_tune.schedules import OneCycle as OneCycleSchedule

LR = 0.1


def _optimizer(optimizer: str = "sgd", lr: float = LR) -> torch.optim.Optimizer:
    param = torch.nn.Parameter(torch.zeros(2))
    if optimizer == "adam":
        return torch.optim.Adam([param], lr=lr)
    return torch.optim.SGD([param], lr=lr, momentum=0.9)


def _torch_lrs(scheduler: lr_scheduler.LRScheduler, steps: int, momentum: bool = False):
    lrs, moms = [], []
    optimizer = scheduler.optimizer
    for _ in range(steps):
        group = optimizer.param_groups[0]
        lrs.append(group["lr"])
        moms.append(group["betas"][0] if "betas" in group else group.get("momentum"))
        optimizer.step()
        scheduler.step()
    return (lrs, moms) if momentum else lrs


def _close(ours, theirs, rel: float = 1e-12, abs_: float = 1e-15) -> None:
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert a == pytest.approx(b, rel=rel, abs=abs_), f"step {step}: {a} != {b}"


# ------------------------------------------------------------------------------- warmup
@pytest.mark.parametrize("mode", ["linear", "cosine", "exponential"])
def test_warmup_reaches_peak_exactly_and_hands_over_without_jump(mode):
    start = 0.01
    values = [warmup_factor(t, 7, start, mode) for t in range(10)]
    assert values[0] == pytest.approx(start)
    assert all(a < b for a, b in itertools.pairwise(values[:8]))
    assert values[7:] == [1.0, 1.0, 1.0]
    # composed with a main schedule: step == warmup is the main schedule's first value (1.0)
    composed = [
        schedule_factor(
            t, Cosine(), total=20, warmup_steps=7, warmup_start_factor=start, warmup_mode=mode
        )
        for t in range(20)
    ]
    assert composed[7] == 1.0
    assert composed[6] < 1.0 and composed[8] < 1.0


def test_warmup_of_one_step_does_not_divide_by_zero():
    assert [warmup_factor(t, 1, 0.5) for t in range(3)] == [0.5, 1.0, 1.0]


# ------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize(
    ("schedule", "step", "total", "expected"),
    [
        (Constant(), 123, None, 1.0),
        (Cosine(min_factor=0.2), 0, 10, 1.0),
        (Cosine(min_factor=0.2), 10, 10, 0.2),
        (Cosine(min_factor=0.2), 15, 10, 0.2),
        (Linear(end_factor=0.5), 10, 10, 0.5),
        (Linear(), 3, 4, 0.25),
        (Polynomial(power=2.0, end_factor=0.1), 10, 10, 0.1),
        (Polynomial(power=0.5), 3, 4, 0.5),
        (Exponential(gamma=0.9), 2, None, 0.81),
        (Step(step_size=3, gamma=0.5), 2, None, 1.0),
        (Step(step_size=3, gamma=0.5), 3, None, 0.5),
        (MultiStep(milestones=(2, 5), gamma=0.1), 4, None, 0.1),
        (MultiStep(milestones=(2, 5), gamma=0.1), 5, None, 0.01),
        (StableDecay(decay=0.2), 8, 10, 1.0),
        (StableDecay(decay=0.2), 9, 10, 0.5),
        (StableDecay(decay=0.2), 10, 10, 0.0),
        (StableDecay(decay=0.5, min_factor=0.2), 12, 10, 0.2),
    ],
)
def test_closed_forms(schedule, step, total, expected):
    assert schedule(step, total) == pytest.approx(expected, rel=1e-12)


def test_schedules_are_pure_functions_of_the_step():
    restarts = CosineRestarts(period=3, period_mult=1.5, decay=0.7, k_decay=1.3)
    forward = [restarts(t) for t in range(40)]
    backward = [restarts(t) for t in reversed(range(40))][::-1]
    assert forward == backward


def test_restart_cycles_are_found_exactly_at_boundaries():
    restarts = CosineRestarts(period=10, period_mult=1.1)
    boundaries = [0.0]
    for i in range(30):
        boundaries.append(boundaries[-1] + 10 * 1.1**i)
    for i, start in enumerate(boundaries[1:25], start=1):
        assert restarts.cycle(math.ceil(start + 1e-9))[0] == i
        assert restarts.cycle(math.floor(start - 1e-9))[0] == i - 1


def test_stable_decay_of_the_whole_run_is_the_cosine():
    for t in range(11):
        assert StableDecay(decay=1.0, min_factor=0.1)(t, 10) == pytest.approx(
            Cosine(min_factor=0.1)(t, 10)
        )


def test_needs_total_raises_with_the_fix():
    with pytest.raises(ValueError, match=r"needs the total number of steps.*max_steps"):
        Cosine()(3, None)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (
            lambda: make_schedule("cosinus"),
            ValueError,
            r"`schedule` must be one of \['constant', 'cosine'.*'one_cycle'\], but got schedule='cosinus'",
        ),
        (
            lambda: make_schedule("cosine", gamma=0.5),
            TypeError,
            r"unexpected argument\(s\) \['gamma'\]",
        ),
        (lambda: make_schedule("step"), ValueError, r"needs \['step_size'\]"),
        (lambda: Cyclic(step_size_up=0), ValueError, "`step_size_up` must be an int >= 1, but got"),
        (lambda: Cyclic(step_size_up=2.5), TypeError, "`step_size_up` must be an int"),
        (
            lambda: Cyclic(mode="triangle"),
            ValueError,
            r"`mode` must be one of \['triangular', 'triangular2', 'exp_range'\]",
        ),
        (lambda: Cyclic(base_factor=1.5), ValueError, "max_lr must be >= base_lr"),
        (
            lambda: Cosine(min_factor=-0.1),
            ValueError,
            r"`min_factor` must be a number >= 0 and <= 1",
        ),
        (lambda: Cosine(min_factor="0.1"), TypeError, "`min_factor` must be a number"),
        (lambda: Exponential(gamma=-0.5), ValueError, r"`gamma` must be a number > 0 and <= 1"),
        (lambda: Step(step_size=-1), ValueError, "step_size=-1"),
        (lambda: MultiStep(milestones=(5, 2)), ValueError, "strictly increasing"),
        (lambda: CosineRestarts(period=0), ValueError, "period=0"),
        (
            lambda: CosineRestarts(period=5, period_mult=0.5),
            ValueError,
            "`period_mult` must be a number >= 1",
        ),
        (lambda: CosineRestarts(period=5, k_decay=0), ValueError, "`k_decay` must be a number > 0"),
        (
            lambda: OneCycleSchedule(pct_start=0.6, three_phase=True),
            ValueError,
            r"pct_start.*\(0, 0.5\) with three_phase=True",
        ),
        (
            lambda: OneCycleSchedule(anneal="cosine"),
            ValueError,
            r"`anneal` must be one of \['cos', 'linear'\]",
        ),
        (lambda: OneCycleSchedule(div_factor=-2), ValueError, "`div_factor` must be a number >= 1"),
        (lambda: Polynomial(power=0), ValueError, "`power` must be a number > 0"),
        (
            lambda: StableDecay(decay=0),
            ValueError,
            r"`decay` must be a number > 0 and <= 1, but got decay=0",
        ),
        (lambda: StableDecay(decay=1.5), ValueError, r"`decay` must be a number > 0 and <= 1"),
        (
            lambda: StableDecay(min_factor=2),
            ValueError,
            r"`min_factor` must be a number >= 0 and <= 1",
        ),
    ],
)
def test_bad_arguments(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_every_schedule_name_is_constructible_with_its_required_arguments():
    required = {
        "step": {"step_size": 2},
        "multistep": {"milestones": [2]},
        "cosine_restarts": {"period": 3},
    }
    for name in SCHEDULES:
        schedule = make_schedule(name, **required.get(name, {}))
        # every main schedule starts at the peak, except the two that start low like torch's
        expected = {"cyclic": 0.1, "one_cycle": 1 / 25}.get(name, 1.0)
        assert schedule(0, 10) == pytest.approx(expected)


# ------------------------------------------------------------------- parity: torch
@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cyclic_matches_torch_cycliclr(mode, optimizer):
    kwargs = {"step_size_up": 5, "step_size_down": 3, "mode": mode, "gamma": 0.97}
    torch_sched = lr_scheduler.CyclicLR(
        _optimizer(optimizer),
        base_lr=0.01,
        max_lr=0.1,
        base_momentum=0.8,
        max_momentum=0.9,
        **kwargs,
    )
    theirs, their_moms = _torch_lrs(torch_sched, 40, momentum=True)
    ours = CyclicLR(base_lr=0.01, max_lr=0.1, **kwargs)
    _close(ours.preview(40), theirs)
    _close([ours.momentum(t, 0, None) for t in range(40)], their_moms)


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_matches_torch_onecyclelr(three_phase, anneal):
    kwargs = {
        "pct_start": 0.3,
        "div_factor": 20.0,
        "final_div_factor": 50.0,
        "three_phase": three_phase,
    }
    torch_sched = lr_scheduler.OneCycleLR(
        _optimizer("adam"), max_lr=0.5, total_steps=37, anneal_strategy=anneal, **kwargs
    )
    theirs, their_moms = _torch_lrs(torch_sched, 37, momentum=True)
    ours = OneCycle(max_lr=0.5, anneal=anneal, **kwargs)
    _close(ours.preview(37), theirs)
    warmup, main_total = ours.lengths(37)
    _close([ours.momentum(t, warmup, main_total) for t in range(37)], their_moms)


@pytest.mark.parametrize(("t_0", "t_mult", "eta_min"), [(5, 1, 0.0), (4, 2, 0.001), (3, 3, 0.01)])
def test_cosine_restarts_matches_torch_warm_restarts(t_0, t_mult, eta_min):
    torch_sched = lr_scheduler.CosineAnnealingWarmRestarts(
        _optimizer(), T_0=t_0, T_mult=t_mult, eta_min=eta_min
    )
    theirs = _torch_lrs(torch_sched, 60)
    ours = LRSchedule("cosine_restarts", period=t_0, period_mult=t_mult, min_factor=eta_min / LR)
    _close(ours.preview(60, lr=LR), theirs)


@pytest.mark.parametrize(("start_factor", "eta_min"), [(0.1, 0.0), (0.25, 0.005)])
def test_linear_warmup_then_cosine_matches_torch_sequentiallr(start_factor, eta_min):
    warmup, total = 6, 30
    optimizer = _optimizer()
    torch_sched = lr_scheduler.SequentialLR(
        optimizer,
        [
            lr_scheduler.LinearLR(optimizer, start_factor=start_factor, total_iters=warmup),
            lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=eta_min),
        ],
        milestones=[warmup],
    )
    theirs = _torch_lrs(torch_sched, total)
    ours = LRSchedule(
        "cosine", warmup=warmup, warmup_start_factor=start_factor, min_factor=eta_min / LR
    )
    _close(ours.preview(total, lr=LR), theirs, rel=1e-10)


# -------------------------------------------------------------------- parity: timm
@pytest.mark.parametrize(
    ("cycle_mul", "cycle_decay", "cycle_limit", "k_decay"),
    [
        (1.0, 1.0, 1, 1.0),
        (1.0, 0.5, 3, 1.0),
        (2.0, 0.8, 4, 1.0),
        (1.5, 0.9, 5, 1.5),
        (1.0, 1.0, 2, 0.7),
    ],
)
def test_cosine_restarts_matches_timm_cosine_with_warmup_prefix(
    cycle_mul, cycle_decay, cycle_limit, k_decay
):
    t_initial, warmup_t, warmup_lr_init, lr_min, total = 8, 4, 0.001, 0.002, 80
    optimizer = _optimizer()
    optimizer.param_groups[0]["lr_scale"] = 0.5
    timm_sched = CosineLRScheduler(
        optimizer,
        t_initial=t_initial,
        lr_min=lr_min,
        cycle_mul=cycle_mul,
        cycle_decay=cycle_decay,
        cycle_limit=cycle_limit,
        warmup_t=warmup_t,
        warmup_lr_init=warmup_lr_init,
        warmup_prefix=True,
        t_in_epochs=False,
        k_decay=k_decay,
    )
    theirs = []
    for t in range(total):
        timm_sched.step_update(t)
        theirs.append(optimizer.param_groups[0]["lr"])
    ours = LRSchedule(
        "cosine_restarts",
        warmup=warmup_t,
        warmup_start_lr=warmup_lr_init,
        period=t_initial,
        period_mult=cycle_mul,
        decay=cycle_decay,
        cycle_limit=cycle_limit,
        k_decay=k_decay,
        min_factor=lr_min / LR,
    )
    _close([0.5 * lr for lr in ours.preview(total, lr=LR)], theirs, rel=1e-10)


def test_plain_cosine_matches_timm_single_cycle():
    warmup_t, total = 5, 50
    optimizer = _optimizer()
    timm_sched = CosineLRScheduler(
        optimizer,
        t_initial=total - warmup_t,
        lr_min=0.0,
        warmup_t=warmup_t,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    theirs = []
    for t in range(total):
        timm_sched.step_update(t)
        theirs.append(optimizer.param_groups[0]["lr"])
    _close(LRSchedule("cosine", warmup=warmup_t).preview(total, lr=LR), theirs, rel=1e-10)


def test_timm_default_warmup_never_reaches_the_peak_but_ours_does():
    warmup_t, total = 5, 50
    optimizer = _optimizer()
    timm_sched = CosineLRScheduler(
        optimizer, t_initial=total, warmup_t=warmup_t, t_in_epochs=False
    )  # warmup_prefix=False, timm's default
    timm_peak = 0.0
    for t in range(total):
        timm_sched.step_update(t)
        timm_peak = max(timm_peak, optimizer.param_groups[0]["lr"])
    assert timm_peak < LR
    assert max(LRSchedule("cosine", warmup=warmup_t).preview(total, lr=LR)) == LR


def test_custom_schedule_object_drives_the_callback():
    assert LRSchedule(Step(step_size=2, gamma=0.5), warmup=2).preview(6) == [
        0.0,
        0.5,
        1.0,
        1.0,
        0.5,
        0.5,
    ]
    with pytest.raises(TypeError, match=r"schedule arguments \['gamma'\] are only accepted"):
        LRSchedule(Step(step_size=2), gamma=0.5)


def test_zero_total_is_rejected():
    with pytest.raises(ValueError, match="needs `total` > 0, but got total=0"):
        Linear()(0, 0)


@pytest.mark.parametrize(("period", "period_mult"), [(1, 3), (2, 2), (1, 2), (3, 4)])
def test_a_restart_at_a_whole_number_step_starts_the_new_cycle(period, period_mult):
    # cycle i starts at period * (m**i - 1) / (m - 1): whole numbers here, where a float
    # logarithm lands just below the integer (log(243, 3) = 4.999...)
    restarts = CosineRestarts(period=period, period_mult=period_mult, min_factor=0.1)
    for i in range(1, 9):
        start = period * (period_mult**i - 1) // (period_mult - 1)
        assert restarts.cycle(start) == (i, 0.0, float(period * period_mult**i))
        assert restarts(start) == 1.0
        assert restarts.cycle(start - 1)[0] == i - 1
        assert restarts(start - 0.5) < 1.0  # the end of the cycle before


def test_cycle_121_of_period_1_times_3_is_the_start_of_cycle_5():
    restarts = CosineRestarts(period=1, period_mult=3)
    assert restarts.cycle(121) == (5, 0.0, 243.0)
    assert restarts(121) == 1.0


@pytest.mark.parametrize("warmup", [1, 4, 9])
def test_the_main_schedule_runs_over_the_run_minus_the_warmup(warmup):
    total = 10
    for step in range(warmup, total + 1):
        expected = 1.0 - (step - warmup) / (total - warmup)
        assert schedule_factor(step, Linear(), total=total, warmup_steps=warmup) == pytest.approx(
            expected, abs=1e-12
        )
    assert schedule_factor(total, Linear(), total=total, warmup_steps=warmup) == 0.0


# ------------------------------------------- parity with two groups and absolute floors
BASES = (0.1, 0.02)  # two param groups with different base LRs
FLOOR = 0.004  # a shared, non-zero absolute floor (torch's eta_min, timm's lr_min)


def _two_groups(lrs=BASES, momentum: bool = True) -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9 if momentum else 0)


def _group_traces(scheduler, steps: int) -> list[list[float]]:
    optimizer = scheduler.optimizer
    traces: list[list[float]] = [[] for _ in optimizer.param_groups]
    for _ in range(steps):
        for trace, group in zip(traces, optimizer.param_groups):
            trace.append(group["lr"])
        optimizer.step()
        scheduler.step()
    return traces


def _ours(callback, steps: int, lrs=BASES) -> list[list[float]]:
    return [callback.preview(steps, lr=lr, group=j) for j, lr in enumerate(lrs)]


@pytest.mark.parametrize("name", ["eta_min", "lr_min", "min_lr"])
@pytest.mark.parametrize(("t_0", "t_mult"), [(5, 1), (4, 2)])
def test_two_groups_match_torch_warm_restarts_with_an_absolute_floor(name, t_0, t_mult):
    theirs = _group_traces(
        lr_scheduler.CosineAnnealingWarmRestarts(
            _two_groups(), T_0=t_0, T_mult=t_mult, eta_min=FLOOR
        ),
        60,
    )
    ours = LRSchedule("cosine_restarts", period=t_0, period_mult=t_mult, **{name: FLOOR})
    for mine, reference in zip(_ours(ours, 60), theirs):
        _close(mine, reference)


def test_two_groups_match_torch_linear_then_cosine_with_an_absolute_floor():
    warmup, total, start = 6, 30, 0.25
    optimizer = _two_groups()
    theirs = _group_traces(
        lr_scheduler.SequentialLR(
            optimizer,
            [
                lr_scheduler.LinearLR(optimizer, start_factor=start, total_iters=warmup),
                lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=FLOOR),
            ],
            milestones=[warmup],
        ),
        total,
    )
    ours = LRSchedule("cosine", warmup=warmup, warmup_start_factor=start, eta_min=FLOOR)
    for mine, reference in zip(_ours(ours, total), theirs):
        _close(mine, reference, rel=1e-10)


def test_relative_floor_differs_from_torch_for_the_second_group():
    """Why `min_lr` exists: `min_factor` is relative, so it cannot match a shared eta_min."""
    theirs = _group_traces(
        lr_scheduler.CosineAnnealingLR(_two_groups(), T_max=20, eta_min=FLOOR), 21
    )
    relative = LRSchedule("cosine", min_factor=FLOOR / BASES[0])
    assert relative.preview(21, lr=BASES[1])[-1] != pytest.approx(theirs[1][-1])


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_two_groups_match_torch_cycliclr_with_per_group_bounds(mode):
    base_lr, max_lr = [0.01, 0.001], [0.1, 0.03]
    torch_sched = lr_scheduler.CyclicLR(
        _two_groups(),
        base_lr=base_lr,
        max_lr=max_lr,
        step_size_up=5,
        step_size_down=3,
        mode=mode,
        gamma=0.97,
    )
    theirs = _group_traces(torch_sched, 40)
    ours = CyclicLR(
        base_lr=base_lr, max_lr=max_lr, step_size_up=5, step_size_down=3, mode=mode, gamma=0.97
    )
    for mine, reference in zip(_ours(ours, 40), theirs):
        _close(mine, reference)


def test_two_groups_match_torch_onecyclelr_with_per_group_peaks():
    max_lr = [0.5, 0.08]
    torch_sched = lr_scheduler.OneCycleLR(
        _two_groups(), max_lr=max_lr, total_steps=37, div_factor=20.0, final_div_factor=50.0
    )
    theirs = _group_traces(torch_sched, 37)
    ours = OneCycle(max_lr=max_lr, div_factor=20.0, final_div_factor=50.0)
    for mine, reference in zip(_ours(ours, 37), theirs):
        _close(mine, reference)


@pytest.mark.parametrize(("cycle_limit", "cycle_mul"), [(1, 1.0), (3, 1.0), (4, 2.0)])
def test_two_scaled_groups_match_timm_cosine_with_lr_min_and_warmup_lr_init(cycle_limit, cycle_mul):
    t_initial, warmup_t, warmup_lr_init, total, scales = 8, 4, 0.001, 70, (1.0, 0.3)
    optimizer = _two_groups()
    for group, scale in zip(optimizer.param_groups, scales):
        group["lr_scale"] = scale
    timm_sched = CosineLRScheduler(
        optimizer,
        t_initial=t_initial,
        lr_min=FLOOR,
        cycle_mul=cycle_mul,
        cycle_limit=cycle_limit,
        warmup_t=warmup_t,
        warmup_lr_init=warmup_lr_init,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    theirs: list[list[float]] = [[], []]
    for t in range(total):
        timm_sched.step_update(t)
        for trace, group in zip(theirs, optimizer.param_groups):
            trace.append(group["lr"])
    ours = LRSchedule(
        "cosine_restarts",
        warmup=warmup_t,
        warmup_start_lr=warmup_lr_init,
        period=t_initial,
        period_mult=cycle_mul,
        cycle_limit=cycle_limit,
        lr_min=FLOOR,
    )
    for mine, reference, scale in zip(_ours(ours, total), theirs, scales):
        _close([scale * lr for lr in mine], reference, rel=1e-10)


def test_per_group_floors_match_torch_run_per_group():
    floors = [0.01, 0.001]
    ours = _ours(LRSchedule("cosine", min_lr=floors), 25)
    for j, (base, floor) in enumerate(zip(BASES, floors)):
        single = _two_groups(lrs=(base,))
        (theirs,) = _group_traces(
            lr_scheduler.CosineAnnealingLR(single, T_max=25, eta_min=floor), 25
        )
        _close(ours[j], theirs)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: Cosine(min_factor=0.1, min_lr=0.001), ValueError, "not both"),
        (lambda: Cosine(min_lr=-1.0), ValueError, r"`min_lr` must be >= 0, but got min_lr=-1.0"),
        (lambda: Cosine(min_lr=[]), ValueError, "non-empty list"),
        (lambda: Cosine(min_lr="0.1"), TypeError, "`min_lr` must be a number"),
        (lambda: Cosine(min_lr=0.01)(3, 10), ValueError, r"absolute floor.*for_group"),
        (lambda: Cosine(min_lr=0.5).for_group(0.1), ValueError, r"must be <= the peak LR"),
        (lambda: Cosine(min_lr=(0.1,)).for_group(0.2, 1), ValueError, "has 1 entries"),
        (lambda: make_schedule("cosine", eta_min=0.1, min_lr=0.1), ValueError, "not both"),
        (lambda: make_schedule("exponential", eta_min=0.1), TypeError, r"\['eta_min'\]"),
    ],
)
def test_bad_floors(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


@pytest.mark.parametrize("factor", [0.0, 1.0])
def test_both_ends_of_a_factor_range_are_accepted(factor):
    # [0, 1] is closed: 1.0 makes the schedule flat at the peak, 0.0 ends at zero
    assert Cosine(min_factor=factor)(10, 10) == factor
    assert Linear(end_factor=factor)(10, 10) == factor


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda v: Cosine(min_factor=v), "min_factor"),
        (lambda v: Linear(end_factor=v), "end_factor"),
        (lambda v: Polynomial(end_factor=v), "end_factor"),
        (lambda v: CosineRestarts(period=2, min_factor=v), "min_factor"),
        (lambda v: Exponential(gamma=v), "gamma"),
        (lambda v: Step(step_size=2, gamma=v), "gamma"),
        (lambda v: MultiStep(milestones=(2,), gamma=v), "gamma"),
    ],
)
@pytest.mark.parametrize("value", [-0.1, 1.01, 1.5])
def test_factors_outside_0_1_are_refused(make, name, value):
    with pytest.raises(
        ValueError, match=rf"`{name}` must be a number >=? 0 and <= 1, but got {name}={value}"
    ):
        make(value)


def test_a_cosine_warmup_from_a_start_factor():
    # half way through a cosine warmup the LR is half way between the start and the peak
    assert warmup_factor(2, 4, 0.2, "cosine") == pytest.approx(0.6)
    assert warmup_factor(1, 4, 0.2, "cosine") == pytest.approx(
        0.2 + 0.8 * 0.5 * (1 - math.cos(math.pi / 4))
    )
    assert warmup_factor(0, 4, 0.2, "cosine") == pytest.approx(0.2)


@pytest.mark.parametrize("gamma", [0.0, -0.5, 1.5])
def test_a_cyclic_gamma_outside_0_1_is_refused(gamma):
    with pytest.raises(ValueError, match=r"`gamma` must be a number > 0 and <= 1, but got gamma="):
        Cyclic(step_size_up=2, mode="exp_range", gamma=gamma)
