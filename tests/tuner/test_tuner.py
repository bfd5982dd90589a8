from __future__ import annotations

import binascii
import inspect
import math

import optuna
import pytest
import pytorch_lightning as pl
from optuna.trial import TrialState
from scripted_module import SCRIPTED, ScriptedModule, UnifiedScriptedModule

import lightning_tune._lightning as dual
from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.tuner import Categorical, Float, MetricNotFoundError, PowerOfTwo, Tuner

FAST = {
    "accelerator": "cpu",
    "devices": 1,
    "limit_train_batches": 2,
    "limit_val_batches": 1,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": False,
    "deterministic": True,
}
DATA = {"image_size": 16, "train_fraction": 0.3}


def _digits_tuner(tmp_path, space, **kwargs):
    options = {
        "datamodule": DigitsDataModule,
        "datamodule_kwargs": DATA,
        "module_kwargs": {"model_name": "test_resnet"},
        "output_dir": tmp_path,
        "trainer_kwargs": FAST,
        "max_epochs": 2,
        "sampler": "random",
        "pruner": "none",
        "quiet": True,
        **kwargs,
    }
    return Tuner(TimmClassifier, space, **options)


def test_sweep_result_report_and_resume_of_the_sqlite_study(tmp_path):
    space = {"lr": Float(1e-3, 1e-2, log=True), "batch_size": PowerOfTwo(16, 32)}
    tuner = _digits_tuner(tmp_path, space, study_name="s", keep_checkpoints=1)
    result = tuner.run(n_trials=3)
    study_dir = tmp_path / "s"
    assert (study_dir / "study.db").exists()
    frame = result.trials
    assert list(frame["number"]) == [0, 1, 2] and set(frame["state"]) == {"COMPLETE"}
    assert set(frame.columns) >= {"params_lr", "params_batch_size", "value", "epochs"}
    assert result.best_value == min(frame["value"])
    assert result.best_params["batch_size"] in (16, 32)
    assert result.best_value == pytest.approx(min(result.best_trial.intermediate_values.values()))
    # checkpoints are kept for the best trial only
    assert result.best_checkpoint is not None and result.best_checkpoint.exists()
    assert len(list(study_dir.glob("trials/*/checkpoints/*.ckpt"))) == 1
    # each trial logged its hyperparameters and metrics in its own directory
    for n in range(3):
        assert (study_dir / f"trials/trial_{n:04d}/metrics.csv").exists()
        assert "lr:" in (study_dir / f"trials/trial_{n:04d}/hparams.yaml").read_text()
    report = study_dir / "report"
    for name in (
        "trials.csv",
        "summary.txt",
        "optimization_history.png",
        "learning_curves.png",
        "param_importances.png",
        "parallel_coordinate.png",
    ):
        assert (report / name).stat().st_size > 0, name

    # the same sweep again continues the study; the sampler does not replay trials 0-2
    again = _digits_tuner(tmp_path, space, study_name="s", keep_checkpoints=1)
    result2 = again.run(n_trials=2, plots=False)
    assert len(result2.study.trials) == 5
    lrs = [t.params["lr"] for t in result2.study.trials]
    assert len(set(lrs)) == 5
    assert len(list(study_dir.glob("trials/*/checkpoints/*.ckpt"))) == 1


