"""The checks as plain functions, on both sides of their thresholds."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_tune.diagnostics import CHECKS, CODES, Finding, format_findings
from lightning_tune.diagnostics import checks as C

TH = C.check_thresholds(None)


def test_every_code_belongs_to_a_check():
    callback_codes = sorted(code for code, (check, _, _) in CODES.items() if check != "doctor")
    assert sorted({code for codes in CHECKS.values() for code in codes}) == callback_codes
    assert "doctor" not in CHECKS and CODES["overfit_failed"][0] == "doctor"


@pytest.mark.parametrize(("loss", "fires"), [(2.3, False), (4.5, False), (4.7, True), (1.1, True)])
def test_initial_loss_against_ln_c(loss, fires):
    logits = torch.randn(4, 10)
    found = [f.code for f in C.initial_loss_findings(loss, logits, False, 0, TH)]
    assert ("initial_loss" in found) is fires


def test_initial_loss_binary_uses_ln_2():
    found = C.initial_loss_findings(3.0, torch.randn(4), True, 0, TH)
    assert found[0].expected.startswith(f"~{math.log(2):.3g}")


def test_input_scale_boundary_and_constant_channel():
    x = torch.randn(8, 3, 4, 4).clamp(-3, 3)
    assert C.input_findings(x, None, None, 0, TH) == []
    x[:, 1] = 0.5
    found = C.input_findings(x, None, None, 0, TH)
    assert [(f.code, f.layer) for f in found] == [("inputs_constant_channel", "channel 1")]
    big = torch.full((8, 4), 21.0) * torch.randn(8, 4).sign()
    assert [f.code for f in C.input_findings(big, None, None, 0, TH)] == ["inputs_unscaled"]


def test_labels_range():
    assert C.input_findings(None, torch.tensor([0, 9]), 10, 0, TH) == []
    assert C.input_findings(None, torch.tensor([-1, 3]), None, 0, TH)[0].value == -1


def test_gradients_exploding_ratio_and_norm():
    ratio = C.gradient_findings([("a", 2e3), ("b", 1.0)], 0, {**TH, "grad_exploding_norm": 1e4})
    assert [(f.code, f.severity) for f in ratio] == [("grad_exploding", "warning")]
    norm = C.gradient_findings([("a", 10.0), ("b", 2e3)], 0, TH)
    assert [(f.code, f.severity, f.layer) for f in norm] == [("grad_exploding", "error", "b")]
    assert C.gradient_findings([("a", 0.5), ("b", 1.0)], 0, TH) == []
    nan = C.gradient_findings([("a", math.nan), ("b", math.nan), ("c", 1.0)], 0, TH)
    assert [(f.code, f.layer) for f in nan] == [("nonfinite_grad", "b")]


def test_update_ratio_needs_three_values_and_uses_the_median():
    assert C.update_ratio_findings({"g": [1.0, 1.0]}, 0, TH) == []
    assert C.update_ratio_findings({"g": [1.0, 1e-3, 1e-3]}, 0, TH) == []
    assert C.update_ratio_findings({"g": [1.0, 1.0, 1e-3]}, 0, TH)[0].code == "update_ratio_high"


def test_dead_units_warning_then_error():
    found = C.activation_findings({"a": 0.49, "b": 0.5, "c": 0.99}, {}, 0, TH)
    assert [(f.layer, f.severity) for f in found] == [("b", "warning"), ("c", "error")]


def test_loss_curve_grace_window_diverging_and_oscillating():
    flat = [(s, 2.3) for s in range(0, 100, 20)]
    assert C.loss_curve_findings(flat, 80, TH) == []  # inside the grace window
    assert C.loss_curve_findings([*flat, (100, 2.3)], 100, TH)[0].code == "loss_flat"
    falling = [(0, 2.3), (20, 2.0), (40, 1.5), (100, 1.2)]
    assert C.loss_curve_findings(falling, 100, TH) == []
    diverging = [(0, 2.3), (1, 5.0), (2, 6.0), (3, 7.0)]
    assert C.loss_curve_findings(diverging, 3, TH)[0].code == "loss_diverging"
    swings = [(i, 2.0 if i % 2 else 0.5) for i in range(9)]
    assert C.loss_curve_findings([(0, 2.3), *swings[1:]], 8, TH) == []  # < 9 after the first
    assert C.loss_curve_findings([(-1, 2.3), *swings], 8, TH)[0].code == "loss_oscillating"


def test_findings_roundtrip_table_and_bad_values():
    f = Finding("dead_units", "error", 3, layer="net.1", value=1.0, expected="< 0.5")
    assert Finding.from_dict({**f.to_dict(), "future_key": 1}) == f
    table = format_findings([Finding("initial_loss", "warning", 0), f])
    assert table.splitlines()[1].startswith("error     dead_units")
    assert format_findings([Finding("initial_loss", "warning", 0)], "error").startswith(
        "no findings"
    )
    with pytest.raises(
        ValueError, match=r"`code` must be one of \[.*'dead_units'.*\], but got code='dead'"
    ):
        Finding("dead", "error", 0)
    with pytest.raises(ValueError, match="`severity` must be one of"):
        Finding("dead_units", "fatal", 0)


def test_thresholds_bad_input():
    with pytest.raises(TypeError, match="`thresholds` must be a mapping"):
        C.check_thresholds([0.5])
    with pytest.raises(TypeError, match=r"`thresholds\['grace_steps'\]` must be a number"):
        C.check_thresholds({"grace_steps": "10"})
