"""GradientClipping edge cases: argument boundaries, the 1e-6 terms at small gradient norms,
what is logged and when, parameter groups added during training, AMP and non-finite steps."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from test_gradient_clipping import GradRecorder, Net, TwoOptimizers, clipped_copy
from timm.utils.agc import adaptive_clip_grad
from torch import nn
from torch.nn.utils import clip_grad_norm_, clip_grads_with_norm_, get_total_norm
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune.callbacks import GradientClipping
from lightning_tune.callbacks.gradient_clipping import unitwise_norm

# The Lightning namespace under test, set per test by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")


def fit(trainer_kwargs, clip, module, steps=4, **kwargs):
    """Train `module` for `steps` steps with recorders before and after `clip`."""
    before, after = GradRecorder(), GradRecorder()
    trainer = pl.Trainer(
        callbacks=[before, clip, after], max_steps=steps, **{**trainer_kwargs, **kwargs}
    )
    trainer.fit(module)
    return trainer, before, after


def total(grads: dict[str, torch.Tensor], norm_type: float = 2.0) -> float:
    return float(get_total_norm(list(grads.values()), norm_type))


class LogSpy:
    """LightningModule mixin: records every ``self.log(name, value)`` as (global_step, value)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.logged: dict[str, list[tuple[int, float]]] = {}

    def log(self, name, value, *args, **kwargs):
        self.logged.setdefault(name, []).append((self.global_step, float(value)))
        return super().log(name, value, *args, **kwargs)


class SpyNet(LogSpy, Net):
    pass


class SmallNet(LogSpy, Net):
    """Net with its loss scaled by 1e-5: total gradient norm ~1.6e-3, so the 1e-6 added to
    norms (as torch does) changes results by ~1e-3 relative, far above float32 rounding."""

    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx) * 1e-5


# ------------------------------------------------------------------------------ arguments
def test_unitwise_norm_of_a_vector_is_its_whole_norm_as_a_scalar():
    assert unitwise_norm(torch.tensor([3.0, 4.0])).shape == ()
    assert float(unitwise_norm(torch.tensor([3.0, 4.0]))) == 5.0
    assert unitwise_norm(torch.tensor([[3.0, 4.0]])).shape == (1, 1)


@pytest.mark.parametrize(
    ("kwargs", "attribute", "value"),
    [
        ({"history_size": 1}, "history_size", 1),
        ({"log_every_n_steps": 0}, "log_every_n_steps", 0),
        ({"max_consecutive_skips": 1}, "max_consecutive_skips", 1),
        ({"mode": "auto", "percentile": 100}, "percentile", 100),
        ({"mode": "auto", "percentile": 0.5}, "percentile", 0.5),
    ],
)
def test_boundary_arguments_are_accepted(kwargs, attribute, value):
    assert getattr(GradientClipping(**kwargs), attribute) == value


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"history_size": True}, TypeError, r"`history_size` must be an int, but got history_"),
        ({"history_size": 2.0}, TypeError, r"`history_size` must be an int, but got"),
        ({"log_every_n_steps": False}, TypeError, r"`log_every_n_steps` must be an int, but"),
        ({"log_every_n_steps": -1}, ValueError, r"`log_every_n_steps` must be an int >= 0"),
        ({"max_consecutive_skips": 1.5}, TypeError, r"`max_consecutive_skips` must be an int,"),
    ],
)
def test_count_arguments_refuse_bools_floats_and_negatives(kwargs, error, match):
    with pytest.raises(error, match=match):
        GradientClipping(**kwargs)


def test_load_state_dict_defaults_missing_counters_to_zero():
    clip = GradientClipping()
    clip.skipped_steps, clip.consecutive_skips = 3, 2
    clip.load_state_dict({"history": {}})  # e.g. a checkpoint written without the counters
    assert (clip.skipped_steps, clip.consecutive_skips) == (0, 0)