def test_a_diverging_lr_is_pruned_after_its_first_validation_and_fit_returns(tmp_path):
    def suggest(trial):
        # trials 0-1 train normally; trial 2 gets a learning rate that diverges
        return {"lr": [3e-3, 3e-3, 50.0][trial.number]}

    tuner = _digits_tuner(
        tmp_path,
        suggest,
        pruner="median",
        max_epochs=4,
        storage="memory",
        pruner_kwargs={"n_startup_trials": 2},
        module_kwargs={"model_name": "test_resnet", "optimizer": "sgd"},
    )
    result = tuner.run(n_trials=3, plots=False)
    states = [t.state for t in result.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    diverged = result.study.trials[2]
    assert diverged.last_step is None or diverged.last_step == 0
    # code after fit ran: epochs were recorded, the stop reason too, no checkpoint left
    assert diverged.user_attrs["epochs"] == 1
    assert diverged.user_attrs["validations"] == 1
    assert "validation step 0" in diverged.user_attrs["prune_reason"]
    assert not list((tmp_path / "lightning_tune").glob("trials/trial_0002/checkpoints/*"))


def _hyperband_bracket(study_name: str, number: int) -> int:
    """Optuna's documented bracket assignment for max_resource=9, reduction_factor=3.

    3 brackets with trial budgets ceil(3 * 3**s / (s + 1)) for s = 2, 1, 0 -> 9, 5, 3; a trial
    goes to the bracket where crc32("<study>_<number>") % 17 falls.
    """
    n = binascii.crc32(f"{study_name}_{number}".encode()) % 17
    return 0 if n < 9 else 1 if n < 14 else 2


def test_hyperband_assigns_brackets_and_prunes_at_their_rungs(tmp_path):
    # Rungs (validation steps) of bracket b are 3**b, 3**(b+1), ... below max_resource=9:
    # bracket 0 prunes at steps 1 and 3, bracket 1 at step 3, bracket 2 never (its rung is 9).
    rungs = {0: {1, 3}, 1: {3}, 2: set()}

    def make_module(params):
        return ScriptedModule([params["quality"] * (1 + 1 / (s + 1)) for s in range(9)])

    tuner = Tuner(
        make_module,
        {"quality": Float(0.0, 1.0)},
        pruner="hyperband",
        pruner_kwargs={"reduction_factor": 3},
        sampler="random",
        max_epochs=9,
        storage="memory",
        output_dir=tmp_path,
        keep_checkpoints=0,
        loggers=(),
        trainer_kwargs={"accelerator": "cpu", "num_sanity_val_steps": 0},
        quiet=True,
    )
    assert tuner.max_resource == 9  # from max_epochs
    study = tuner.optimize(n_trials=16)
    by_bracket: dict[int, list] = {0: [], 1: [], 2: []}
    for trial in study.trials:
        by_bracket[_hyperband_bracket(study.study_name, trial.number)].append(trial)
    assert all(by_bracket.values())  # every bracket got trials
    n_pruned = 0
    for bracket, trials in by_bracket.items():
        for trial in trials:
            if trial.state == TrialState.PRUNED:
                n_pruned += 1
                assert trial.last_step in rungs[bracket], (bracket, trial.number, trial.last_step)
                assert trial.user_attrs["epochs"] == trial.last_step + 1
            else:
                assert trial.state == TrialState.COMPLETE and trial.last_step == 8
    assert n_pruned >= 3
    pruned_steps = {
        b: {t.last_step for t in ts if t.state == TrialState.PRUNED} for b, ts in by_bracket.items()
    }
    assert 1 in pruned_steps[0] and pruned_steps[1] == {3}  # different brackets, different rungs


def test_tuned_hyperparameters_reach_callbacks_module_and_datamodule(tmp_path):
    seen = []

    class Recorder(pl.Callback):
        def __init__(self, warmup: int) -> None:
            self.warmup = warmup

        def on_fit_start(self, trainer, pl_module):
            seen.append((self.warmup, trainer.datamodule.batch_size, pl_module.hparams.lr))

    tuner = _digits_tuner(
        tmp_path,
        {
            "warmup": Categorical([0, 1, 2]),
            "batch_size": PowerOfTwo(16, 64),
            "lr": Float(1e-3, 1e-2),
        },
        callbacks=[lambda p: Recorder(p["warmup"])],
        max_epochs=1,
        storage="memory",
        keep_checkpoints=0,
    )
    study = tuner.optimize(n_trials=3)
    assert seen == [
        (t.params["warmup"], t.params["batch_size"], t.params["lr"]) for t in study.trials
    ]


def test_nonfinite_metric_fails_the_trial_and_the_study_goes_on(tmp_path):
    def make_module(params):
        return ScriptedModule([1.0, params["bad"], 0.5])

    tuner = Tuner(
        make_module,
        {"bad": Categorical([math.nan])},
        pruner="none",
        on_nonfinite="fail",
        storage="memory",
        output_dir=tmp_path,
        max_epochs=3,
        trainer_kwargs={"accelerator": "cpu", "num_sanity_val_steps": 0},
        quiet=True,
        keep_checkpoints=0,
        loggers=(),
    )
    study = tuner.optimize(n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert (
        study.trials[0].user_attrs["fail_reason"] == "val_loss=nan at validation step 1 (epoch 1)"
    )


@pytest.mark.parametrize(
    ("direction", "objective", "expected"),
    [
        ("minimize", "best", 0.25),
        ("minimize", "last", 0.375),
        ("maximize", "best", 0.75),
        ("maximize", "last", 0.375),
    ],
)
def test_the_trial_value_is_the_best_or_the_last_validation(
    tmp_path, direction, objective, expected
):
    tuner = Tuner(
        lambda p: ScriptedModule([0.5 + 0 * p["x"], 0.75, 0.25, 0.375]),  # exact in float32
        {"x": Float(0.0, 1.0)},
        direction=direction,
        objective=objective,
        pruner="none",
        storage="memory",
        output_dir=tmp_path,
        max_epochs=4,
        trainer_kwargs={"accelerator": "cpu", "num_sanity_val_steps": 0},
        quiet=True,
        keep_checkpoints=0,
        loggers=(),
    )
    (trial,) = tuner.optimize(n_trials=1).trials
    assert trial.intermediate_values == {0: 0.5, 1: 0.75, 2: 0.25, 3: 0.375}
    assert trial.value == expected


def test_missing_metric_is_an_error_naming_the_logged_ones(tmp_path):
    tuner = Tuner(
        lambda p: ScriptedModule([p["x"]]),
        {"x": Float(0.0, 1.0)},
        monitor="val_acc",
        pruner="none",
        storage="memory",
        output_dir=tmp_path,
        max_epochs=1,
        quiet=True,
        trainer_kwargs={"accelerator": "cpu"},
        keep_checkpoints=0,
        loggers=(),
    )
    with pytest.raises(
        MetricNotFoundError, match=r"logged metrics: \['other_metric', 'val_loss'\]"
    ):
        tuner.optimize(n_trials=1)


def test_an_existing_study_with_the_other_direction_is_refused_and_untouched(tmp_path):
    first = Tuner(
        lambda p: ScriptedModule([p["x"]]),
        {"x": Float(0.0, 1.0)},
        output_dir=tmp_path,
        study_name="d",
        max_epochs=1,
        pruner="none",
        quiet=True,
        keep_checkpoints=0,
        loggers=(),
        trainer_kwargs={"accelerator": "cpu"},
    )
    first.optimize(n_trials=1)
    other = Tuner(
        lambda p: ScriptedModule([p["x"]]),
        {"x": Float(0.0, 1.0)},
        output_dir=tmp_path,
        study_name="d",
        direction="maximize",
        max_epochs=1,
        pruner="none",
        quiet=True,
    )
    with pytest.raises(
        ValueError,
        match=r"already exists with direction\(s\) \['minimize'\], but "
        r"direction='maximize'",
    ):
        other.run(n_trials=1)
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{tmp_path / 'd' / 'study.db'}")
    assert len(study.trials) == 1 and study.direction == optuna.study.StudyDirection.MINIMIZE


def test_test_best_evaluates_the_best_checkpoint_and_tensorboard_logs(tmp_path):
    tuner = _digits_tuner(
        tmp_path,
        {"lr": Float(1e-3, 1e-2)},
        storage="memory",
        keep_checkpoints=1,
        max_epochs=1,
        loggers=("csv", "tensorboard"),
    )
    result = tuner.run(n_trials=2, test_best=True, plots=False)
    assert set(result.test_metrics) == {"test_loss", "test_acc"}
    study_dir = tmp_path / "lightning_tune"
    assert (study_dir / "report" / "best_test_metrics.json").exists()
    for n in range(2):
        assert list((study_dir / "tensorboard" / f"trial_{n:04d}").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"pruner": "patience"},
            ValueError,
            r"`pruner` must be one of \['hyperband', 'median', 'none', 'patient', 'percentile', "
            r"'successive_halving', 'threshold', 'wilcoxon'\]",
        ),
        (
            {"sampler": "anneal"},
            ValueError,
            r"`sampler` must be one of \['bruteforce', 'cmaes', 'gp', 'grid', 'nsga2', 'nsga3', "
            r"'qmc', 'random', 'tpe'\]",
        ),
        (
            {"sampler": "grid"},
            ValueError,
            r"search space `lr`: a float under sampler='grid' needs `grid_points`",
        ),
        (
            {"sampler": "grid", "sampler_kwargs": {"grid_points": 1}},
            ValueError,
            r"`grid_points` must be an int >= 2, but got grid_points=1",
        ),
        (
            {"pruner": "hyperband", "pruner_kwargs": {"reduction_factor": 1}},
            ValueError,
            r"`reduction_factor` must be an int >= 2, but got reduction_factor=1",
        ),
        (
            {"pruner": "hyperband", "max_epochs": 1},
            ValueError,
            r"`max_resource` must be > `min_resource`",
        ),
        (
            {"pruner": "median", "pruner_kwargs": {"warmup": 2}},
            TypeError,
            r"pruner 'median': bad `pruner_kwargs`",
        ),
        ({"storage": "postgres//user@host"}, ValueError, r"`storage`='postgres//user@host'"),
        (
            {"direction": "down"},
            ValueError,
            r"`direction` must be one of \['minimize', 'maximize'\]",
        ),
        (
            {"trainer_kwargs": {"max_epochs": 3, "logger": False}},
            ValueError,
            r"`trainer_kwargs` must not set \['logger', 'max_epochs'\]",
        ),
        ({"max_epochs": 0}, ValueError, r"`max_epochs` must be an int >= 1, but got max_epochs=0"),
        ({"keep_checkpoints": -1}, ValueError, r"`keep_checkpoints` must be an int >= 0"),
        ({"loggers": ["wandb"]}, ValueError, r"`loggers` may contain \['csv', 'tensorboard'\]"),
        ({"objective": "mean"}, ValueError, r"`objective` must be one of \['best', 'last'\]"),
        (
            {"module_kwargs": {"model": "x"}},
            ValueError,
            r"`module_kwargs` has arguments \['model'\] that TimmClassifier does not take",
        ),
        ({"study_name": "a/b"}, ValueError, r"`study_name` must be a non-empty name without '/'"),
    ],
)
def test_bad_arguments_fail_before_any_study_exists(tmp_path, kwargs, error, match):
    options = {"output_dir": tmp_path, "datamodule": DigitsDataModule, **kwargs}
    with pytest.raises(error, match=match):
        Tuner(TimmClassifier, {"lr": Float(1e-3, 1e-2)}, **options)
    assert not any(tmp_path.iterdir())


