"""GradientClipping: parity with torch/timm, AutoClip, non-finite skips, AMP, manual opt, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from timm.utils.agc import adaptive_clip_grad
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.callbacks import GradientClipping

# The Lightning namespace under test (pytorch_lightning or lightning.pytorch): every test
# runs once per installed package, with `pl` set by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")


class Net(dual.LightningModule):
    """Two layers on a regression with big targets, so gradients are large; NaN loss on demand."""

    def __init__(self, nan_at: set[int] | None = None, optimizer: str = "sgd") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(6, 5)
        self.head = nn.Linear(5, 1)
        self.nan_at = nan_at or set()
        self.optimizer = optimizer

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        if self.global_step in self.nan_at:
            loss = loss * math.nan
        return loss

    def configure_optimizers(self):
        if self.optimizer == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=0.01, weight_decay=0.1)
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 6, generator=g)
        return DataLoader(TensorDataset(x, 50 * x.sum(1, keepdim=True)), batch_size=8)


class GradRecorder(dual.Callback):
    """Placed before / after GradientClipping in the callback list: sees grads before / after."""

    def __init__(self) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []
        self.params: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append(
            {n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None}
        )
        self.params.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})


def run(trainer_kwargs, clip, module=None, steps=4, **kwargs):
    module = module or Net()
    before, after = GradRecorder(), GradRecorder()
    trainer = pl.Trainer(
        callbacks=[before, clip, after], max_steps=steps, **{**trainer_kwargs, **kwargs}
    )
    trainer.fit(module)
    return trainer, module, before, after


def clipped_copy(grads: dict[str, torch.Tensor], fn, *args, **kwargs) -> dict[str, torch.Tensor]:
    params = {n: nn.Parameter(torch.zeros_like(g)) for n, g in grads.items()}
    for n, p in params.items():
        p.grad = grads[n].clone()
    fn(list(params.values()), *args, **kwargs)
    return {n: p.grad for n, p in params.items()}


class DeepNet(Net):
    """Net with 10 more layers: more gradient tensors than the per-tensor path takes."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 5), *(nn.Linear(5, 5) for _ in range(10)))


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf])
@pytest.mark.parametrize(("make", "tensors"), [(Net, 4), (DeepNet, 24)])
@pytest.mark.parametrize("skip_non_finite", [True, False])  # False: the norm is never read
def test_norm_mode_matches_torch(trainer_kwargs, norm_type, make, tensors, skip_non_finite):
    # 4 tensors: norms and scaling tensor by tensor; 24: torch's foreach helpers
    module = make()
    assert len(list(module.parameters())) == tensors
    clip = GradientClipping(max_norm=0.5, norm_type=norm_type, skip_non_finite=skip_non_finite)
    _, _, before, after = run(trainer_kwargs, clip, module=module)
    for raw, got in zip(before.grads, after.grads):
        total = torch.nn.utils.get_total_norm(list(raw.values()), norm_type)
        assert total > 0.5  # the test really clips
        expected = clipped_copy(raw, torch.nn.utils.clip_grad_norm_, 0.5, norm_type)
        for name in raw:
            torch.testing.assert_close(got[name], expected[name])


@pytest.mark.parametrize(("make", "skip_non_finite"), [(Net, True), (Net, False), (DeepNet, False)])
def test_norm_mode_leaves_gradients_below_max_norm_untouched(trainer_kwargs, make, skip_non_finite):
    clip = GradientClipping(max_norm=1e6, skip_non_finite=skip_non_finite)
    _, _, before, after = run(trainer_kwargs, clip, module=make())
    for raw, got in zip(before.grads, after.grads):
        for name in raw:
            torch.testing.assert_close(got[name], raw[name], rtol=0, atol=0)


def test_value_mode_matches_torch(trainer_kwargs):
    _, _, before, after = run(trainer_kwargs, GradientClipping(mode="value", clip_value=0.3))
    for raw, got in zip(before.grads, after.grads):
        assert max(g.abs().max() for g in raw.values()) > 0.3
        expected = clipped_copy(raw, torch.nn.utils.clip_grad_value_, 0.3)
        for name in raw:
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_adaptive_matches_timm_agc(trainer_kwargs):
    clip = GradientClipping(mode="adaptive", clip_factor=0.02, exclude=())
    _, _, before, after = run(trainer_kwargs, clip)
    for params, raw, got in zip(before.params, before.grads, after.grads):
        copies = {n: nn.Parameter(params[n].clone()) for n in raw}
        for n, p in copies.items():
            p.grad = raw[n].clone()
        adaptive_clip_grad(list(copies.values()), clip_factor=0.02, eps=1e-3)
        assert any(not torch.equal(raw[n], copies[n].grad) for n in raw)  # AGC did clip
        for name in raw:
            torch.testing.assert_close(got[name], copies[name].grad, rtol=1e-6, atol=0)


