from __future__ import annotations

import math

import optuna
import pytest
import pytorch_lightning as pl
from optuna.trial import TrialState
from scripted_module import ScriptedModule

from lightning_tune.tuner import MetricNotFoundError, NonFiniteMetricError, OptunaPruning


def _fit(module, trial, trainer_kwargs, max_epochs=6, **callback_kwargs):
    pruning = OptunaPruning(trial, **callback_kwargs)
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[pruning], **trainer_kwargs)
    trainer.fit(module)
    return trainer, pruning


def _complete(study, trainer_kwargs, values, max_epochs=6):
    trial = study.ask()
    _, pruning = _fit(ScriptedModule(values), trial, trainer_kwargs, max_epochs=max_epochs)
    pruning.check()
    study.tell(trial, pruning.values[-1])


def test_a_bad_trial_stops_through_should_stop_and_fit_returns(trainer_kwargs):
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    _complete(study, trainer_kwargs, [1.0, 0.8, 0.6, 0.5, 0.4, 0.3])
    trial = study.ask()
    trainer, pruning = _fit(ScriptedModule([5.0] * 6), trial, trainer_kwargs)
    # fit returned normally: we are here, the trainer finished and was stopped, not interrupted
    assert trainer.state.finished and not trainer.interrupted
    assert pruning.pruned and trainer.current_epoch == 1  # pruned at the first validation
    assert pruning.reason == "pruned at validation step 0 (epoch 0) with val_loss=5"
    with pytest.raises(optuna.TrialPruned, match="pruned at validation step 0"):
        pruning.check()
    study.tell(trial, state=TrialState.PRUNED)
    assert study.trials[1].state == TrialState.PRUNED
    assert study.trials[1].intermediate_values == {0: 5.0}


@pytest.mark.parametrize(
    ("n_startup_trials", "n_warmup_steps", "completed", "pruned_at"),
    [
        (2, 0, 1, None),  # fewer completed trials than n_startup_trials: never pruned
        (2, 0, 2, 0),  # exactly n_startup_trials: pruned at the first validation
        (1, 2, 1, 2),  # first two validations protected: pruned at step 2
        (1, 3, 1, 3),
        (1, 6, 1, None),  # warmup covers every validation
    ],
)
def test_median_pruning_respects_startup_and_warmup(
    trainer_kwargs, n_startup_trials, n_warmup_steps, completed, pruned_at
):
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps
    )
    study = optuna.create_study(pruner=pruner)
    for _ in range(completed):
        _complete(study, trainer_kwargs, [1.0] * 6)
    trainer, pruning = _fit(ScriptedModule([2.0] * 6), study.ask(), trainer_kwargs)
    if pruned_at is None:
        assert not pruning.pruned and trainer.current_epoch == 6
        assert pruning.validations == 6
    else:
        assert pruning.pruned
        assert pruning.validations == pruned_at + 1
        assert trainer.current_epoch == pruned_at + 1


@pytest.mark.parametrize(
    ("extra", "max_epochs", "last_prunable"),
    [
        ({}, 6, 4),  # one validation per epoch: steps 0-5, step 5 is the final one
        ({"val_check_interval": 0.5}, 3, 4),  # two per epoch: the mid-epoch one of the last epoch
        ({"max_steps": 12}, 10, 1),  # max_steps ends fit after 3 of 10 epochs (4 batches each)
    ],
)
def test_a_trial_is_never_pruned_at_its_final_validation(
    trainer_kwargs, extra, max_epochs, last_prunable
):
    """Worse than the median at every step, warmup up to the step under test: the last
    prunable validation prunes, the final validation (full budget used) never does."""
    kwargs = {**trainer_kwargs, **extra}
    batch_size = 2 if extra else 4  # 4 or 2 training batches per epoch
    for warmup, pruned in ((last_prunable, True), (last_prunable + 1, False)):
        pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=warmup)
        study = optuna.create_study(pruner=pruner)
        good = study.ask()
        _, done = _fit(ScriptedModule([1.0] * 12, batch_size=batch_size), good, kwargs, max_epochs)
        study.tell(good, done.values[-1])
        trial = study.ask()
        _, pruning = _fit(
            ScriptedModule([5.0] * 12, batch_size=batch_size), trial, kwargs, max_epochs
        )
        assert pruning.pruned is pruned
        assert pruning.validations == done.validations if not pruned else last_prunable + 1
        if pruned:
            with pytest.raises(optuna.TrialPruned):
                pruning.check()
        else:
            pruning.check()  # completes
            assert len(pruning.values) == last_prunable + 2