def test_a_search_space_name_no_class_takes_is_refused(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"parameters \['lrr'\] are not arguments of "
        r"TimmClassifier or DigitsDataModule",
    ):
        Tuner(
            TimmClassifier,
            {"lrr": Float(1e-3, 1e-2)},
            datamodule=DigitsDataModule,
            output_dir=tmp_path,
        )


@pytest.mark.parametrize(
    ("n_trials", "timeout", "match"),
    [
        (0, None, r"`n_trials` must be an int >= 1, but got n_trials=0"),
        (-2, None, r"`n_trials` must be an int >= 1"),
        (None, None, r"give `n_trials` and/or `timeout`"),
        (None, 0, r"`timeout` must be a number of seconds > 0, but got timeout=0"),
    ],
)
def test_bad_budgets(tmp_path, n_trials, timeout, match):
    tuner = Tuner(
        lambda p: ScriptedModule(),
        {"x": Float(0.0, 1.0)},
        output_dir=tmp_path,
        storage="memory",
        quiet=True,
    )
    with pytest.raises(ValueError, match=match):
        tuner.optimize(n_trials=n_trials, timeout=timeout)


class PackageRecorder(dual.Callback):
    """Records the package of each trial's Trainer."""

    seen: list[str] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        PackageRecorder.seen.append(type(trainer).__module__.split(".")[0])