# ------------------------------------------------------------------------------ small norms
@pytest.mark.parametrize("max_norm", ["below", "equal"])
def test_norm_mode_matches_torch_for_small_gradients(trainer_kwargs, max_norm):
    if max_norm == "equal":  # max_norm == the first step's norm: torch still scales (1e-6)
        reference = GradientClipping(max_norm=1e6)
        fit(trainer_kwargs, reference, SmallNet(), steps=1)
        limit = reference.last_norm
    else:
        limit = 5e-4
    _, before, after = fit(trainer_kwargs, GradientClipping(max_norm=limit), SmallNet())
    assert 1e-4 < total(before.grads[0]) < 1e-2
    for step, (raw, got) in enumerate(zip(before.grads, after.grads)):
        expected = clipped_copy(raw, clip_grad_norm_, limit)
        if step == 0 or max_norm == "below":  # the test really clips (by ~1e-3 when equal)
            assert not torch.equal(expected["body.weight"], raw["body.weight"])
        for name in raw:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=0)


def test_auto_mode_matches_torch_for_small_gradients(trainer_kwargs):
    # the first step's threshold is its own norm: scaled by norm / (norm + 1e-6), as torch does
    clip = GradientClipping(mode="auto", percentile=25, history_size=3)
    _, before, after = fit(trainer_kwargs, clip, SmallNet(), steps=5)
    norms = [total(g) for g in before.grads]
    for step, raw in enumerate(before.grads):
        threshold = float(torch.quantile(torch.tensor(norms[max(0, step - 2) : step + 1]), 0.25))
        expected = clipped_copy(raw, clip_grads_with_norm_, threshold, torch.tensor(norms[step]))
        for name in raw:
            torch.testing.assert_close(after.grads[step][name], expected[name], rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "norm", "max_norm": 0.5},
        {"mode": "auto", "percentile": 25, "history_size": 3},
        {"mode": "value", "clip_value": 0.05},
        {"mode": "adaptive", "clip_factor": 0.01},
    ],
    ids=lambda kwargs: kwargs["mode"],
)
def test_finite_gradients_are_clipped_the_same_with_or_without_skipping(trainer_kwargs, kwargs):
    # skip_non_finite only decides what happens to a NaN/inf step: with finite gradients every
    # mode clips exactly the same either way
    runs = {}
    for skip in (True, False):
        clip = GradientClipping(**kwargs, skip_non_finite=skip)
        _, before, after = fit(trainer_kwargs, clip, Net(), steps=5)
        runs[skip] = (before.grads, after.grads)
    assert any(
        not torch.equal(a[name], b[name])
        for a, b in zip(*runs[True])
        for name in a  # the test really clips
    )
    for grads_skip, grads_kept in zip(runs[True], runs[False]):
        for a, b in zip(grads_skip, grads_kept):
            for name in a:
                torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_norm_mode_without_skipping_reads_no_norm_back_to_the_host(trainer_kwargs):
    # nothing needs the norm as a Python float: it stays a tensor (no device sync per step)
    clip = GradientClipping(mode="norm", max_norm=0.5, skip_non_finite=False)
    fit(trainer_kwargs, clip, Net(), steps=2)
    assert isinstance(clip.last_norm, torch.Tensor)
    clip = GradientClipping(mode="norm", max_norm=0.5)  # skipping needs the value
    fit(trainer_kwargs, clip, Net(), steps=2)
    assert isinstance(clip.last_norm, float)


def test_adaptive_matches_timm_for_small_gradients(trainer_kwargs):
    # unit gradient norms < 1 (and > the limit): the division uses them as they are
    clip = GradientClipping(mode="adaptive", clip_factor=1e-4, exclude=())
    _, before, after = fit(trainer_kwargs, clip, SmallNet(), steps=2)
    for params, raw, got in zip(before.params, before.grads, after.grads):
        copies = {n: nn.Parameter(params[n].clone()) for n in raw}
        for n, p in copies.items():
            p.grad = raw[n].clone()
        adaptive_clip_grad(list(copies.values()), clip_factor=1e-4, eps=1e-3)
        for name in raw:
            assert not torch.equal(copies[name].grad, raw[name])  # every unit is clipped
            torch.testing.assert_close(got[name], copies[name].grad, rtol=1e-6, atol=0)


class OneUnit(dual.LightningModule):
    """One zero bias whose gradient is exactly `grad` at every step (lr 0: it stays zero)."""

    def __init__(self, grad: torch.Tensor) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.grad = grad

    def training_step(self, batch, batch_idx):
        return (self.bias * self.grad).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1)


