"""TrainingDiagnostics on real Trainers: each check fires on a broken module, stays quiet on healthy."""

from __future__ import annotations

import pathlib
import sys

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from lightning_tune import TrainingDiagnostics
from lightning_tune.diagnostics import DiagnosticError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
from diagnostics_zoo import ZooData, ZooMLP, setup_by_name


def fit(module, data, trainer_kwargs, diag=None, **kw):
    diag = diag or TrainingDiagnostics(every_n_steps=2, verbose=False)
    options = {"max_steps": 8, "limit_val_batches": 0, **kw}
    trainer = pl.Trainer(**{**trainer_kwargs, **options, "callbacks": [diag]})
    trainer.fit(module, data)
    return diag, trainer


def codes(diag):
    return {(f.code, f.layer) for f in diag.findings}


BROKEN = [
    ("softmax_before_cross_entropy", ("softmax_before_loss", "loss input"), {}),
    ("unnormalised_inputs_0_255", ("inputs_unscaled", "inputs"), {}),
    ("all_zero_init", ("weights_zero", "net.0"), {}),
    ("constant_init_symmetric", ("weights_symmetric", "net.0"), {}),
    ("lr_100x_too_high", ("update_ratio_high", "group_0"), {}),
    ("lr_1000x_too_low", ("update_ratio_low", "group_0"), {}),
    ("dying_relu_negative_bias", ("dead_units", "net.1"), {}),
    ("frozen_layer_trains", ("frozen_param_changed", "net.0.weight"), {}),
    ("same_batch_every_step", ("repeated_batch", "inputs"), {}),
    ("exploding_deep_plain_mlp", ("grad_exploding", "net.24"), {}),
    ("vanishing_deep_sigmoid_mlp", ("grad_vanishing", "net.0"), {}),
    ("nan_from_log_0", ("nonfinite_loss", "loss"), {}),
    ("unshuffled_sorted_data", ("class_imbalance", "targets"), {}),
    (
        "dropout_on_in_eval",
        ("dropout_in_eval", "net.2"),
        {"limit_train_batches": 4, "max_steps": -1, "max_epochs": 1, "limit_val_batches": 1},
    ),
]


@pytest.mark.parametrize(("name", "expected", "kw"), BROKEN, ids=[b[0] for b in BROKEN])
def test_check_fires_with_code_and_layer(name, expected, kw, trainer_kwargs):
    _, build = setup_by_name(name)
    module, data = build(0)
    diag, _ = fit(module, data, trainer_kwargs, **kw)
    assert expected in codes(diag), diag.table()


def test_labels_out_of_range_found_before_the_loss_crashes(trainer_kwargs):
    module, data = setup_by_name("targets_off_by_one")[1](0)
    diag = TrainingDiagnostics(on_error="raise", verbose=False)
    with pytest.raises(
        DiagnosticError, match=r"labels_out_of_range .* value=10 \(expected \[0, 10\)\)"
    ):
        fit(module, data, trainer_kwargs, diag)
    assert diag.findings[0].layer == "targets"


def test_frozen_batchnorm_drift_on_a_timm_backbone(trainer_kwargs):
    module, data = setup_by_name("bn_train_mode_frozen_backbone")[1](0)
    diag, _ = fit(module, data, trainer_kwargs, max_steps=3)
    drift = [f for f in diag.findings if f.code == "frozen_bn_drift"]
    assert drift and drift[0].layer.startswith("model.") and drift[0].severity == "warning"


def test_loss_flat_and_diverging(trainer_kwargs):
    flat = TrainingDiagnostics(every_n_steps=2, thresholds={"grace_steps": 10}, verbose=False)
    module, data = setup_by_name("dying_relu_negative_bias")[1](0)
    fit(module, data, trainer_kwargs, flat, max_steps=14)
    assert ("loss_flat", "loss") in codes(flat)
    module, data = setup_by_name("lr_100x_too_high")[1](0)
    diverging, _ = fit(module, data, trainer_kwargs, max_steps=6)
    assert ("loss_diverging", "loss") in codes(diverging)


class LogLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)  # NaN for negative inputs


class NanModule(ZooMLP):
    def __init__(self) -> None:
        super().__init__()
        self.net.insert(1, LogLayer())


def test_nonfinite_activation_names_the_first_module(trainer_kwargs):
    diag, _ = fit(NanModule(), ZooData(), trainer_kwargs, max_steps=2)
    first = [f for f in diag.findings if f.code == "nonfinite_activation"]
    assert first[0].layer == "net.1" and first[0].severity == "error"
    loss = next(f for f in diag.findings if f.code == "nonfinite_loss")
    assert "net.1" in loss.message


def test_saturated_sigmoid_and_initial_loss(trainer_kwargs):
    module = ZooMLP(activation="sigmoid", init_std=3.0)
    with torch.no_grad():
        module.net[-1].weight.mul_(100.0)  # a bad init of the last layer
    diag, _ = fit(module, ZooData(), trainer_kwargs, max_steps=2)
    found = codes(diag)
    assert ("saturated_units", "net.1") in found
    assert ("initial_loss", "loss") in found


@pytest.mark.parametrize("name", ["healthy_mlp_adam", "healthy_mlp_sgd", "healthy_test_resnet"])
def test_healthy_setups_stay_quiet(name, trainer_kwargs):
    module, data = setup_by_name(name)[1](0)
    steps = 6 if "resnet" in name else 40
    diag = TrainingDiagnostics(every_n_steps=2, verbose=False)
    fit(module, data, trainer_kwargs, diag, max_steps=steps, limit_val_batches=1)
    assert [f for f in diag.findings if f.severity != "info"] == [], diag.table()
    assert len(diag.history) >= 3 and all("grad_norm" in e for e in diag.history)