def _scripted_sweep(tmp_path, make_module, callbacks=None):
    tuner = Tuner(
        make_module,
        {"quality": Float(0.0, 1.0)},
        callbacks=callbacks,
        pruner="median",
        pruner_kwargs={"n_startup_trials": 2},
        sampler="random",
        seed=3,
        max_epochs=4,
        storage="memory",
        output_dir=tmp_path,
        keep_checkpoints=0,
        loggers=(),
        trainer_kwargs={"accelerator": "cpu", "num_sanity_val_steps": 0},
        quiet=True,
    )
    study = tuner.optimize(n_trials=8)
    return [(t.state, t.last_step, t.params["quality"]) for t in study.trials]


@pytest.mark.parametrize("package", ["pytorch_lightning", "lightning.pytorch"])
def test_a_sweep_prunes_identically_with_either_package(tmp_path, package):
    if package not in {ns.__name__ for ns in dual.NAMESPACES}:
        pytest.skip(f"{package} is not installed")
    cls = SCRIPTED[package]
    PackageRecorder.seen = []

    def make_module(params):  # later rungs worse for low quality: the median prunes them
        return cls([params["quality"] * (s + 1) for s in range(4)])

    trials = _scripted_sweep(tmp_path, make_module, callbacks=[PackageRecorder()])
    assert PackageRecorder.seen == [package.split(".")[0]] * 8
    expected = _scripted_sweep(
        tmp_path, lambda p: ScriptedModule([p["quality"] * (s + 1) for s in range(4)])
    )
    assert trials == expected
    assert sum(state == TrialState.PRUNED for state, _, _ in trials) >= 2


