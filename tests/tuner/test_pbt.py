"""Population-based training: real Tuner, real timm model, real Optuna studies and checkpoints."""

from __future__ import annotations

import math
import random

import optuna
import pytest
import pytorch_lightning as pl
import torch
from optuna.trial import TrialState

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.callbacks import GradientClipping, LabelSmoothing, LRSchedule
from lightning_tune.tuner import Tuner, tuner_from_config
from lightning_tune.tuner.pbt import PBTConfig, explore, perturb, resample, segments_frame
from lightning_tune.tuner.pbt.explore import ranked, split_quantiles
from lightning_tune.tuner.space import Categorical, Float, Int, PowerOfTwo

SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    "label_smoothing": {"type": "float", "low": 0.0, "high": 0.3},
    "max_norm": {"type": "float", "low": 0.5, "high": 5.0},
}
TRAINER = {"accelerator": "cpu", "limit_train_batches": 2, "limit_val_batches": 1,
           "num_sanity_val_steps": 0}  # fmt: skip
SEEN: list[dict] = []  # what Probe saw at the start of each segment


class Probe(pl.Callback):
    """Records, at the first training batch of a segment, what the running training uses."""

    def __init__(self, params: dict) -> None:
        self.params = dict(params)
        self.first = True

    def on_train_start(self, trainer, pl_module) -> None:
        (clipping,) = [c for c in trainer.callbacks if isinstance(c, GradientClipping)]
        SEEN.append({
            "params": self.params, "epoch": trainer.current_epoch, "when": "start",
            "weights": {k: v.clone() for k, v in pl_module.state_dict().items()},
            "optimizer": {i: {k: v.clone() for k, v in state.items()}
                          for i, state in trainer.optimizers[0].state_dict()["state"].items()},
            "clipping": clipping.state_dict(),
        })  # fmt: skip

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.first:
            return
        self.first = False
        (smoothing,) = [c for c in trainer.callbacks if isinstance(c, LabelSmoothing)]
        (clipping,) = [c for c in trainer.callbacks if isinstance(c, GradientClipping)]
        group = trainer.optimizers[0].param_groups[0]
        SEEN.append({
            "params": self.params, "epoch": trainer.current_epoch, "when": "step",
            "lr": group["lr"], "initial_lr": group["initial_lr"],
            "epsilon": smoothing.current_epsilon, "max_norm": clipping.max_norm,
        })  # fmt: skip


def _callbacks(params: dict) -> list[pl.Callback]:
    return [
        LabelSmoothing(epsilon=params["label_smoothing"]),
        GradientClipping(max_norm=params["max_norm"], mode="auto", percentile=90),
        LRSchedule("cosine"),
        Probe(params),
    ]


PLAIN = {
    "lr": SPACE["lr"],
    "weight_decay": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}


def _tuner(tmp_path, name="pbt", space=SPACE, **kwargs) -> Tuner:
    options = {
        "module_kwargs": {"model_name": "test_resnet"},
        "datamodule": DigitsDataModule,
        "datamodule_kwargs": {"image_size": 8, "train_fraction": 0.2, "batch_size": 32},
        "callbacks": _callbacks,
        "strategy": "pbt",
        "pbt": {"population": 2, "interval": 1, "quantile": 0.5, "mode": "sync"},
        "max_epochs": 3,
        "storage": "memory",
        "output_dir": tmp_path,
        "study_name": name,
        "loggers": [],
        "quiet": True,
        "trainer_kwargs": TRAINER,
        **kwargs,
    }
    return Tuner(TimmClassifier, space, **options)


@pytest.fixture(scope="module")
def sync_run(tmp_path_factory):
    SEEN.clear()
    tuner = _tuner(tmp_path_factory.mktemp("pbt"))
    result = tuner.run()
    return tuner, result, list(SEEN)


def _segments(study):
    return {(t.user_attrs["pbt"]["member"], t.user_attrs["pbt"]["round"]): t
            for t in study.trials if t.state == TrialState.COMPLETE}  # fmt: skip


