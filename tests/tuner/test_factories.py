"""Every Optuna sampler and pruner by name: from the API, from YAML, with Optuna's argument names."""

from __future__ import annotations

import warnings

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from scripted_module import ScriptedModule

from lightning_tune.tuner import PRUNERS, SAMPLERS, Float, Tuner, load_config, tuner_from_config
from lightning_tune.tuner.factories import accepted_kwargs, make_pruner, make_sampler

FAST = {
    "accelerator": "cpu",
    "devices": 1,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": False,
    "limit_train_batches": 1,
}
SAMPLER_CASES = {
    "tpe": ({"n_startup_trials": 2}, optuna.samplers.TPESampler),
    "random": ({}, optuna.samplers.RandomSampler),
    "qmc": ({"qmc_type": "halton"}, optuna.samplers.QMCSampler),
    "gp": ({"n_startup_trials": 2}, optuna.samplers.GPSampler),
    "cmaes": ({"sigma0": 0.3, "n_startup_trials": 2}, optuna.samplers.CmaEsSampler),
    "nsga2": ({"population_size": 4}, optuna.samplers.NSGAIISampler),
    "nsga3": ({"population_size": 4}, optuna.samplers.NSGAIIISampler),
    "grid": ({"grid_points": 3}, optuna.samplers.GridSampler),
    "bruteforce": ({}, optuna.samplers.BruteForceSampler),
}
PRUNER_CASES = {
    "median": ({"n_startup_trials": 1}, optuna.pruners.MedianPruner),
    "percentile": ({"percentile": 25.0}, optuna.pruners.PercentilePruner),
    "hyperband": ({"reduction_factor": 2}, optuna.pruners.HyperbandPruner),
    "successive_halving": ({"min_resource": 1}, optuna.pruners.SuccessiveHalvingPruner),
    "patient": ({"wrapped_pruner": "median", "patience": 1}, optuna.pruners.PatientPruner),
    "threshold": ({"upper": 2.0}, optuna.pruners.ThresholdPruner),
    "wilcoxon": ({"p_threshold": 0.05}, optuna.pruners.WilcoxonPruner),
    "none": ({}, optuna.pruners.NopPruner),
}


@pytest.fixture(autouse=True)
def _quiet_experimental():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def test_every_name_is_covered_here():
    assert set(SAMPLER_CASES) == set(SAMPLERS)
    assert set(PRUNER_CASES) == set(PRUNERS)


def _tuner(tmp_path, module=ScriptedModule, **kwargs):
    options = {
        "storage": "memory",
        "output_dir": tmp_path,
        "trainer_kwargs": FAST,
        "max_epochs": 3,
        "quiet": True,
        "keep_checkpoints": 0,
        "loggers": (),
        **kwargs,
    }
    space = {"batch_size": [2, 4], "x": Float(0.0, 1.0, step=0.5)}
    return Tuner(module, space, **options)


def _scripted(params):
    return ScriptedModule(values=[1.0 + params["x"]], batch_size=params["batch_size"])


@pytest.mark.parametrize("name", sorted(SAMPLER_CASES))
def test_each_sampler_name_runs_a_sweep_from_the_api(tmp_path, name):
    kwargs, cls = SAMPLER_CASES[name]
    tuner = _tuner(tmp_path, module=_scripted, sampler=name, sampler_kwargs=kwargs, pruner="none")
    study = tuner.optimize(n_trials=3)
    assert isinstance(study.sampler, cls)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    if name in ("grid", "bruteforce"):  # a grid never repeats a configuration
        configs = [tuple(sorted(t.params.items())) for t in study.trials]
        assert len(set(configs)) == 3


@pytest.mark.parametrize("name", sorted(PRUNER_CASES))
def test_each_pruner_name_builds_its_optuna_class_from_the_api(tmp_path, name):
    kwargs, cls = PRUNER_CASES[name]
    tuner = _tuner(tmp_path, module=_scripted, sampler="random", pruner=name, pruner_kwargs=kwargs)
    assert isinstance(tuner.pruner, cls)
    study = tuner.optimize(n_trials=2)
    assert len(study.trials) == 2 and all(t.state.is_finished() for t in study.trials)


