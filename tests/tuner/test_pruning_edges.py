"""OptunaPruning and ``final_validation`` at the edges of a run's budget, in both Lightning packages.

Covers: a zero ``max_steps`` budget (already used up), ``max_steps`` with no epoch limit
(``max_epochs=None`` or ``-1``: only ``max_steps`` ends the budget, earlier validations stay
prunable), the epoch budgets ``None``/``-1`` (unlimited), ``0``, ``1``, ... at every validation of
a real fit (mid-epoch and last batch), and multi-objective studies (nothing reported, no pruning).
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from scripted_module import SCRIPTED

import lightning_tune._lightning as dual
from lightning_tune.tuner import OptunaPruning
from lightning_tune.tuner.pruning import final_validation

# The Lightning namespace under test, set per test by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")


def _module(values: list[float]) -> Any:
    """The scripted module of the package under test: 4 training batches per epoch."""
    return SCRIPTED[pl.__name__](values, batch_size=2)


@pytest.mark.parametrize(
    ("max_steps", "max_epochs", "final"),
    [
        (0, None, True),  # a zero-step budget is used up before the first step
        (0, 1, True),  # whatever the epoch budget
        (1, None, False),
        (1, 1, False),
    ],
)
def test_a_zero_step_budget_is_used_up_before_training(
    trainer_kwargs, max_steps, max_epochs, final
):
    trainer = pl.Trainer(max_steps=max_steps, max_epochs=max_epochs, **trainer_kwargs)
    assert trainer.global_step == 0
    assert final_validation(trainer) is final


@pytest.mark.parametrize("max_epochs", [None, -1])  # no epoch limit either way
@pytest.mark.parametrize(
    ("max_steps", "validations", "pruned"),
    [
        (4, 1, False),  # the end of epoch 0 is step 4 = max_steps: final, never pruned
        (8, 1, True),  # step 4 of 8: an ordinary validation, pruned at once
    ],
)
def test_without_an_epoch_limit_only_max_steps_makes_a_validation_final(
    trainer_kwargs, max_epochs, max_steps, validations, pruned
):
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    trial = study.ask()
    pruning = OptunaPruning(trial)
    trainer = pl.Trainer(
        max_steps=max_steps, max_epochs=max_epochs, callbacks=[pruning], **trainer_kwargs
    )
    trainer.fit(_module([2.0]))  # above the threshold at every validation
    assert trainer.max_epochs == -1
    assert pruning.validations == validations and pruning.pruned is pruned
    assert study.trials[0].intermediate_values == {0: 2.0}
    if pruned:
        assert trainer.global_step == 4
        with pytest.raises(optuna.TrialPruned, match=r"pruned at validation step 0 \(epoch 0\)"):
            pruning.check()
    else:
        pruning.check()  # the trial used its whole budget: it completes


class EpochBudgets(dual.Callback):
    """At each validation of fit, ``final_validation`` under each epoch budget in turn.

    The budget is set on the running trainer's fit loop (``trainer.fit_loop.max_epochs``, the
    attribute ``trainer.max_epochs`` reads) for the call only and restored at once, so the run
    itself keeps its own budget.
    """

    BUDGETS = (None, -1, 0, 1, 2, 3)

    def __init__(self) -> None:
        self.final: dict[int, set[int | None]] = {}  # global step -> budgets for which it's final

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        own = trainer.fit_loop.max_epochs
        final = set()
        try:
            for budget in self.BUDGETS:
                trainer.fit_loop.max_epochs = budget
                assert trainer.max_epochs == budget
                if final_validation(trainer):
                    final.add(budget)
        finally:
            trainer.fit_loop.max_epochs = own
        self.final[trainer.global_step] = final


def test_each_epoch_budget_ends_at_the_last_batch_of_its_last_epoch(trainer_kwargs):
    """Two epochs of 4 batches, validating every 2 batches: a budget of ``n`` epochs is used up
    at the last batch of epoch ``n - 1`` (and of every later one); ``0`` is a budget (used up at
    any last batch), ``None`` and ``-1`` are no limit; a mid-epoch validation is never final."""
    probe = EpochBudgets()
    trainer = pl.Trainer(max_epochs=2, val_check_interval=0.5, callbacks=[probe], **trainer_kwargs)
    trainer.fit(_module([1.0]))
    assert trainer.max_epochs == 2 and trainer.global_step == 8  # the run kept its own budget
    assert probe.final == {
        2: set(),  # mid epoch 0
        4: {0, 1},  # last batch of epoch 0
        6: set(),  # mid epoch 1
        8: {0, 1, 2},  # last batch of epoch 1
    }


@pytest.mark.parametrize("directions", [2, 3])
def test_a_multi_objective_trial_reports_nothing_and_is_never_pruned(trainer_kwargs, directions):
    """Optuna prunes single-objective studies only (``Trial.report`` raises otherwise): the
    values are kept, nothing is reported, and a pruner that would prune every step never does."""
    study = optuna.create_study(
        directions=["minimize"] * directions, pruner=optuna.pruners.ThresholdPruner(upper=1.0)
    )
    trial = study.ask()
    pruning = OptunaPruning(trial)
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruning], **trainer_kwargs)
    trainer.fit(_module([3.0, 2.0, 1.5]))
    assert pruning.values == [3.0, 2.0, 1.5] and pruning.status == "running"
    assert trainer.current_epoch == 3
    pruning.check()
    study.tell(trial, [1.5] * directions)
    assert study.trials[0].intermediate_values == {}