def test_every_member_segment_is_one_complete_trial_with_its_lineage(sync_run):
    _, result, _ = sync_run
    segments = _segments(result.study)
    assert sorted(segments) == [(m, r) for m in range(2) for r in range(3)]
    assert len(result.study.trials) == 6  # nothing failed, nothing duplicated
    for (member, round), trial in segments.items():
        info = trial.user_attrs["pbt"]
        assert info["epochs"] == [round, round + 1]
        assert trial.intermediate_values == {round: pytest.approx(trial.value)}
        if round == 0:
            assert info["start"] is None
        elif info["donor"] is None:  # continues its own weights and hyperparameters
            assert info["start"] == segments[(member, round - 1)].user_attrs["checkpoint"]
            assert trial.params == segments[(member, round - 1)].params
    # With two members and quantile 0.5, the worse member of each round copies the better one.
    for round in (1, 2):
        previous = {m: segments[(m, round - 1)].value for m in range(2)}
        worse, better = sorted(previous, key=previous.get, reverse=True)
        info = segments[(worse, round)].user_attrs["pbt"]
        assert info["donor"] == better
        assert info["start"] == segments[(better, round - 1)].user_attrs["checkpoint"]
        assert set(info["changes"]) == set(SPACE)


def test_exploit_copies_weights_optimizer_and_callback_state(sync_run):
    _, result, seen = sync_run
    segments = _segments(result.study)
    exploited = [t for (m, r), t in segments.items() if t.user_attrs["pbt"]["donor"] is not None]
    assert exploited
    for trial in exploited:
        start = [s for s in seen if s["when"] == "start" and s["params"] == trial.user_attrs["params"]
                 and s["epoch"] == trial.user_attrs["pbt"]["round"]]  # fmt: skip
        assert len(start) == 1
        donor = torch.load(trial.user_attrs["pbt"]["start"], weights_only=True)
        for name, tensor in donor["state_dict"].items():
            assert torch.equal(start[0]["weights"][name], tensor), name
        donor_state = donor["optimizer_states"][0]["state"]
        assert donor_state and set(donor_state) == set(start[0]["optimizer"])
        for index, state in donor_state.items():
            for key, value in state.items():
                assert torch.equal(start[0]["optimizer"][index][key], value), (index, key)
        (clip_key,) = [k for k in donor["callbacks"] if k.startswith("GradientClipping")]
        assert donor["callbacks"][clip_key]["history"]  # AutoClip's norm history travels too
        assert start[0]["clipping"] == donor["callbacks"][clip_key]


def test_explore_reaches_the_running_optimizer_and_callbacks(sync_run):
    _, result, seen = sync_run
    for (_, round), trial in _segments(result.study).items():
        params = trial.user_attrs["params"]
        (step,) = [s for s in seen if s["when"] == "step" and s["params"] == params
                   and s["epoch"] == round]  # fmt: skip
        assert step["initial_lr"] == pytest.approx(params["lr"])
        assert step["lr"] <= step["initial_lr"] * (1 + 1e-9)  # the cosine schedule still owns it
        assert step["epsilon"] == pytest.approx(params["label_smoothing"])
        assert step["max_norm"] == pytest.approx(params["max_norm"])
    changed = [t for t in _segments(result.study).values() if t.user_attrs["pbt"]["changes"]]
    assert any(t.user_attrs["pbt"]["changes"]["lr"]["from"] != t.params["lr"] for t in changed)


def test_report_files_show_the_lineage(sync_run):
    _, result, _ = sync_run
    for name in ("pbt_segments", "pbt_final", "pbt_schedule", "pbt_lineage"):
        assert result.report_files[name].exists() and result.report_files[name].stat().st_size
    frame = segments_frame(result.study)
    assert frame["donor"].notna().sum() == 2  # one exploit per round after the first
    final = result.report_files["pbt_final"].read_text().splitlines()
    assert final[0].split()[:4] == ["member", "rounds", "val_loss", "exploited"]
    assert len(final) == 3