def test_adaptive_leaves_timm_classifier_head_alone(trainer_kwargs):
    module = TimmClassifier("test_resnet", num_classes=3, lr=0.05)
    dm = DigitsDataModule(image_size=16, batch_size=16, classes=[0, 1, 2])
    before, after = GradRecorder(), GradRecorder()
    clip = GradientClipping(mode="adaptive", clip_factor=1e-4)
    trainer = pl.Trainer(
        callbacks=[before, clip, after], max_steps=1, limit_val_batches=0, **trainer_kwargs
    )
    trainer.fit(module, datamodule=dm)
    head = set(module.classifier_parameter_names)
    assert head
    clipped = 0
    for name, grad in before.grads[0].items():
        same = torch.equal(grad, after.grads[0][name])
        if name in head:
            assert same, name
        elif grad.abs().sum() > 0:  # zero-initialised residual branches have zero grads
            assert not same, name
            clipped += 1
    assert clipped > 10


def test_auto_mode_clips_at_percentile_of_history(trainer_kwargs):
    clip = GradientClipping(mode="auto", percentile=25, history_size=3, log_every_n_steps=1)
    _, _, before, after = run(trainer_kwargs, clip, steps=6)
    norms = [float(torch.nn.utils.get_total_norm(list(g.values()))) for g in before.grads]
    assert norms[0] == pytest.approx(
        float(torch.nn.utils.get_total_norm(list(after.grads[0].values())))
    )  # a single value is its own percentile: no clipping
    for step, raw in enumerate(before.grads):
        threshold = float(np.percentile(norms[max(0, step - 2) : step + 1], 25))
        expected = clipped_copy(
            raw, torch.nn.utils.clip_grads_with_norm_, threshold, torch.tensor(norms[step])
        )
        for name in raw:
            torch.testing.assert_close(after.grads[step][name], expected[name])
    assert list(clip.state_dict()["history"]["0"]) == pytest.approx(norms[-3:])


def test_logs_norm_before_and_after(trainer_kwargs):
    clip = GradientClipping(max_norm=0.5, log_every_n_steps=1)
    trainer, _, before, _ = run(trainer_kwargs, clip)
    metrics = trainer.callback_metrics
    last = float(torch.nn.utils.get_total_norm(list(before.grads[-1].values())))
    assert float(metrics["grad_norm/before"]) == pytest.approx(last)
    assert float(metrics["grad_norm/after"]) == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_non_finite_step_is_skipped_and_leaves_weights_unchanged(trainer_kwargs, optimizer):
    module = Net(nan_at={2}, optimizer=optimizer)
    clip = GradientClipping(max_norm=1.0)
    with pytest.warns(UserWarning, match=r"non-finite gradients .* global step 2 .*skipping"):
        _, module, before, _ = run(trainer_kwargs, clip, module=module)
    assert clip.skipped_steps == 1 and clip.consecutive_skips == 0
    # weights seen before step 2 == weights before step 3: step 2 changed nothing (no decay,
    # no momentum either); step 3 trains again
    for name, value in before.params[2].items():
        torch.testing.assert_close(before.params[3][name], value, rtol=0, atol=0)
    assert not torch.equal(before.params[1]["body.weight"], before.params[2]["body.weight"])
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_consecutive_non_finite_steps_raise(trainer_kwargs):
    module = Net(nan_at={1, 2, 3, 4, 5})
    clip = GradientClipping(max_consecutive_skips=3)
    with (
        pytest.warns(UserWarning, match="non-finite"),
        pytest.raises(
            RuntimeError,
            match=r"3 consecutive optimizer steps had non-finite "
            r"gradients .*body.weight",
        ),
    ):
        run(trainer_kwargs, clip, module=module, steps=8)
    assert clip.skipped_steps == 3


def test_refuses_trainer_gradient_clip_val(trainer_kwargs):
    with pytest.raises(
        ValueError, match=r"cannot run together with `Trainer\(gradient_clip_val=0.5"
    ):
        run(trainer_kwargs, GradientClipping(), gradient_clip_val=0.5)


