"""The population as the Optuna study records it: one trial per member segment.

A segment is a trial with the user attribute ``pbt``: ``member``, ``round``, ``start`` (the
checkpoint it continues from, None for round 0), ``donor`` / ``donor_trial`` (whose checkpoint
and hyperparameters it took when it was exploited), ``changes`` (what explore did) and
``epochs``. Its params are the segment's hyperparameters, its intermediate values the monitored
metric per validation, its value the metric at the end of the segment, and its ``checkpoint``
user attribute the checkpoint written there. Work waits in the study as WAITING trials
(``enqueue_trial``), so the population, its lineage and what is left to do are all in the
storage, for every worker and for the report.
"""

from __future__ import annotations

import datetime
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightning_tune.tuner.pbt.explore import explore, ranked, resample, split_quantiles
from lightning_tune.tuner.pbt.options import PBTConfig
from lightning_tune.tuner.report import trial_params

__all__ = ["ATTR", "Population", "Segment", "enqueue", "initial_plans", "plan_member", "plan_round"]

#: The user attribute that marks a trial as a PBT segment.
ATTR = "pbt"
_PENDING = (TrialState.WAITING, TrialState.RUNNING)


@dataclass(frozen=True)
class Segment:
    """One member segment, read from its trial."""

    number: int
    member: int
    round: int
    state: TrialState
    value: float | None
    params: dict[str, Any]
    info: dict[str, Any]
    checkpoint: str | None
    completed: datetime.datetime | None

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> Segment:
        """The segment a PBT trial holds."""
        info = dict(trial.user_attrs[ATTR])
        return cls(
            number=trial.number,
            member=int(info["member"]),
            round=int(info["round"]),
            state=trial.state,
            value=trial.value,
            params=trial_params(trial),
            info=info,
            checkpoint=trial.user_attrs.get("checkpoint"),
            completed=trial.datetime_complete,
        )


@dataclass(frozen=True)
class Plan:
    """What a member's next segment runs with."""

    member: int
    round: int
    params: dict[str, Any]
    start: str | None
    donor: int | None = None
    donor_trial: int | None = None
    changes: dict[str, Any] | None = None


class Population:
    """A snapshot of the population: which segments are done, pending or failed.

    Example:
        >>> study = optuna.create_study()
        >>> pop = Population.read(study, PBTConfig(population=2), rounds=3)
        >>> pop.started, pop.complete
        (False, False)
    """

    def __init__(self, segments: Sequence[Segment], config: PBTConfig, rounds: int) -> None:
        self.segments = list(segments)
        self.config = config
        self.rounds = rounds
        self.members = range(config.population)

    @classmethod
    def read(cls, study: optuna.Study, config: PBTConfig, rounds: int) -> Population:
        """The population recorded in ``study``."""
        trials = study.get_trials(deepcopy=False)
        return cls([Segment.from_trial(t) for t in trials if ATTR in t.user_attrs], config, rounds)

    @property
    def started(self) -> bool:
        """Whether any segment was ever enqueued."""
        return bool(self.segments)

    def of(self, member: int, round: int) -> list[Segment]:
        """Every trial of segment (member, round), in trial order."""
        return [s for s in self.segments if s.member == member and s.round == round]

    def done(self, member: int, round: int) -> Segment | None:
        """The COMPLETE trial of the segment, if any."""
        return next((s for s in self.of(member, round) if s.state == TrialState.COMPLETE), None)

    def exists(self, member: int, round: int) -> bool:
        """Whether the segment is done or waiting/running."""
        return any(
            s.state == TrialState.COMPLETE or s.state in _PENDING for s in self.of(member, round)
        )

    def latest(self, member: int) -> Segment | None:
        """The member's last COMPLETE segment."""
        done = [s for s in self.segments if s.member == member and s.state == TrialState.COMPLETE]
        return max(done, key=lambda s: s.round) if done else None

    def next_round(self, member: int) -> int:
        """The round the member runs next (``rounds`` once finished)."""
        latest = self.latest(member)
        return 0 if latest is None else latest.round + 1

    def dead(self, member: int) -> bool:
        """Its next segment failed and nothing retries it."""
        r = self.next_round(member)
        return r < self.rounds and not self.exists(member, r) and bool(self.of(member, r))

    def finished(self, member: int) -> bool:
        """Finished all rounds, or dead."""
        return self.next_round(member) >= self.rounds or self.dead(member)

    @property
    def complete(self) -> bool:
        """Every member finished (or died)."""
        return self.started and all(self.finished(m) for m in self.members)

    def pending(self) -> list[Segment]:
        """Segments waiting or running."""
        return [s for s in self.segments if s.state in _PENDING]

    def idle(self, older_than: datetime.timedelta) -> list[int]:
        """Members whose last segment finished over ``older_than`` ago and whose next one was
        never enqueued (a worker died in between): they need a plan."""
        now = datetime.datetime.now()
        out = []
        for m in self.members:
            latest = self.latest(m)
            r = self.next_round(m)
            if latest is None or r >= self.rounds or self.of(m, r):
                continue
            if latest.completed is None or now - latest.completed > older_than:
                out.append(m)
        return out