def test_the_study_is_readable_with_plain_optuna(tmp_path):
    tuner = _tuner(tmp_path, storage=None, max_epochs=2, callbacks=None, space=PLAIN)
    tuner.run()
    study = optuna.load_study(study_name="pbt", storage=f"sqlite:///{tuner.study_dir / 'study.db'}")
    assert study.user_attrs["strategy"] == "pbt"
    assert study.user_attrs["pbt"]["population"] == 2
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 4
    assert all(t.intermediate_values for t in study.trials)


def test_a_fixed_seed_on_one_worker_gives_the_same_run(tmp_path):
    runs = []
    for name in ("first", "second"):
        tuner = _tuner(tmp_path, name=name, callbacks=None, max_epochs=2, space=PLAIN,
                       pbt={"population": 3, "interval": 1})  # fmt: skip
        study = tuner.run().study
        runs.append({k: (t.params, t.value, t.user_attrs["pbt"]["donor"])
                     for k, t in _segments(study).items()})  # fmt: skip
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) == 6
    for key in runs[0]:
        assert runs[0][key][0] == runs[1][key][0]
        assert runs[0][key][1] == pytest.approx(runs[1][key][1], rel=1e-6)
        assert runs[0][key][2] == runs[1][key][2]


def test_round_0_is_what_a_sweep_with_the_same_sampler_and_seed_tries_first(tmp_path):
    tuner = _tuner(tmp_path, callbacks=None, space=PLAIN, max_epochs=1, sampler="random",
                   seed=5, pbt={"population": 3, "interval": 1})  # fmt: skip
    study = tuner.run().study
    sweep = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    expected = [tuner.search_space.suggest(sweep.ask()) for _ in range(3)]
    round0 = {t.user_attrs["pbt"]["member"]: t.params for t in study.trials
              if t.user_attrs["pbt"]["round"] == 0}  # fmt: skip
    assert [round0[m] for m in range(3)] == expected


def test_an_interval_in_validations_spans_the_trainers_validation_period(tmp_path):
    trainer = {**TRAINER, "check_val_every_n_epoch": 2}
    tuner = _tuner(tmp_path, callbacks=None, space=PLAIN, max_epochs=4, trainer_kwargs=trainer,
                   pbt={"population": 2, "interval": 1, "interval_unit": "validation",
                        "quantile": 0.5, "mode": "sync"})  # fmt: skip
    study = tuner.run().study
    segments = _segments(study)
    assert sorted(segments) == [(m, r) for m in range(2) for r in range(2)]
    for (_, round), trial in segments.items():
        assert trial.user_attrs["pbt"]["epochs"] == [2 * round, 2 * round + 2]
        # the segment's validation (at its last epoch) is the value members are ranked on
        assert trial.intermediate_values == {round: pytest.approx(trial.value)}
    assert study.user_attrs["pbt"]["interval_unit"] == "validation"


