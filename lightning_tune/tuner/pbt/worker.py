"""The PBT worker loop: claim a waiting segment, train it, plan the member's next one.

Every worker (one process, ``Tuner.run``, ``lightning-tune tune --workers N`` or ``lightning-tune
worker`` on several machines) runs the same loop on the shared study:

1. fail segments whose worker stopped sending heartbeats (Optuna's retry callback queues a copy
   with the same lineage, which resumes from the segment's last epoch checkpoint);
2. claim the first WAITING segment (Optuna's own compare-and-set from WAITING to RUNNING, so
   two workers never claim the same trial);
3. train it with a heartbeat, record the value (``study.tell``);
4. plan what follows: in async mode this member's next segment at once; in sync mode the
   whole next round once every live member has finished this one.

Planning twice (two workers finishing at the same moment in sync mode) enqueues the same
segment twice; the later copy is recorded FAIL with ``fail_reason`` "duplicate" when claimed,
before anything is trained, so a (member, round) is trained and COMPLETE once.
"""

from __future__ import annotations

import contextlib
import datetime
import time
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

from lightning_tune.tuner.factories import make_sampler
from lightning_tune.tuner.pbt.population import (
    ATTR,
    Population,
    enqueue,
    initial_plans,
    plan_member,
    plan_round,
)
from lightning_tune.tuner.pbt.segment import run_segment
from lightning_tune.tuner.pruning import MetricNotFoundError
from lightning_tune.tuner.recovery import repeating
from lightning_tune.tuner.storage import heartbeat_enabled

__all__ = ["run_pbt", "seed_population"]

#: A member whose last segment ended this long ago without a next one gets it planned by
#: any worker (its own worker died between recording the value and planning).
IDLE_AFTER = datetime.timedelta(seconds=15)


class _Run:
    """The pieces of one tuner's PBT run that every step needs."""

    def __init__(self, tuner: Any) -> None:
        self.tuner = tuner
        self.plan = tuner.pbt_plan
        self.config = self.plan.config
        self.rounds = self.plan.rounds(tuner.max_epochs)
        specs = tuner.search_space.specs
        self.sampled = tuple(tuner.search_space.distributions())
        self.context = ({n: specs[n] for n in specs}, self.plan.mutable, self.config)

    def read(self, study: optuna.Study) -> Population:
        return Population.read(study, self.config, self.rounds)

    def enqueue(self, study: optuna.Study, plans: list[Any]) -> None:
        for plan in plans:
            epochs = self.plan.epochs(plan.round, self.tuner.max_epochs)
            enqueue(study, plan, self.sampled, epochs)

    def advance(
        self, study: optuna.Study, pop: Population, members: list[int] | None, idle: Any
    ) -> None:
        """Plan the next segments that are due (for ``members``, or any idle member)."""
        seed, direction = self.tuner.seed, self.tuner.direction
        if self.config.mode == "async":
            due = pop.idle(idle)
            due = [m for m in due if members is None or m in members]
            self.enqueue(study, [plan_member(pop, m, self.context, seed, direction) for m in due])
            return
        live = [m for m in pop.members if not pop.dead(m)]
        for r in range(self.rounds - 1):
            done = [pop.done(m, r) for m in live]
            if not live or any(s is None for s in done):
                return
            if any(pop.of(m, r + 1) for m in pop.members):
                continue
            last = max(s.completed for s in done if s is not None and s.completed is not None)
            if datetime.datetime.now() - last >= idle:
                self.enqueue(study, plan_round(pop, r, self.context, seed, direction))
            return


def seed_population(tuner: Any, study: optuna.Study) -> None:
    """Enqueue round 0 unless the study has it: the members' hyperparameters are the first
    ``population`` proposals of the tuner's sampler (seeded with ``tuner.seed``), the
    configurations a sweep with the same sampler and seed would try first."""
    run = _Run(tuner)
    if run.read(study).started:
        return
    study.set_user_attr("strategy", "pbt")
    study.set_user_attr("pbt", run.config.as_dict())
    specs = {n: tuner.search_space.specs[n] for n in run.sampled}
    draws = _sampler_draws(tuner, run.config.population)
    run.enqueue(study, initial_plans(specs, run.config, tuner.seed, draws))