class TwoOptimizers(Net):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        for opt in self.optimizers():
            opt.zero_grad()
        loss = nn.functional.mse_loss(self(x), y)
        self.manual_backward(loss)
        for opt in self.optimizers():
            opt.step()

    def configure_optimizers(self):
        return (
            torch.optim.SGD(self.body.parameters(), lr=0.01),
            torch.optim.SGD(self.head.parameters(), lr=0.01),
        )


def test_manual_optimization_with_two_optimizers(trainer_kwargs):
    clip = GradientClipping(max_norm=0.5, log_every_n_steps=1)
    trainer, _, before, after = run(trainer_kwargs, clip, module=TwoOptimizers(), steps=4)
    # each optimizer's own parameters are clipped to 0.5 separately, the others left alone
    assert len(before.grads) == 4
    for call, (raw, got) in enumerate(zip(before.grads, after.grads)):
        mine = "body." if call % 2 == 0 else "head."
        names = [n for n in raw if n.startswith(mine)]
        expected = clipped_copy({n: raw[n] for n in names}, torch.nn.utils.clip_grad_norm_, 0.5)
        for name in raw:
            torch.testing.assert_close(got[name], expected.get(name, raw[name]))
    assert {"grad_norm/before_0", "grad_norm/before_1"} <= set(trainer.callback_metrics)


def test_amp_clips_unscaled_gradients(trainer_kwargs):
    reference = GradientClipping(max_norm=1e6)
    run(trainer_kwargs, reference, steps=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    clip = GradientClipping(max_norm=0.5)
    _, _, before, after = run(
        trainer_kwargs,
        clip,
        steps=1,
        plugins=[pl.plugins.precision.MixedPrecision("16-mixed", "cpu", scaler=scaler)],
    )
    assert scaler.get_scale() == 8.0  # the step was not skipped
    assert clip.last_norm == pytest.approx(reference.last_norm, rel=0.02)  # not 8x
    expected = clipped_copy(before.grads[0], torch.nn.utils.clip_grad_norm_, 0.5)
    for name, grad in after.grads[0].items():
        torch.testing.assert_close(grad, expected[name])


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_auto_mode_resume_continues_exactly(trainer_kwargs, tmp_path):
    kwargs = {**trainer_kwargs, "max_epochs": 3}

    def clip():
        return GradientClipping(mode="auto", percentile=30, history_size=5)

    every = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)
    straight, full = Net(), clip()
    pl.Trainer(callbacks=[full, every], **{**kwargs, "enable_checkpointing": True}).fit(straight)
    ckpt = next(tmp_path.glob("epoch=0-*.ckpt"))
    resumed_module, resumed = Net(), clip()
    pl.Trainer(callbacks=[resumed], **kwargs).fit(resumed_module, ckpt_path=ckpt)
    assert resumed.state_dict() == full.state_dict()
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed_module.state_dict()[name], value, rtol=0, atol=0)
    # the history matters: the same resume without it ends elsewhere
    forgetful_module, forgetful = Net(), Forgetful(mode="auto", percentile=30, history_size=5)
    pl.Trainer(callbacks=[forgetful], **kwargs).fit(forgetful_module, ckpt_path=ckpt)
    assert not torch.equal(forgetful_module.body.weight, straight.body.weight)


class Forgetful(GradientClipping):
    def load_state_dict(self, state_dict):
        pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_norm": 0}, ValueError, r"`max_norm` must be a number > 0, but got max_norm=0"),
        ({"max_norm": -1.0}, ValueError, r"`max_norm` must be a number > 0"),
        ({"clip_value": 0.0}, ValueError, r"`clip_value` must be a number > 0"),
        ({"clip_factor": -0.01}, ValueError, r"`clip_factor` must be a number > 0"),
        ({"max_norm": "1"}, TypeError, r"`max_norm` must be a number, but got max_norm='1'"),
        (
            {"mode": "agc"},
            ValueError,
            r"`mode` must be one of \['adaptive', 'auto', 'norm', 'value'\]",
        ),
        (
            {"percentile": 0},
            ValueError,
            r"`percentile` must be a number > 0 and <= 100, but got percentile=0",
        ),
        ({"percentile": 101}, ValueError, r"`percentile` must be a number > 0 and <= 100"),
        ({"history_size": 0}, ValueError, r"`history_size` must be an int >= 1"),
        ({"max_consecutive_skips": 0}, ValueError, r"`max_consecutive_skips` must be an int >= 1"),
        ({"exclude": "head.*"}, TypeError, r"`exclude` must be a sequence of parameter-name"),
        ({"norm_type": 0}, ValueError, r"`norm_type` must be a number > 0"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        GradientClipping(**kwargs)