def _rng(seed: int, *parts: int) -> random.Random:
    return random.Random("/".join(str(p) for p in (seed, *parts)))


def initial_plans(
    specs: dict[str, Any], config: PBTConfig, seed: int, draws: list[dict[str, Any]] | None = None
) -> list[Plan]:
    """Round 0: every member's hyperparameters, from ``draws`` (one mapping per member, e.g.
    the tuner's sampler's first proposals) or drawn at random from the space (seeded)."""
    if draws is not None:
        return [Plan(m, 0, {n: draws[m][n] for n in specs}, None) for m in range(config.population)]
    rng = _rng(seed, "init")
    return [
        Plan(m, 0, {n: resample(spec, rng) for n, spec in specs.items()}, None)
        for m in range(config.population)
    ]


def _exploit(
    member: int, donor: Segment, round: int, context: tuple[Any, ...], rng: random.Random
) -> Plan:
    specs, mutable, config = context
    params, changes = explore(specs, donor.params, mutable, rng, config)
    return Plan(member, round, params, donor.checkpoint, donor.member, donor.number, changes)


def plan_round(
    pop: Population, round: int, context: tuple[Any, ...], seed: int, direction: str
) -> list[Plan]:
    """Sync mode: every live member's segment ``round + 1`` from the results of ``round``."""
    done = {m: pop.done(m, round) for m in pop.members}
    done = {m: s for m, s in done.items() if s is not None}
    order = ranked({m: _score(s) for m, s in done.items()}, direction)
    top, bottom = split_quantiles(order, pop.config)
    plans = []
    for m in order:
        rng = _rng(seed, m, round + 1)
        if m in bottom:
            plans.append(_exploit(m, done[rng.choice(top)], round + 1, context, rng))
        else:
            plans.append(Plan(m, round + 1, done[m].params, done[m].checkpoint))
    return sorted(plans, key=lambda p: p.member)


def plan_member(
    pop: Population, member: int, context: tuple[Any, ...], seed: int, direction: str
) -> Plan:
    """Async mode: the member's next segment against the latest results of every member."""
    latest = {m: pop.latest(m) for m in pop.members if not pop.dead(m)}
    latest = {m: s for m, s in latest.items() if s is not None}
    own = latest[member]
    round = own.round + 1
    order = ranked({m: _score(s) for m, s in latest.items()}, direction)
    top, bottom = split_quantiles(order, pop.config)
    rng = _rng(seed, member, round)
    if member in bottom and [m for m in top if m != member]:
        chosen = rng.choice([m for m in top if m != member])
        # The donor's segment of the member's own round: a donor that is already a round ahead
        # has a checkpoint past this segment's end (nothing would be left to train).
        donor = pop.done(chosen, own.round) or latest[chosen]
        return _exploit(member, donor, round, context, rng)
    return Plan(member, round, own.params, own.checkpoint)


def _score(segment: Segment) -> float:
    return math.nan if segment.value is None else float(segment.value)


def enqueue(
    study: optuna.Study, plan: Plan, sampled: Sequence[str], epochs: tuple[int, int]
) -> None:
    """Put the planned segment in the study's queue (WAITING), with its lineage."""
    info = {
        "member": plan.member,
        "round": plan.round,
        "start": plan.start,
        "donor": plan.donor,
        "donor_trial": plan.donor_trial,
        "changes": plan.changes or {},
        "epochs": list(epochs),
    }
    params = {n: v for n, v in plan.params.items() if n in sampled}
    study.enqueue_trial(params, user_attrs={ATTR: info, "params": _json_safe(plan.params)})


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, (type(None), bool, int, float, str)) else repr(v)
        for k, v in params.items()
    }