def test_our_own_classes_run_in_the_default_package(tmp_path):
    PackageRecorder.seen = []
    tuner = _digits_tuner(
        tmp_path,
        {"lr": Float(1e-3, 1e-2)},
        callbacks=[PackageRecorder()],
        storage="memory",
        max_epochs=1,
        keep_checkpoints=0,
        loggers=(),
    )
    tuner.optimize(n_trials=1)
    assert PackageRecorder.seen == [dual.NAMESPACES[0].__name__.split(".")[0]]


def test_objects_of_the_two_packages_are_not_mixed(tmp_path):
    if len(dual.NAMESPACES) < 2:
        pytest.skip("needs both Lightning packages")
    with pytest.raises(
        TypeError,
        match=r"`module` is from lightning\.pytorch, `callbacks\[0\]` is from pytorch_lightning",
    ):
        Tuner(
            UnifiedScriptedModule,
            {"x": Float(0.0, 1.0)},
            callbacks=[pl.callbacks.Timer()],
            output_dir=tmp_path,
        )


def test_an_existing_study_with_a_clashing_search_space_is_refused_and_untouched(tmp_path):
    def tuner(space, resume="check"):
        return Tuner(
            lambda p: ScriptedModule([p["x"] + p["batch_size"]]),
            space,
            resume=resume,
            output_dir=tmp_path,
            study_name="c",
            max_epochs=1,
            pruner="none",
            quiet=True,
            keep_checkpoints=0,
            loggers=(),
            trainer_kwargs={"accelerator": "cpu"},
        )

    tuner({"batch_size": PowerOfTwo(16, 32), "x": Float(0.0, 1.0)}).optimize(n_trials=1)
    with pytest.raises(
        ValueError,
        match=r"study 'c' was created with other settings.*"
        r"search_space\.batch_size\.high: 32 -> 64",
    ):
        tuner({"batch_size": PowerOfTwo(16, 64), "x": Float(0.0, 1.0)}).optimize(n_trials=1)
    # even forced, a clash Optuna cannot sample from is refused before any trial
    with pytest.raises(
        ValueError,
        match=r"search space `batch_size` is .* but study 'c' already "
        r"sampled it from .*choices=\(16, 32\)",
    ):
        tuner({"batch_size": PowerOfTwo(16, 64), "x": Float(0.0, 1.0)}, "force").optimize(1)
    # a compatible change (a wider float range) continues the study when forced
    tuner({"batch_size": PowerOfTwo(16, 32), "x": Float(0.0, 2.0)}, "force").optimize(n_trials=1)
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c' / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]


@pytest.mark.parametrize(
    ("trainer", "expected"),
    [
        ({}, 6),
        ({"val_check_interval": 0.5}, 12),  # two validations per epoch: steps stay unique
        ({"check_val_every_n_epoch": 2}, 3),
        ({"val_check_interval": 10}, None),  # every 10 batches: unknown per trial -> "auto"
    ],
)
def test_hyperband_max_resource_follows_the_validations_of_a_full_trial(
    tmp_path, trainer, expected
):
    tuner = Tuner(
        lambda p: ScriptedModule(),
        {"x": Float(0.0, 1.0)},
        max_epochs=6,
        trainer_kwargs=trainer,
        output_dir=tmp_path,
        storage="memory",
    )
    assert tuner.max_resource == expected


@pytest.mark.parametrize(
    ("pruner", "expected"),
    [
        (None, optuna.pruners.NopPruner),  # None keeps meaning "no pruning"
        ("none", optuna.pruners.NopPruner),
        ("auto", optuna.pruners.HyperbandPruner),
    ],
)
def test_pruner_none_means_no_pruning_and_the_default_is_hyperband(tmp_path, pruner, expected):
    tuner = _digits_tuner(tmp_path, {"lr": Float(1e-4, 1e-2, log=True)}, pruner=pruner)
    assert type(tuner.pruner) is expected
    assert inspect.signature(Tuner).parameters["pruner"].default == "auto"
