"""Grid search from the search space: exact values per spec, jitter, exhaustion, workers."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from scripted_module import SumModule

from lightning_tune.tuner import Categorical, Fixed, Float, Int, PowerOfTwo, Tuner
from lightning_tune.tuner.grid import grid_search_space, grid_values
from lightning_tune.tuner.storage import resolve_storage
from lightning_tune.tuner.workers import run_workers

FAST = {
    "accelerator": "cpu",
    "devices": 1,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": False,
    "limit_train_batches": 1,
}
SPACE = {"x": Float(0.0, 1.0, grid_points=3), "opt": ["a", "b"], "n": Fixed(1)}


@pytest.mark.parametrize(
    ("spec", "options", "expected"),
    [
        (Categorical(["sgd", None, True, 3]), {}, ["sgd", None, True, 3]),
        (PowerOfTwo(16, 128), {}, [16, 32, 64, 128]),
        (Int(0, 10, step=5), {}, [0, 5, 10]),
        (Int(1, 4), {"grid_points": 8}, [1, 2, 3, 4]),  # all values when few
        (Int(1, 100), {"grid_points": 4}, [1, 34, 67, 100]),
        (Int(1, 1000, log=True, grid_points=4), {}, [1, 10, 100, 1000]),
        (Float(0.0, 1.0), {"grid_points": 5}, [0.0, 0.25, 0.5, 0.75, 1.0]),
        (Float(1e-4, 1e-1, log=True), {"grid_points": 4}, [1e-4, 1e-3, 1e-2, 1e-1]),
        (Float(1e-5, 1e-1, log=True, grid_points=3), {"grid_points": 9}, [1e-5, 1e-3, 1e-1]),
        (Float(0.0, 1.0, step=0.25), {}, [0.0, 0.25, 0.5, 0.75, 1.0]),
        (Float(0.0, 1.0, step=0.1, grid_points=4), {}, [0.0, 0.3, 0.7, 1.0]),
        (Fixed("test_resnet"), {}, None),
    ],
)
def test_grid_values_of_each_spec_kind(spec, options, expected):
    assert grid_values("p", spec, **options) == expected


def test_jitter_stays_in_its_cell_and_is_seeded():
    spec = Float(1e-4, 1e-1, log=True, grid_points=4)
    plain = np.log(grid_values("lr", spec))
    spacing = plain[1] - plain[0]
    first = grid_values("lr", spec, jitter=1.0, seed=7)
    assert first == grid_values("lr", spec, jitter=1.0, seed=7)  # the same in every process
    assert first != grid_values("lr", spec, jitter=1.0, seed=8)
    assert first != grid_values("wd", spec, jitter=1.0, seed=7)  # drawn per parameter
    moved = np.log(first) - plain
    assert np.all(np.abs(moved) <= spacing / 2 + 1e-12) and np.any(np.abs(moved) > 0)
    assert all(1e-4 <= v <= 1e-1 for v in first)
    small = np.log(grid_values("lr", spec, jitter=0.2, seed=7)) - plain
    assert np.all(np.abs(small) <= 0.1 * spacing + 1e-12)
    linear = grid_values("x", Float(0.0, 1.0, grid_points=3), jitter=0.5, seed=0)
    assert all(abs(v - c) <= 0.125 + 1e-12 for v, c in zip(linear, [0.0, 0.5, 1.0]))


def test_explicit_values_replace_those_of_a_spec():
    grid = grid_search_space(SPACE, values={"x": [0.1, 0.9]})
    assert grid == {"x": [0.1, 0.9], "opt": ["a", "b"]}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: Float(0.0, 1.0, grid_points=1).check("x"), ValueError,
         r"search space `x`: `grid_points` must be an int >= 2, but got grid_points=1"),
        (lambda: grid_search_space(SPACE, grid_points=1), ValueError,
         r"`grid_points` must be an int >= 2, but got grid_points=1"),
        (lambda: grid_search_space({"x": Float(0.0, 1.0)}), ValueError,
         r"search space `x`: a float under sampler='grid' needs `grid_points` \(in its spec or "
         r"in sampler_kwargs\) or `step`"),
        (lambda: grid_search_space(SPACE, jitter=1.5), ValueError,
         r"`jitter` must be a number >= 0 and <= 1, but got jitter=1.5"),
        (lambda: grid_search_space({"k": Int(1, 1000)}), ValueError,
         r"search space `k`: 1000 int values is too many for a grid"),
        (lambda: grid_search_space(SPACE, values={"z": [1]}), ValueError,
         r"sampler_kwargs `search_space` names \['z'\], which are not in the search space"),
        (lambda: grid_search_space(SPACE, values={"n": [1, 2]}), ValueError,
         r"gives values for \['n'\], which are fixed"),
    ],
)  # fmt: skip
def test_bad_grids_fail_before_any_trial(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _tuner(tmp_path, storage="memory", **kwargs):
    options = {
        "storage": storage,
        "output_dir": tmp_path,
        "trainer_kwargs": FAST,
        "max_epochs": 1,
        "keep_checkpoints": 0,
        "loggers": (),
        "pruner": "none",
        "sampler": "grid",
        "study_name": "grid",
        **kwargs,
    }
    return Tuner(SumModule, SPACE, **options)


def _configs(study, trials=None):
    trials = study.trials if trials is None else trials
    return [(t.params["x"], t.params["opt"]) for t in trials if t.state.is_finished()]


EXPECTED = {(x, o) for x in (0.0, 0.5, 1.0) for o in ("a", "b")}


def test_a_grid_smaller_than_n_trials_runs_each_configuration_once_and_stops(tmp_path, capsys):
    result = _tuner(tmp_path).run(n_trials=20, plots=False)
    assert "Grid search: grid of 6 configurations (x: 3 values, opt: 2 values)" in (
        capsys.readouterr().out
    )
    assert sorted(_configs(result.study)) == sorted(EXPECTED)
    assert len(result.study.trials) == 6
    assert result.best_params["x"] == 0.0 and result.best_params["n"] == 1  # opt is a tie
    # the same through the total-trials loop the CLI uses (a fresh study)
    again = _tuner(tmp_path, study_name="grid2", quiet=True).run(n_trials=20, total=True)
    assert sorted(_configs(again.study)) == sorted(EXPECTED)


def test_a_grid_larger_than_n_trials_warns_and_runs_n_distinct_configurations(tmp_path):
    with pytest.warns(UserWarning, match=r"the grid has 6 configurations but n_trials=4"):
        result = _tuner(tmp_path, quiet=True).run(n_trials=4, plots=False)
    configs = _configs(result.study)
    assert len(configs) == len(set(configs)) == 4 and set(configs) <= EXPECTED


def test_a_continued_grid_study_takes_the_configurations_left(tmp_path):
    _tuner(tmp_path, storage=None, quiet=True).run(n_trials=2, total=True)
    study = _tuner(tmp_path, storage=None, quiet=True).run(n_trials=6, total=True).study
    configs = _configs(study)
    assert len(configs) == 6 and set(configs) == EXPECTED


@pytest.mark.slow
def test_two_workers_share_one_grid_without_running_a_configuration_twice(tmp_path):
    study = run_workers(
        _tuner(tmp_path, storage=None, quiet=True), n_trials=20, n_workers=2, heartbeat_interval=2
    )
    trained = [t for t in study.trials if not t.user_attrs.get("surplus")]
    configs = _configs(study, trained)
    assert sorted(configs) == sorted(EXPECTED)  # all six, none trained twice, the sweep stopped
    assert all(t.state == TrialState.COMPLETE for t in trained)
    # a trial handed a configuration another worker took at the same moment stepped back
    for t in study.trials:
        if t.user_attrs.get("surplus"):
            assert t.state == TrialState.FAIL and "fit_seconds" not in t.user_attrs
            assert "already took this grid configuration" in t.user_attrs["fail_reason"]
    reopened = optuna.load_study(
        study_name="grid", storage=resolve_storage(None, tmp_path / "grid")
    )
    complete = [t for t in reopened.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and all(math.isfinite(t.value) for t in complete)


def test_a_trial_handed_a_configuration_already_taken_steps_back_without_training(tmp_path):
    """What two workers asking at the same moment can cause, made deterministic: the same grid
    configuration twice in the study's queue."""
    from lightning_tune.tuner.loop import run_worker

    tuner = _tuner(tmp_path, quiet=True)
    study = tuner.create_study()
    for _ in range(2):
        study.enqueue_trial({"x": 0.5, "opt": "b"})
    run_worker(tuner, n_trials=6)
    first, second = study.trials[:2]
    assert first.state == TrialState.COMPLETE
    assert second.state == TrialState.FAIL and second.user_attrs["surplus"] is True
    assert (
        "trial 0 already took this grid configuration (x=0.5, opt='b')"
        in (second.user_attrs["fail_reason"])
    )
    trained = [t for t in study.trials if not t.user_attrs.get("surplus")]
    assert sorted(_configs(study, trained)) == sorted(EXPECTED)  # each once, the grid complete


def test_a_grid_trial_waits_for_a_lower_running_trial_to_take_its_configuration(tmp_path):
    # Two workers given the same configuration, the lower-numbered trial not yet suggesting
    # when the higher one checks: the higher one waits and steps back (it used to train too).
    import threading
    import time

    from lightning_tune.tuner.loop import _grid_duplicate

    tuner = _tuner(tmp_path)
    study = tuner.create_study()
    for _ in range(2):
        study.enqueue_trial({"x": 0.5, "opt": "b"})
    low, high = study.ask(), study.ask()
    assert low.params == high.params == {}  # both RUNNING, nothing suggested yet
    late = threading.Timer(0.3, tuner.search_space.suggest, args=(low,))
    late.start()
    start = time.monotonic()
    reason = _grid_duplicate(tuner, study, high)
    late.join()
    assert time.monotonic() - start >= 0.25  # it waited for the lower trial
    assert reason is not None and reason.startswith(
        "surplus: trial 0 already took this grid configuration (x=0.5, opt='b')"
    )
    assert _grid_duplicate(tuner, study, low) is None  # the lower number keeps it