def _sampler_draws(tuner: Any, n: int) -> list[dict[str, Any]]:
    """The first ``n`` proposals of the tuner's sampler, asked in a scratch in-memory study
    (nothing is told back, so a model-based sampler proposes from its startup phase)."""
    sampler = make_sampler(
        tuner._sampler_source,
        tuner.sampler_kwargs,
        seed=tuner.seed,
        search_space=tuner.search_space,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        draft = optuna.create_study(sampler=sampler, direction=tuner.direction)
    return [tuner.search_space.suggest(draft.ask()) for _ in range(n)]


def _claim(study: optuna.Study, storage: Any) -> tuple[optuna.Trial, int] | None:
    study_id = storage.get_study_id_from_name(study.study_name)
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if ATTR not in waiting.user_attrs:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, waiting.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, trial_id), trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


@contextlib.contextmanager
def _heartbeat(storage: Any, trial_id: int) -> Iterator[None]:
    if not heartbeat_enabled(storage):
        yield
        return
    storage.record_heartbeat(trial_id)
    with repeating(
        lambda: storage.record_heartbeat(trial_id),
        storage.get_heartbeat_interval(),
        name=f"pbt-heartbeat-{trial_id}",
    ):
        yield


def _duplicate(study: optuna.Study, run: _Run, trial: optuna.Trial) -> str | None:
    info = trial.user_attrs[ATTR]
    for other in run.read(study).of(int(info["member"]), int(info["round"])):
        if other.number < trial.number and other.state != TrialState.FAIL:
            return (
                f"duplicate: segment {info['member']}/{info['round']} is already trial "
                f"{other.number} ({other.state.name}); nothing was trained"
            )
    return None


def _train(study: optuna.Study, run: _Run, trial: optuna.Trial) -> TrialState:
    reason = _duplicate(study, run, trial)
    if reason is not None:
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    start = time.perf_counter()
    try:
        value = run_segment(run.tuner, trial, run.plan)
    except Exception as err:
        trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:4000])
        study.tell(trial, state=TrialState.FAIL)
        if isinstance(err, MetricNotFoundError):
            raise
        return TrialState.FAIL
    trial.set_user_attr("trial_seconds", time.perf_counter() - start)
    study.tell(trial, value)
    return TrialState.COMPLETE


def _print(run: _Run, name: str, trial: optuna.Trial, state: TrialState) -> None:
    if run.tuner.quiet:
        return
    info = trial.user_attrs[ATTR]
    frozen = trial.study.get_trials(deepcopy=False)[trial.number]
    detail = (
        f"{run.tuner.monitor}={frozen.value:.4g}"
        if frozen.value is not None
        else frozen.user_attrs.get("fail_reason", "")
    )
    lineage = ""
    if info.get("donor") is not None:
        changes = ", ".join(f"{k} {c['how']}" for k, c in info["changes"].items())
        lineage = f" (from member {info['donor']}: {changes})"
    print(
        f"[{name}] member {info['member']} round {info['round']} {state.name} {detail}{lineage}",
        flush=True,
    )


def run_pbt(
    tuner: Any, *, timeout: float | None = None, poll_interval: float = 1.0, name: str = "pbt"
) -> int:
    """Run PBT segments of ``tuner``'s study in this process until the population is done.

    Other workers may work on the same study at the same time. Returns the number of segments
    this worker claimed.

    Example (trains, so not run as a doctest; ``Tuner.run`` calls it for ``strategy="pbt"``)::

        tuner = Tuner(TimmClassifier, space, strategy="pbt", pbt={"population": 4})
        run_pbt(tuner)
    """
    run = _Run(tuner)
    study = tuner.study if tuner.study is not None else tuner.create_study()
    storage = tuner.open_storage()
    heartbeat = heartbeat_enabled(storage)
    deadline = None if timeout is None else time.monotonic() + timeout
    claimed = 0
    with tuner.quiet_libraries():
        seed_population(tuner, study)
        while deadline is None or time.monotonic() < deadline:
            if heartbeat:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
            pop = run.read(study)
            if pop.complete:
                break
            run.advance(study, pop, None, IDLE_AFTER)
            claim = _claim(study, storage)
            if claim is None:
                if isinstance(storage, InMemoryStorage) and not pop.pending():
                    break  # nothing can change: no other process shares this storage
                time.sleep(poll_interval)
                continue
            trial, trial_id = claim
            claimed += 1
            with _heartbeat(storage, trial_id):
                state = _train(study, run, trial)
            _print(run, name, trial, state)
            if state == TrialState.COMPLETE:
                member = int(trial.user_attrs[ATTR]["member"])
                run.advance(study, run.read(study), [member], datetime.timedelta(0))
    return claimed
