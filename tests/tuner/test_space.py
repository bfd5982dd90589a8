from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from lightning_tune.tuner import Categorical, Fixed, Float, Int, PowerOfTwo, SearchSpace, parse_spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "float", "low": 0.0, "high": 0.3}, FloatDistribution(0.0, 0.3)),
        (
            {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
            FloatDistribution(1e-5, 1e-1, log=True),
        ),
        (
            {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
            FloatDistribution(0.0, 0.3, step=0.1),
        ),
        ({"type": "int", "low": 0, "high": 10}, IntDistribution(0, 10)),
        ({"type": "int", "low": 1, "high": 64, "log": True}, IntDistribution(1, 64, log=True)),
        ({"type": "int", "low": 0, "high": 8, "step": 2}, IntDistribution(0, 8, step=2)),
        (
            {"type": "categorical", "choices": ["adamw", "sgd"]},
            CategoricalDistribution(("adamw", "sgd")),
        ),
        (["test_resnet", "test_vit"], CategoricalDistribution(("test_resnet", "test_vit"))),
        ({"type": "pow2", "low": 16, "high": 128}, CategoricalDistribution((16, 32, 64, 128))),
        (Float(0.1, 0.2), FloatDistribution(0.1, 0.2)),
        (PowerOfTwo(8, 8 * 4), CategoricalDistribution((8, 16, 32))),
    ],
)
def test_specs_map_to_optuna_distributions(spec, expected):
    assert parse_spec("p", spec).distribution("p") == expected
    space = SearchSpace({"p": spec, "fixed": 3})
    assert space.distributions() == {"p": expected}


def test_suggest_uses_the_distributions_and_keeps_fixed_values():
    space = SearchSpace(
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "warmup": Int(0, 4),
            "optimizer": Categorical(["adamw", "sgd"]),
            "batch_size": PowerOfTwo(16, 64),
            "model_name": Fixed("test_resnet"),
            "image_size": 16,
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        params = space.suggest(trial)
        assert 1e-4 <= params["lr"] <= 1e-1
        assert params["warmup"] in range(5)
        assert params["optimizer"] in ("adamw", "sgd")
        assert params["batch_size"] in (16, 32, 64)
        assert params["model_name"] == "test_resnet" and params["image_size"] == 16
        assert set(trial.distributions) == {"lr", "warmup", "optimizer", "batch_size"}
        assert trial.distributions == space.distributions()
        study.tell(trial, 0.0)


def test_suggest_function_is_the_escape_hatch_for_conditional_spaces():
    def suggest(trial):
        optimizer = trial.suggest_categorical("optimizer", ["adamw", "sgd"])
        params = {"optimizer": optimizer}
        if optimizer == "sgd":
            params["momentum"] = trial.suggest_float("momentum", 0.5, 0.99)
        return params

    space = SearchSpace(suggest)
    assert space.distributions() == {}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        params = space.suggest(study.ask())
        seen.add(params["optimizer"])
        assert ("momentum" in params) == (params["optimizer"] == "sgd")
    assert seen == {"adamw", "sgd"}


def test_suggest_function_must_return_a_dict():
    space = SearchSpace(lambda trial: [1, 2])
    with pytest.raises(TypeError, match="must return a dict of hyperparameters, but returned list"):
        space.suggest(optuna.create_study().ask())


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (
            {"type": "float", "low": 0.1, "high": 0.1},
            ValueError,
            r"low < high, but got low=0.1, high=0.1",
        ),
        ({"type": "float", "low": 0.5, "high": 0.1}, ValueError, r"low < high, but got low=0.5"),
        ({"type": "int", "low": 5, "high": 1}, ValueError, r"low < high"),
        (
            {"type": "float", "low": 0.0, "high": 1.0, "log": True},
            ValueError,
            r"log range must have low > 0, but got low=0.0",
        ),
        ({"type": "int", "low": 0, "high": 64, "log": True}, ValueError, r"low > 0"),
        ({"type": "float", "low": -1.0, "high": 1.0, "log": True}, ValueError, r"low > 0"),
        ({"type": "float", "low": 0.0, "high": 1.0, "step": 0}, ValueError, r"`step` must be > 0"),
        (
            {"type": "int", "low": 1, "high": 64, "log": True, "step": 2},
            ValueError,
            r"needs step=1",
        ),
        ({"type": "int", "low": 0.5, "high": 3}, TypeError, r"`low` must be an int"),
        ({"type": "float", "low": "a", "high": 3.0}, TypeError, r"`low` must be a number"),
        ({"type": "pow2", "low": 12, "high": 64}, ValueError, r"power of two >= 1, but got 12"),
        ({"type": "pow2", "low": 64, "high": 16}, ValueError, r"low < high"),
        ({"type": "categorical", "choices": []}, ValueError, r"`choices` must not be empty"),
        ({"type": "categorical", "choices": [1, 1]}, ValueError, r"duplicates"),
        ({"type": "categorical", "choices": [[1]]}, TypeError, r"None, bool, int, float or str"),
        (
            {"type": "uniform", "low": 0, "high": 1},
            ValueError,
            r"`type` must be one of \['categorical', 'fixed', 'float', 'int', 'pow2'\], but got type='uniform'",
        ),
        (
            {"type": "float", "low": 0, "high": 1, "lgo": True},
            ValueError,
            r"unknown keys \['lgo'\] for type 'float'",
        ),
        ({"type": "float", "low": 0.0}, TypeError, r"search space `p`: .*high"),
    ],
)
def test_invalid_specs_fail_when_the_space_is_built(spec, error, match):
    with pytest.raises(error, match=match):
        SearchSpace({"p": spec})


def test_bad_space_types():
    with pytest.raises(ValueError, match="must not be empty"):
        SearchSpace({})
    with pytest.raises(TypeError, match="mapping of parameter specs or a function"):
        SearchSpace(3)  # type: ignore[arg-type]