@pytest.mark.parametrize(
    ("trainer", "pbt", "max_epochs", "match"),
    [
        ({"check_val_every_n_epoch": 2}, {"interval": 1}, 4,
         r"`pbt.interval`=1 epochs ends segments where no validation runs "
         r"\(check_val_every_n_epoch=2\): use a multiple of 2, or interval_unit='validation'"),
        ({"check_val_every_n_epoch": 2}, {"interval": 1, "interval_unit": "validation"}, 5,
         r"max_epochs=5 ends the last segment without a validation"),
        ({"val_check_interval": 0.5}, {"interval": 1}, 2,
         r"val_check_interval=0.5 validates within epochs"),
        ({}, {"interval_unit": "step"}, 2,
         r"`interval_unit` must be one of \['epoch', 'validation'\]"),
    ],
)  # fmt: skip
def test_segments_that_would_end_without_a_validation_are_refused(
    tmp_path, trainer, pbt, max_epochs, match
):
    with pytest.raises(ValueError, match=match):
        _tuner(tmp_path, trainer_kwargs={**TRAINER, **trainer}, max_epochs=max_epochs,
               pbt={"population": 2, **pbt})  # fmt: skip
    assert not (tmp_path / "pbt").exists()


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("pbt", "error", "match"),
    [
        ({"population": 1}, ValueError, r"`population` must be an int >= 2, but got population=1"),
        ({"quantile": 0.0}, ValueError, r"`quantile` must be a number > 0 and <= 0.5, but got quantile=0.0"),
        ({"quantile": 0.75}, ValueError, r"`quantile` must be a number > 0 and <= 0.5, but got quantile=0.75"),
        ({"interval": 0}, ValueError, r"`interval` must be an int >= 1, but got interval=0"),
        ({"mode": "lockstep"}, ValueError, r"`mode` must be one of \['async', 'sync'\]"),
        ({"perturbation_factors": [1.2]}, ValueError, r"`perturbation_factors` must be two"),
        ({"populaton": 4}, ValueError, r"`pbt` has unknown keys \['populaton'\]"),
        ({"hyperparam_mutations": ["lr", "momentum"]}, ValueError,
         r"`hyperparam_mutations` has \['momentum'\], which the search space does not sample"),
    ],
)  # fmt: skip
def test_bad_pbt_options_fail_before_training(tmp_path, pbt, error, match):
    with pytest.raises(error, match=match):
        _tuner(tmp_path, pbt=pbt)
    assert not (tmp_path / "pbt").exists()


def test_pbt_refuses_a_pruner_and_a_suggest_function(tmp_path):
    with pytest.raises(ValueError, match=r"strategy='pbt' cannot be combined with pruner=Median"):
        _tuner(tmp_path, pruner="median")
    with pytest.raises(TypeError, match=r"strategy='pbt' needs `search_space` as a mapping"):
        Tuner(TimmClassifier, lambda t: {"lr": t.suggest_float("lr", 1e-3, 1e-1)},
              strategy="pbt", storage="memory")  # fmt: skip
    with pytest.raises(ValueError, match=r"`pbt` options need strategy='pbt'"):
        Tuner(TimmClassifier, {"lr": [0.1]}, pbt={"population": 2}, storage="memory")
    with pytest.raises(ValueError, match=r"`strategy` must be one of \['sweep', 'pbt'\]"):
        Tuner(TimmClassifier, {"lr": [0.1]}, strategy="hyperband", storage="memory")


def test_a_mutable_parameter_nothing_applies_is_refused_with_the_hook_to_add(tmp_path):
    cfg = {
        "strategy": "pbt",
        "model": {"class": "TimmClassifier", "kwargs": {"model_name": "test_resnet"}},
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1},
                         "mixup": {"type": "float", "low": 0.0, "high": 0.4}},
        "callbacks": [{"class": "LabelSmoothing", "kwargs": {"epsilon": 0.1}}],
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"`hyperparam_mutations` \['mixup'\] cannot reach the "
                       r"running training.*`on_hyperparameters_changed\(self, params\)` to "
                       r"TimmClassifier"):  # fmt: skip
        tuner_from_config(cfg, storage="memory", output_dir=str(tmp_path))
    # Referenced by a callback through "$mixup", or with the hook on the module: accepted.
    cfg["callbacks"][0]["kwargs"]["epsilon"] = "$mixup"
    assert tuner_from_config(cfg, storage="memory").pbt_plan.mutable == ("lr", "mixup")

    class Hooked(TimmClassifier):
        def __init__(self, lr: float = 1e-3, model_name: str = "test_resnet") -> None:
            super().__init__(model_name, lr=lr)

        def on_hyperparameters_changed(self, params: dict) -> None:
            pass

    cfg["callbacks"][0]["kwargs"]["epsilon"] = 0.1
    tuner = Tuner(Hooked, cfg["search_space"], callbacks=[lambda p: LabelSmoothing()],
                  strategy="pbt", storage="memory")  # fmt: skip
    assert tuner.pbt_plan.optimizer_keys == ("lr",)