def test_on_error_stop_stops_and_raise_raises(trainer_kwargs):
    module, data = setup_by_name("all_zero_init")[1](0)
    diag, trainer = fit(
        module, data, trainer_kwargs, TrainingDiagnostics(on_error="stop", verbose=False)
    )
    assert trainer.global_step == 0 and diag.errors[0].code == "weights_zero"
    module, data = setup_by_name("all_zero_init")[1](0)
    with pytest.raises(DiagnosticError, match=r"weights_zero at step 0 in net\.0"):
        fit(module, data, trainer_kwargs, TrainingDiagnostics(on_error="raise", verbose=False))


def test_warn_prints_errors_at_once_and_table_at_fit_end(trainer_kwargs, capsys):
    module, data = setup_by_name("all_zero_init")[1](0)
    with pytest.warns(UserWarning, match="TrainingDiagnostics: error weights_zero"):
        fit(module, data, trainer_kwargs, TrainingDiagnostics(every_n_steps=2), max_steps=2)
    out = capsys.readouterr().out
    assert "TrainingDiagnostics findings:" in out and "weights_zero" in out


def test_logger_scalars(trainer_kwargs, tmp_path):
    module, data = setup_by_name("healthy_mlp_adam")[1](0)
    logger = CSVLogger(tmp_path, name="diag")
    fit(module, data, {**trainer_kwargs, "logger": logger}, max_steps=4)
    header = (pathlib.Path(logger.log_dir) / "metrics.csv").read_text().splitlines()[0]
    for column in (
        "diagnostics/loss",
        "diagnostics/grad_norm/net.0",
        "diagnostics/update_ratio/group_0",
        "diagnostics/dead_fraction/net.1",
        "diagnostics/errors",
    ):
        assert column in header.split(",")


def test_findings_survive_checkpoint_and_resume_exactly(trainer_kwargs, tmp_path):
    def run(max_epochs, ckpt=None):
        module, data = setup_by_name("unnormalised_inputs_0_255")[1](0)
        diag = TrainingDiagnostics(every_n_steps=3, verbose=False)
        trainer = pl.Trainer(
            **{**trainer_kwargs, "enable_checkpointing": True},
            max_epochs=max_epochs,
            limit_train_batches=5,
            limit_val_batches=0,
            callbacks=[diag],
        )
        trainer.fit(module, data, ckpt_path=ckpt)
        return diag, trainer

    straight, _ = run(2)
    _, trainer = run(1)
    path = tmp_path / "half.ckpt"
    trainer.save_checkpoint(path)
    resumed, _ = run(2, ckpt=str(path))
    assert [f.to_dict() for f in resumed.findings] == [f.to_dict() for f in straight.findings]
    assert [e["step"] for e in resumed.history] == [e["step"] for e in straight.history]
    assert resumed.state_dict()["batches"] == straight.state_dict()["batches"] == 10


class NoLossModule(ZooMLP):
    def __init__(self) -> None:
        super().__init__()
        del self.criterion

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)


def test_unreachable_loss(trainer_kwargs):
    diag, _ = fit(NoLossModule(), ZooData(), trainer_kwargs, max_steps=1)
    assert [f.code for f in diag.findings] == ["loss_unreachable"]
    explicit = TrainingDiagnostics(checks=["initial_loss"], verbose=False)
    with pytest.raises(ValueError, match=r"self.criterion = nn.CrossEntropyLoss\(\)"):
        fit(NoLossModule(), ZooData(), trainer_kwargs, explicit)
    assert explicit.history == []  # failed in setup: nothing trained
    with pytest.raises(ValueError, match="has no such loss module; its modules: \\['net'\\]"):
        fit(NoLossModule(), ZooData(), trainer_kwargs, TrainingDiagnostics(loss_attribute="loss"))


def test_checks_selects(trainer_kwargs):
    module, data = setup_by_name("all_zero_init")[1](0)
    diag = TrainingDiagnostics(checks=["inputs"], verbose=False)
    fit(module, data, trainer_kwargs, diag, max_steps=3)
    assert diag.findings == [] and "grad_norm" not in diag.history[0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"checks": ["gradient"]}, ValueError, r"`checks` may contain \['activations'.*'gradient'"),
        (
            {"every_n_steps": 0},
            ValueError,
            "`every_n_steps` must be an int >= 1, but got every_n_steps=0",
        ),
        ({"every_n_steps": 2.5}, TypeError, "`every_n_steps` must be an int"),
        ({"first_steps": -1}, ValueError, "`first_steps` must be an int >= 0"),
        (
            {"on_error": "explode"},
            ValueError,
            r"`on_error` must be one of \['warn', 'raise', 'stop'\]",
        ),
        (
            {"on_error": {"fatal": "stop"}},
            ValueError,
            r"`on_error` may contain \['error', 'info', 'warning'\], but got unknown \['fatal'\]",
        ),
        ({"on_error": {"error": "boom"}}, ValueError, r"`on_error\['error'\]` must be one of"),
        (
            {"thresholds": {"dead_error": 0.0}},
            ValueError,
            r"thresholds\['dead_error'\]` must be a number > 0 and <= 1",
        ),
        (
            {"thresholds": {"dead": 0.5}},
            ValueError,
            r"`thresholds` may contain .*'dead_error'.* unknown \['dead'\]",
        ),
        ({"thresholds": {"dead_warning": 0.9, "dead_error": 0.5}}, ValueError, "must be <="),
        ({"num_classes": 0}, ValueError, "`num_classes` must be an int >= 1"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainingDiagnostics(**kwargs)