def test_threshold_pruner_kwargs_reach_the_sweep(tmp_path):
    tuner = _tuner(
        tmp_path,
        module=lambda p: ScriptedModule(
            values=[5.0 + 0 * p["x"], 1.0, 1.0], batch_size=p["batch_size"]
        ),
        pruner="threshold",
        pruner_kwargs={"upper": 2.0},
    )
    study = tuner.optimize(n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["validations"] == 1  # stopped at the first validation (5.0 > 2.0)


def test_patient_wraps_a_named_pruner_with_its_kwargs():
    pruner = make_pruner(
        "patient",
        {"wrapped_pruner": {"name": "threshold", "kwargs": {"upper": 2.0}}, "patience": 1},
    )
    study = optuna.create_study(pruner=pruner)
    trial = study.ask()
    decisions = []
    for step, value in enumerate([5.0, 4.0, 4.5, 4.6]):  # above the threshold from the start
        trial.report(value, step)
        decisions.append(trial.should_prune())
    # the threshold alone prunes at step 0; with patience 1 only once the value stops improving
    assert decisions == [False, False, False, True]


def test_each_name_from_yaml(tmp_path):
    cfg = {
        "model": {"class": "TimmClassifier", "kwargs": {"model_name": "test_resnet"}},
        "search_space": {
            "lr": {"type": "float", "low": 0.01, "high": 0.1, "step": 0.01, "grid_points": 3}
        },
        "storage": "memory",
        "output_dir": str(tmp_path),
    }
    for name, (kwargs, cls) in SAMPLER_CASES.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**cfg, "sampler": {"name": name, "kwargs": kwargs}}))
        tuner = tuner_from_config(load_config(path), study_name=f"s-{name}")
        assert isinstance(tuner.create_study().sampler, cls), name
    for name, (kwargs, cls) in PRUNER_CASES.items():
        path = tmp_path / f"p-{name}.yaml"
        path.write_text(yaml.safe_dump({**cfg, "pruner": {"name": name, "kwargs": kwargs}}))
        assert isinstance(tuner_from_config(load_config(path)).pruner, cls), name


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: make_sampler("simulated_annealing"),
            ValueError,
            r"`sampler` must be one of \['bruteforce', 'cmaes', 'gp', 'grid', 'nsga2', 'nsga3', "
            r"'qmc', 'random', 'tpe'\]",
        ),
        (
            lambda: make_pruner("patience"),
            ValueError,
            r"`pruner` must be one of \['hyperband', 'median', 'none', 'patient', 'percentile', "
            r"'successive_halving', 'threshold', 'wilcoxon'\]",
        ),
        (
            lambda: make_sampler("nsga2", {"population": 10}),
            TypeError,
            r"sampler 'nsga2': bad `sampler_kwargs` \['population'\]: NSGAIISampler accepts "
            r"\[.*'population_size'.*\]",
        ),
        (
            lambda: make_pruner("percentile", {}),
            TypeError,
            r"pruner 'percentile': `pruner_kwargs` must give \['percentile'\]",
        ),
        (
            lambda: make_pruner("patient", {"wrapped_pruner": "median"}),
            TypeError,
            r"pruner 'patient': `pruner_kwargs` must give \['patience'\]",
        ),
        (
            lambda: make_pruner("patient", {"wrapped_pruner": "mediann", "patience": 2}),
            ValueError,
            r"`pruner` must be one of .* but got pruner='mediann'",
        ),
        (
            lambda: make_pruner("percentile", {"percentile": 150}),
            ValueError,
            r"pruner 'percentile': bad `pruner_kwargs` \{'percentile': 150\}: .*percentile",
        ),
        (
            lambda: make_pruner("none", {"x": 1}),
            TypeError,
            r"pruner 'none': bad `pruner_kwargs` \['x'\]: NopPruner accepts no arguments",
        ),
        (
            lambda: make_sampler("cmaes", {"independent_sampler": "grid"}),
            ValueError,
            r"`independent_sampler` cannot be 'grid'",
        ),
        (
            lambda: make_sampler("bruteforce", search_space={"x": Float(0.0, 1.0)}),
            ValueError,
            r"sampler 'bruteforce' tries every value: search space `x` is a float without `step`",
        ),
        (
            lambda: make_sampler("grid", {"grid_points": 3}),
            ValueError,
            r"sampler 'grid' needs a search space of specs",
        ),
    ],
)
def test_bad_names_and_kwargs_list_what_is_accepted(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_accepted_kwargs_follow_the_installed_optuna_signature():
    assert "sigma0" in accepted_kwargs(optuna.samplers.CmaEsSampler)
    assert accepted_kwargs(optuna.pruners.ThresholdPruner) == [
        "interval_steps",
        "lower",
        "n_warmup_steps",
        "upper",
    ]


def test_independent_sampler_by_name_is_seeded():
    first = make_sampler("cmaes", {"independent_sampler": "random"}, seed=3)
    second = make_sampler("cmaes", {"independent_sampler": {"name": "random"}}, seed=3)
    values = []
    for sampler in (first, second):
        study = optuna.create_study(sampler=sampler)
        # categorical parameters are always sampled by the independent sampler
        study.optimize(lambda t: float(t.suggest_categorical("c", list(range(100)))), n_trials=3)
        values.append([t.params["c"] for t in study.trials])
    assert values[0] == values[1]
