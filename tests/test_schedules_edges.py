"""Pure schedules at their edges: validation limits, phase and cycle boundaries, past the end."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler

from lightning_tune.schedules import (
    CosineRestarts,
    Cyclic,
    Exponential,
    MultiStep,
    OneCycle,
    Polynomial,
    schedule_factor,
)


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("make", "step", "total", "expected"),
    [
        (lambda: Exponential(gamma=1.0), 100, None, 1.0),  # gamma=1: a constant LR
        (lambda: CosineRestarts(period=2, decay=1.0), 2, None, 1.0),  # every restart at the peak
        (lambda: OneCycle(div_factor=1.0), 0, 10, 1.0),  # starts at the peak
        (lambda: OneCycle(div_factor=1.0, final_div_factor=1.0), 9, 10, 1.0),  # ends there
        (lambda: OneCycle(div_factor=4.0, final_div_factor=1.0), 9, 10, 0.25),
        (lambda: OneCycle(pct_start=0.99), 0, 100, 1 / 25),
        (lambda: OneCycle(pct_start=0.49, three_phase=True), 0, 100, 1 / 25),
        (lambda: MultiStep(milestones=(1,), gamma=0.5), 1, None, 0.5),  # a drop after step 1
        (lambda: Cyclic(step_size_up=1, step_size_down=1, base_factor=0.5), 2, None, 0.5),
    ],
    ids=[
        "exp-gamma-1",
        "restarts-decay-1",
        "one-cycle-div-1",
        "one-cycle-both-div-1",
        "one-cycle-final-div-1",
        "pct-just-below-1",
        "three-phase-pct-just-below-half",
        "multistep-milestone-1",
        "cyclic-step-sizes-1",
    ],
)
def test_the_inclusive_limits_are_accepted(make, step, total, expected):
    assert make()(step, total) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: CosineRestarts(period=2, decay=0.0), r"`decay` must be a number > 0 and <= 1"),
        (lambda: CosineRestarts(period=2, decay=1.5), r"`decay` must be a number > 0 and <= 1"),
        (lambda: OneCycle(pct_start=0.0), r"`pct_start` must be in \(0, 1.0\)"),
        (lambda: OneCycle(pct_start=1.0), r"`pct_start` must be in \(0, 1.0\)"),
        (lambda: OneCycle(pct_start=1.5), r"`pct_start` must be in \(0, 1.0\)"),
        (
            lambda: OneCycle(pct_start=0.5, three_phase=True),
            r"`pct_start` must be in \(0, 0.5\) with three_phase=True",
        ),
        (lambda: OneCycle(div_factor=0.99), "`div_factor` must be a number >= 1"),
        (lambda: OneCycle(final_div_factor=0.99), "`final_div_factor` must be a number >= 1"),
        (lambda: Exponential(gamma=0.0), r"`gamma` must be a number > 0 and <= 1"),
    ],
    ids=[
        "decay-0",
        "decay-above-1",
        "pct-0",
        "pct-1",
        "pct-above-1",
        "three-phase-pct-half",
        "div-below-1",
        "final-div-below-1",
        "gamma-0",
    ],
)
def test_the_exclusive_limits_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------------------- closed forms
def test_polynomial_decays_to_its_end_factor():
    poly = Polynomial(power=2.0, end_factor=0.1)
    values = [poly(t, 10) for t in (0, 5, 10, 20)]
    assert values == pytest.approx([1.0, 0.1 + 0.9 * 0.25, 0.1, 0.1], rel=1e-15)


@pytest.mark.parametrize(
    "schedule",
    [Cyclic(step_size_up=2, base_factor=0.5), OneCycle(pct_start=0.25, div_factor=10.0)],
    ids=["cyclic", "one-cycle"],
)
@pytest.mark.parametrize("warmup", [0, 3])
def test_the_main_schedule_takes_over_at_the_last_warmup_step(schedule, warmup):
    # cyclic and one-cycle do not start at the peak: the step `warmup` is theirs, not 1.0
    total = 12
    curve = [schedule_factor(t, schedule, total, warmup_steps=warmup) for t in range(total)]
    assert curve[warmup:] == [schedule(t, total - warmup) for t in range(total - warmup)]
    assert curve[warmup] < 1.0
    assert curve[:warmup] == [t / warmup for t in range(warmup)]


# ------------------------------------------------------------------ cosine restarts cycles
def _restart_steps(period: int, mult: float, cycles: int) -> list[float]:
    starts, length, start = [], float(period), 0.0
    for _ in range(cycles):
        start += length
        length *= mult
        starts.append(start)
    return starts


@pytest.mark.parametrize(("period", "mult"), [(1, 2), (2, 2.0), (3, 3), (4, 1.5), (5, 4)])
def test_cosine_restarts_finds_the_cycle_on_both_sides_of_every_restart(period, mult):
    # a float step a hair below a restart makes the logarithm round up to the next cycle
    restarts = CosineRestarts(period=period, period_mult=mult, decay=0.5)
    for i, start in enumerate(_restart_steps(period, mult, 10), start=1):
        before = math.nextafter(start, 0.0)
        assert restarts.cycle(before)[0] == i - 1, (i, before)
        assert restarts.cycle(start) == (i, 0.0, float(period * mult**i))
        assert restarts(before) == pytest.approx(0.0, abs=1e-12)  # the end of cycle i - 1
        assert restarts(start) == 0.5**i  # the next cycle starts at its peak


# --------------------------------------------------------------------------------- one-cycle
def _torch_one_cycle(total: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=total, **kwargs)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_equals_torch_exactly_when_phases_end_on_a_step(anneal, three_phase):
    # pct_start * total = 4: the phases end exactly on steps 3 and 6, values bit for bit
    kwargs = {"pct_start": 0.25, "div_factor": 25.0, "final_div_factor": 10.0}
    ours = OneCycle(anneal=anneal, three_phase=three_phase, **kwargs)
    theirs = _torch_one_cycle(16, anneal_strategy=anneal, three_phase=three_phase, **kwargs)
    assert [ours(t, 16) for t in range(16)] == theirs
    assert ours(3, 16) == pytest.approx(1.0)
    if three_phase:
        assert ours(6, 16) == pytest.approx(1 / 25)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_holds_its_last_value_past_the_end(anneal, three_phase):
    # e.g. LRSchedule(total_steps=...) shorter than the Trainer's run: no negative LR, no rise
    one = OneCycle(pct_start=0.25, anneal=anneal, three_phase=three_phase)
    last = one(9, 10)
    assert last == pytest.approx(1 / 25 / 1e4)
    assert [one(t, 10) for t in range(10, 30)] == [last] * 20
    momentum = one.momentum(9, 10, 0.85, 0.95)
    assert [one.momentum(t, 10, 0.85, 0.95) for t in range(10, 30)] == [momentum] * 20


@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_whose_ramp_has_no_length_starts_at_the_peak(three_phase):
    # pct_start * total == 1: the ramp ends at step 0 (torch divides by zero there)
    one = OneCycle(pct_start=0.1, three_phase=three_phase)
    assert one(0, 10) == 1.0
    assert one.momentum(0, 10, 0.85, 0.95) == 0.85
    assert one(9, 10) == pytest.approx(1 / 25 / 1e4)
    values = [one(t, 10) for t in range(10)]
    assert values == sorted(values, reverse=True)