def test_step_stays_unique_with_several_validations_per_epoch(trainer_kwargs):
    study = optuna.create_study()
    trial = study.ask()
    values = [float(i) for i in range(6)]
    module = ScriptedModule(values, batch_size=2)  # 4 training batches per epoch
    _, pruning = _fit(module, trial, {**trainer_kwargs, "val_check_interval": 0.5}, max_epochs=3)
    assert pruning.validations == 6
    study.tell(trial, 0.0)
    assert study.trials[0].intermediate_values == {i: float(i) for i in range(6)}


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize(("on_nonfinite", "status"), [("prune", "pruned"), ("fail", "failed")])
def test_nonfinite_metrics_stop_the_trial_with_the_reason(
    trainer_kwargs, bad, on_nonfinite, status
):
    study = optuna.create_study()
    trainer, pruning = _fit(
        ScriptedModule([1.0, bad, 0.5]), study.ask(), trainer_kwargs, on_nonfinite=on_nonfinite
    )
    assert pruning.status == status and trainer.current_epoch == 2
    assert pruning.reason == f"val_loss={bad} at validation step 1 (epoch 1)"
    assert pruning.values == [1.0]  # the non-finite value is not reported
    expected = optuna.TrialPruned if status == "pruned" else NonFiniteMetricError
    with pytest.raises(expected, match=r"val_loss=(nan|inf) at validation step 1"):
        pruning.check()


def test_a_metric_never_logged_is_an_error_listing_the_logged_ones(trainer_kwargs):
    study = optuna.create_study()
    with pytest.raises(
        MetricNotFoundError,
        match=r"'val_acc' was not logged .* logged metrics: \['other_metric', 'val_loss'\]",
    ):
        _fit(ScriptedModule([1.0]), study.ask(), trainer_kwargs, monitor="val_acc")


def test_bad_arguments():
    trial = optuna.create_study().ask()
    with pytest.raises(
        ValueError,
        match=r"`on_nonfinite` must be one of \['prune', 'fail'\], but got on_nonfinite='skip'",
    ):
        OptunaPruning(trial, on_nonfinite="skip")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`trial` must be an optuna\.Trial"):
        OptunaPruning(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`monitor` must be a non-empty string"):
        OptunaPruning(trial, monitor="")


def test_resume_from_a_checkpoint_reports_the_same_steps(trainer_kwargs, tmp_path):
    values = [3.0, 2.0, 1.5, 1.2, 1.1, 1.0]
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    study = optuna.create_study()

    full_trial = study.ask()
    _, full = _fit(ScriptedModule(values), full_trial, trainer_kwargs)

    stopped_trial = study.ask()
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0
    )
    first = OptunaPruning(stopped_trial)
    pl.Trainer(max_epochs=3, callbacks=[first, checkpoint], **kwargs).fit(ScriptedModule(values))
    resumed = OptunaPruning(stopped_trial)
    pl.Trainer(max_epochs=6, callbacks=[resumed], **trainer_kwargs).fit(
        ScriptedModule(values), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
    )

    assert resumed.state_dict() == full.state_dict()
    study.tell(full_trial, full.values[-1])
    study.tell(stopped_trial, resumed.values[-1])
    assert study.trials[0].intermediate_values == study.trials[1].intermediate_values
    assert list(study.trials[1].intermediate_values) == list(range(6))


def test_a_state_without_keys_loads_as_a_fresh_callback():
    trial = optuna.create_study().ask()
    fresh = OptunaPruning(trial, monitor="val_loss")
    loaded = OptunaPruning(trial, monitor="val_loss")
    loaded.load_state_dict({"validations": 3, "values": [1.0], "status": "pruned"})
    loaded.load_state_dict({})  # a checkpoint written before these keys existed
    assert loaded.state_dict() == fresh.state_dict()
    assert loaded.state_dict() == {
        "validations": 0,
        "values": [],
        "status": "running",
        "reason": None,
    }