def test_adaptive_clips_a_unit_exactly_at_a_tiny_limit_as_timm(trainer_kwargs):
    # gradient norm == limit == eps * clip_factor (< 1e-6): timm's `grad_norm < max_norm` is
    # false, so the unit takes the clipped value grad * limit / 1e-6
    limit = torch.zeros(1).clamp_(min=1e-3).mul_(5e-4)  # as computed for a zero parameter
    clip = GradientClipping(mode="adaptive", clip_factor=5e-4, eps=1e-3)
    _, before, after = fit(trainer_kwargs, clip, OneUnit(limit.clone()), steps=1)
    assert torch.equal(before.grads[0]["bias"], limit)
    reference = nn.Parameter(torch.zeros(1))
    reference.grad = limit.clone()
    adaptive_clip_grad([reference], clip_factor=5e-4, eps=1e-3)
    torch.testing.assert_close(reference.grad, limit * 0.5)  # limit / 1e-6 ~ 0.5
    torch.testing.assert_close(after.grads[0]["bias"], reference.grad, rtol=0, atol=0)


# ------------------------------------------------------------------------------ logging
@pytest.mark.parametrize(
    ("make", "kwargs"),
    [
        (SmallNet, {"max_norm": 1e-3}),  # clipped: after = max_norm * norm / (norm + 1e-6)
        (SmallNet, {"max_norm": 1e6}),  # not clipped: after == before
        (SpyNet, {"mode": "value", "clip_value": 0.3}),
        (SpyNet, {"mode": "adaptive", "clip_factor": 0.02}),
        (SpyNet, {"mode": "auto", "percentile": 25, "history_size": 3}),
    ],
    ids=["norm-clipped", "norm-unclipped", "value", "adaptive", "auto"],
)
def test_logged_norms_are_those_of_the_gradients_before_and_after(trainer_kwargs, make, kwargs):
    module = make()
    clip = GradientClipping(log_every_n_steps=1, **kwargs)
    _, before, after = fit(trainer_kwargs, clip, module, steps=5)
    logged_before, logged_after = (
        module.logged["grad_norm/before"],
        module.logged["grad_norm/after"],
    )
    assert [s for s, _ in logged_after] == list(range(5))
    clipped = 0
    for (_, got_before), (_, got_after), raw, out in zip(
        logged_before, logged_after, before.grads, after.grads
    ):
        assert got_before == pytest.approx(total(raw), rel=1e-6)
        assert got_after == pytest.approx(total(out), rel=1e-5)
        clipped += got_after < got_before * (1 - 1e-4)
    if kwargs.get("max_norm") == 1e6:
        assert clipped == 0
    else:
        assert clipped > 0  # the test really clips


@pytest.mark.parametrize(("every", "steps"), [(0, []), (3, [0, 3, 6])])
def test_log_every_n_steps(trainer_kwargs, every, steps):
    module = SpyNet()
    fit(trainer_kwargs, GradientClipping(log_every_n_steps=every), module, steps=7)
    assert [s for s, _ in module.logged.get("grad_norm/before", [])] == steps
    assert [s for s, _ in module.logged.get("grad_norm/after", [])] == steps


def test_norms_are_logged_per_step_only(trainer_kwargs):
    # one epoch of 4 batches: an epoch aggregate would add `_step` / `_epoch` names
    trainer, _, _ = fit(trainer_kwargs, GradientClipping(log_every_n_steps=1), SpyNet())
    assert set(trainer.logged_metrics) == {"grad_norm/before", "grad_norm/after"}
    assert set(trainer.callback_metrics) == {"grad_norm/before", "grad_norm/after"}


class SpyTwoOptimizers(LogSpy, TwoOptimizers):
    pass


def test_two_optimizers_log_each_their_own_norm(trainer_kwargs):
    module = SpyTwoOptimizers()
    _, before, _ = fit(trainer_kwargs, GradientClipping(log_every_n_steps=1), module)
    # calls alternate: optimizer 0 (body), optimizer 1 (head)
    for i, suffix, prefix in [(0, "_0", "body."), (1, "_1", "head.")]:
        values = [v for _, v in module.logged[f"grad_norm/before{suffix}"]]
        expected = [
            total({n: g for n, g in raw.items() if n.startswith(prefix)})
            for raw in before.grads[i::2]
        ]
        assert values == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------ parameters