# ---------------------------------------------------------------------- explore and exploit
def test_perturb_multiplies_floats_and_stays_in_the_space():
    rng = random.Random(0)
    values = {perturb(Float(0.0, 1.0), 0.5, rng)[0] for _ in range(50)}
    assert sorted(values) == pytest.approx([0.4, 0.6])
    clipped = {perturb(Float(0.0, 1.0), 0.95, rng)[0] for _ in range(50)}
    assert sorted(clipped) == pytest.approx([0.76, 1.0])
    assert perturb(Float(0.0, 1.0, step=0.25), 0.5, rng)[0] in (0.5,)  # 0.4/0.6 on the grid


@pytest.mark.parametrize(
    ("spec", "value", "allowed"),
    [
        (Int(1, 5), 1, {1, 2}),
        (Int(0, 10, step=2), 4, {2, 6}),
        (Categorical(["a", "b", "c"]), "b", {"a", "c"}),
        (PowerOfTwo(16, 64), 64, {32, 64}),
    ],
)
def test_perturb_moves_ints_and_choices_to_a_neighbour(spec, value, allowed):
    rng = random.Random(1)
    assert {perturb(spec, value, rng)[0] for _ in range(40)} == allowed


def test_resample_stays_in_the_space_and_explore_only_mutates_the_subset():
    rng = random.Random(2)
    for spec in (Float(1e-4, 1e-1, log=True), Int(2, 9, log=True), Int(0, 9, step=3)):
        for _ in range(100):
            value = resample(spec, rng)
            assert spec.low <= value <= spec.high
    specs = {"lr": Float(1e-3, 1.0, log=True), "depth": Int(1, 4)}
    config = PBTConfig(resample_probability=1.0)
    new, changes = explore(specs, {"lr": 0.1, "depth": 2}, ["depth"], rng, config)
    assert new["lr"] == 0.1 and set(changes) == {"depth"} and changes["depth"]["how"] == "resample"


def test_quantiles_and_ranking_follow_ray_tune():
    assert [PBTConfig(quantile=0.5).quantile_size(n) for n in (2, 3, 5)] == [1, 1, 2]
    assert ranked({0: 1.0, 1: math.nan, 2: 0.5}, "maximize") == [0, 2, 1]
    assert split_quantiles([4, 3, 2, 1, 0], PBTConfig(quantile=0.4)) == ([4, 3], [1, 0])


def test_async_exploit_takes_the_donors_checkpoint_of_the_same_round():
    """With two workers a donor can be a round ahead: the member must continue from the donor's
    checkpoint at the end of the member's own round, not from one past its segment's end."""
    import datetime

    from lightning_tune.tuner.pbt.population import Population, Segment, plan_member

    def segment(number, member, round, value):
        return Segment(number=number, member=member, round=round, state=TrialState.COMPLETE,
                       value=value, params={"lr": 0.01 * (member + 1)}, info={},
                       checkpoint=f"m{member}r{round}.ckpt",
                       completed=datetime.datetime(2026, 1, 1))  # fmt: skip

    config = PBTConfig(population=2, interval=1, quantile=0.5)
    # member 0 finished rounds 0 and 1 (ahead), member 1 only round 0 and is the worse one
    pop = Population([segment(0, 0, 0, 0.5), segment(1, 1, 0, 2.0), segment(2, 0, 1, 0.4)],
                     config, rounds=3)  # fmt: skip
    specs = {"lr": Float(1e-3, 1e-1, log=True)}
    plan = plan_member(pop, 1, (specs, ("lr",), config), seed=0, direction="minimize")
    assert plan.round == 1 and plan.donor == 0
    assert plan.start == "m0r0.ckpt"  # not m0r1.ckpt, which ends where this segment ends
