"""Multi-objective sweeps: values from one validation, Pareto front in the report, bad input."""

from __future__ import annotations

import csv

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from scripted_module import ScriptedModule, SumModule

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.tuner import Float, ModelCost, Tuner
from lightning_tune.tuner.objectives import ObjectiveMetrics, Objectives

FAST = {
    "accelerator": "cpu",
    "devices": 1,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": False,
    "limit_train_batches": 1,
}


def _tuner(tmp_path, module=SumModule, space=None, **kwargs):
    options = {
        "storage": "memory",
        "output_dir": tmp_path,
        "trainer_kwargs": FAST,
        "max_epochs": 1,
        "keep_checkpoints": 0,
        "loggers": (),
        "quiet": True,
        "monitor": ["val_loss", "size"],
        "direction": ["minimize", "minimize"],
        **kwargs,
    }
    space = space or {"x": Float(0.0, 1.0, grid_points=3), "n": [1, 2, 3]}
    return Tuner(module, space, **options)


def test_a_two_objective_grid_has_the_exact_pareto_front_in_the_report(tmp_path, capsys):
    # val_loss = x, size = n: both minimized, so the front is the single trial x=0, n=1 ...
    # ... unless a trade-off exists: with direction maximize on size, x=0 trades against n=3
    tuner = _tuner(tmp_path, sampler="grid", direction=["minimize", "maximize"], quiet=False)
    result = tuner.run(n_trials=9)
    assert len(result.study.trials) == 9
    front = sorted((t.params["x"], t.params["n"]) for t in result.best_trials)
    assert front == [(0.0, 3)]  # x=0 is best on val_loss and n=3 best on size: one point
    out = capsys.readouterr().out
    assert "Pareto front: 1 of 9 completed trials" in out
    files = result.report_files
    assert files["pareto_front"].exists() and files["pareto_front"].stat().st_size > 0
    rows = list(csv.DictReader(files["pareto_front_table"].open()))
    assert [(float(r["val_loss"]), float(r["size"])) for r in rows] == [(0.0, 3.0)]
    with pytest.raises(ValueError, match=r"2 objectives \['val_loss', 'size'\].*best_trials"):
        result.best_trial  # noqa: B018


def test_a_real_trade_off_gives_a_front_of_several_trials(tmp_path):
    # val_loss = x + y with y = 1/n: a larger n is better on val_loss but worse on size
    def module(params):
        return SumModule(x=0.0, y=1.0 / params["n"], n=params["n"])

    result = _tuner(tmp_path, module=module, space={"n": [1, 2, 4]}, sampler="grid").run(
        n_trials=3, plots=False
    )
    front = sorted(t.params["n"] for t in result.best_trials)
    assert front == [1, 2, 4]  # every trial trades one objective for the other
    frame = result.trials
    assert {"value_val_loss", "value_size", "pareto"} <= set(frame.columns)
    assert frame["pareto"].all()
    summary = result.summary()
    assert "Pareto front: 3 of 3 completed trials" in summary


def test_values_come_from_one_validation():
    objectives = Objectives.parse(["a", "b"], ["minimize", "maximize"])
    rows = [{"a": 3.0, "b": 1.0}, {"a": 1.0, "b": 0.5}, {"a": 2.0, "b": 9.0}]
    assert objectives.values(rows, "best") == [1.0, 0.5]  # where `a` was best, with its `b`
    assert objectives.values(rows, "last") == [2.0, 9.0]


def test_objective_metrics_resume_and_name_missing_metrics(tmp_path):
    recorder = ObjectiveMetrics(["val_loss", "size"])
    recorder.load_state_dict({"rows": [{"val_loss": 1.0, "size": 2.0}]})
    assert recorder.state_dict() == {"rows": [{"val_loss": 1.0, "size": 2.0}]}
    tuner = _tuner(tmp_path, module=ScriptedModule, space={"batch_size": [2]})
    with pytest.raises(Exception, match=r"\['size'\] were not logged.*logged metrics: \["):
        tuner.optimize(n_trials=1)