class NamedHead(Net):
    classifier_parameter_names = ("head.weight", "head.bias")


def test_named_head_is_clipped_outside_adaptive_mode(trainer_kwargs):
    _, before, after = fit(trainer_kwargs, GradientClipping(max_norm=0.5), NamedHead())
    for raw, got in zip(before.grads, after.grads):
        expected = clipped_copy(raw, clip_grad_norm_, 0.5)
        for name in raw:
            torch.testing.assert_close(got[name], expected[name])


def test_exclude_matching_nothing_warns(trainer_kwargs):
    with pytest.warns(UserWarning, match=r"exclude=\['nothing\.\*'\]\) matches no parameter"):
        fit(trainer_kwargs, GradientClipping(exclude=["nothing.*"]), Net(), steps=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*matches no parameter")
        _, before, after = fit(trainer_kwargs, GradientClipping(exclude=["head.*"]), Net())
    assert torch.equal(after.grads[0]["head.weight"], before.grads[0]["head.weight"])


class Unfreezing(Net):
    """The optimizer starts with the body only; the head's group is added at step 2."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.body.parameters(), lr=0.01)

    def training_step(self, batch, batch_idx):
        optimizer = self.trainer.optimizers[0]
        if self.global_step == 2 and len(optimizer.param_groups) == 1:
            optimizer.add_param_group({"params": list(self.head.parameters())})
        return super().training_step(batch, batch_idx)


def test_parameter_group_added_during_training_is_clipped(trainer_kwargs):
    _, before, after = fit(trainer_kwargs, GradientClipping(max_norm=0.5), Unfreezing())
    for step, (raw, got) in enumerate(zip(before.grads, after.grads)):
        clipped = [n for n in raw if step >= 2 or n.startswith("body.")]
        expected = clipped_copy({n: raw[n] for n in clipped}, clip_grad_norm_, 0.5)
        assert len(expected) == (4 if step >= 2 else 2)
        for name in raw:
            torch.testing.assert_close(got[name], expected.get(name, raw[name]))


# ------------------------------------------------------------------------------ non-finite
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_non_finite_step_under_amp(trainer_kwargs, precision):
    # fp16: the grad scaler skips the step and lowers its scale; nothing counted or warned.
    # bf16 (no scaler): GradientClipping skips the step itself.
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0) if precision == "16-mixed" else None
    plugin = pl.plugins.precision.MixedPrecision(precision, "cpu", scaler=scaler)
    module = Net(nan_at={1})
    clip = GradientClipping(max_norm=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(trainer_kwargs, clip, module, steps=3, plugins=[plugin])
    ours = [w for w in caught if "GradientClipping: non-finite" in str(w.message)]
    assert all(torch.isfinite(p).all() for p in module.parameters())
    if scaler is not None:
        assert scaler.get_scale() == 4.0
        assert clip.skipped_steps == 0 and not ours
    else:
        assert clip.skipped_steps == 1 and len(ours) == 1


def test_first_non_finite_step_is_one_in_a_row(trainer_kwargs):
    clip = GradientClipping(max_consecutive_skips=2)
    with pytest.warns(UserWarning, match=r"global step 0 .*\(1 in a row, 1 in total\)"):
        fit(trainer_kwargs, clip, Net(nan_at={0}), steps=2)
    assert (clip.skipped_steps, clip.consecutive_skips) == (1, 0)


class Extra(Net):
    """Net with `extra` more one-element parameters (named extra.0, extra.1, ...)."""

    def __init__(self, extra: int) -> None:
        super().__init__(nan_at={0})
        self.extra = nn.ParameterList(nn.Parameter(torch.zeros(1)) for _ in range(extra))

    def forward(self, x):
        return super().forward(x) + sum(self.extra)


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        (1, "body.weight, body.bias, head.weight, head.bias, extra.0;"),
        (2, "body.weight, body.bias, head.weight, head.bias, extra.0 and 1 more;"),
    ],
)
def test_non_finite_warning_names_at_most_five_parameters(trainer_kwargs, extra, shown):
    with pytest.warns(UserWarning, match=re.escape(f"in {shown} skipping")):
        fit(trainer_kwargs, GradientClipping(), Extra(extra), steps=1)