def test_model_cost_logs_parameter_count_and_measured_latency(tmp_path, lightning_ns):
    # a callback of one package makes the trial run in that package's Trainer
    tuner = Tuner(
        TimmClassifier,
        {"lr": [1e-2]},
        datamodule=DigitsDataModule,
        datamodule_kwargs={"image_size": 16, "train_fraction": 0.2},
        module_kwargs={"model_name": "test_resnet"},
        callbacks=[ModelCost(repeats=2), lightning_ns.callbacks.Timer()],
        monitor=["val_loss", "params_m", "inference_ms"],
        direction=["minimize", "minimize", "minimize"],
        storage="memory",
        output_dir=tmp_path,
        max_epochs=1,
        trainer_kwargs={**FAST, "limit_val_batches": 1},
        keep_checkpoints=0,
        loggers=(),
        quiet=True,
    )
    study = tuner.optimize(n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    assert trial.user_attrs["lightning"] == lightning_ns.__name__
    model = TimmClassifier(model_name="test_resnet", num_classes=10)
    expected = sum(p.numel() for p in model.parameters()) / 1e6
    loss, params_m, ms = trial.values
    assert params_m == pytest.approx(expected, rel=1e-6)
    assert 0 < ms < 1000 and loss > 0


def test_model_cost_measures_what_a_slower_model_costs():
    class Slow(torch.nn.Module):
        def forward(self, x):
            y = x
            for _ in range(200):
                y = torch.tanh(y @ torch.ones(64, 64))
            return y

    cost = ModelCost()
    x = torch.ones(4, 64)
    slow = cost.measure_ms(Slow(), x)
    fast = cost.measure_ms(torch.nn.Identity(), x)
    assert slow > 5 * fast


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"direction": ["minimize"]},
            ValueError,
            r"`direction` has 1 entry but `monitor` has 2 metrics \['val_loss', 'size'\]",
        ),
        (
            {"direction": "minimize"},
            ValueError,
            r"`direction` must be a list with one direction per metric of `monitor`",
        ),
        (
            {"pruner": "median"},
            ValueError,
            r"`pruner`='median' cannot prune a sweep with several objectives",
        ),
        (
            {"pruner": optuna.pruners.HyperbandPruner()},
            ValueError,
            r"`pruner`=HyperbandPruner cannot prune a sweep with several objectives",
        ),
        ({"sampler": "cmaes"}, ValueError, r"`sampler`='cmaes' optimizes a single objective"),
        ({"monitor": ["val_loss", "val_loss"]}, ValueError, r"`monitor` must not repeat"),
        ({"monitor": []}, TypeError, r"`monitor` must be a metric name or a list"),
        (
            {"direction": ["minimize", "down"]},
            ValueError,
            r"`direction` must be one of \['minimize', 'maximize'\]",
        ),
    ],
)
def test_bad_objectives_fail_in_one_line_before_any_trial(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        _tuner(tmp_path, storage=None, **kwargs)
    assert "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())


def test_one_metric_in_a_list_is_a_single_objective_sweep(tmp_path):
    tuner = _tuner(
        tmp_path, monitor=["val_loss"], direction=["minimize"], sampler="random", max_epochs=2
    )
    assert type(tuner.pruner).__name__ == "HyperbandPruner"  # the default, as for a string
    result = tuner.run(n_trials=2, plots=False)
    assert result.best_value == min(t.value for t in result.study.trials)


def test_a_multi_objective_sweep_from_yaml_lists_its_front(tmp_path):
    from lightning_tune.tuner.cli import run_tune

    config = tmp_path / "multi.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"class": "scripted_module.SumModule"},
                "search_space": {"x": [0.0, 1.0], "n": [1, 2]},
                "monitor": ["val_loss", "size"],
                "direction": ["minimize", "maximize"],
                "sampler": {"name": "grid"},
                "n_trials": 4,
                "max_epochs": 1,
                "plots": False,
                "quiet": True,
                "loggers": [],
                "keep_checkpoints": 1,
                "trainer": FAST,
            }
        )
    )
    summary = run_tune(str(config), output_dir=str(tmp_path))
    assert summary["best_trial"] is None
    assert [(p["params"]["x"], p["params"]["n"]) for p in summary["pareto_front"]] == [(0.0, 2)]
    assert summary["pareto_front"][0]["values"] == [0.0, 2.0]
    kept = list(tmp_path.glob("lightning_tune/trials/*/checkpoints/*.ckpt"))
    assert len(kept) == 1  # only the front's checkpoint is kept
