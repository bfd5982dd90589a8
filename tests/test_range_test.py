"""The LR range test: its suggestion against the best constant LR of a known problem."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.range_test import centred_average, lr_range_test, suggest_lr

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
TRUE_W = torch.tensor([1.0, -2.0, 0.5, 3.0])


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(512, 4, generator=torch.Generator().manual_seed(0))
    return x, x @ TRUE_W


class Quadratic(pl.LightningModule):
    """Least squares on a linear model: a quadratic loss with a known curvature."""

    def __init__(self, optimizer: str) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.optimizer = optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((x @ self.w - y) ** 2).mean()

    def configure_optimizers(self):
        return OPTIMIZERS[self.optimizer](self.parameters(), lr=0.1)


def _final_loss(optimizer: str, lr: float, steps: int = 20) -> float:
    x, y = _data()
    w = torch.nn.Parameter(torch.zeros(4))
    opt = OPTIMIZERS[optimizer]([w], lr=lr)
    for step in range(steps):
        rows = slice((step * 64) % 512, (step * 64) % 512 + 64)
        loss = ((x[rows] @ w - y[rows]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss = float(((x @ w - y) ** 2).mean())
    return loss if loss == loss else float("inf")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_suggestion_is_within_3x_of_the_best_constant_lr(optimizer, trainer_kwargs):
    candidates = [10 ** (k / 8) for k in range(-32, 9)]
    losses = [_final_loss(optimizer, lr) for lr in candidates]
    best = candidates[losses.index(min(losses))]
    x, y = _data()
    module = Quadratic(optimizer)
    result = lr_range_test(
        module,
        train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=64),
        min_lr=1e-4,
        max_lr=10.0,
        num_steps=60,
        **trainer_kwargs,
    )
    assert best / 3 <= result.suggestion <= best * 3, (best, result.suggestion)
    assert torch.equal(module.w, torch.zeros(4))  # the module itself is untouched
    assert result.lrs[0] == pytest.approx(1e-4)
    assert len(result.lrs) == len(result.losses) <= 60


def test_divergence_stops_the_ramp_early(trainer_kwargs):
    x, y = _data()
    result = lr_range_test(
        Quadratic("sgd"),
        train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=64),
        min_lr=1e-3,
        max_lr=1e3,
        num_steps=60,
        **trainer_kwargs,
    )
    assert result.diverged
    assert len(result.lrs) < 60
    assert result.best_loss_lr < 2.0  # SGD diverges above 2 / curvature = 1.0


def test_range_test_on_a_timm_classifier_keeps_its_weights(trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    module = TimmClassifier("test_resnet", num_classes=10)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    result = lr_range_test(module, DigitsDataModule(image_size=16), num_steps=12, **trainer_kwargs)
    assert 1e-6 <= result.suggestion <= 1.0
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_centred_average_and_suggestion():
    assert centred_average([3.0, 3.0, 0.0, 3.0, 3.0], 3) == [3.0, 2.0, 2.0, 2.0, 3.0]
    assert suggest_lr([1e-3, 1e-2, 1e-1], [1.0, 0.5, 2.0], divisor=2) == pytest.approx(5e-3)
    # never below the first LR tried
    assert suggest_lr([1e-3, 1e-2], [0.5, 1.0], divisor=10) == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min_lr": 0.0}, ValueError, r"`min_lr` must be a number > 0, but got min_lr=0.0"),
        ({"max_lr": 1e-7}, ValueError, r"`max_lr` must be a number > 1e-06, but got max_lr=1e-07"),
        ({"num_steps": 2}, ValueError, r"`num_steps` must be an int >= 5, but got num_steps=2"),
        ({"smoothing": 0}, ValueError, r"`smoothing` must be a number > 0 and <= 1"),
        ({"divisor": 0.5}, ValueError, r"`divisor` must be a number >= 1, but got divisor=0.5"),
        ({"num_steps": 5.5}, TypeError, r"`num_steps` must be an int, but got num_steps=5.5"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        lr_range_test(Quadratic("sgd"), DigitsDataModule(image_size=8), **kwargs)


def test_needs_exactly_one_source_of_batches():
    with pytest.raises(
        ValueError, match=r"pass `datamodule` or `train_dataloaders` \(exactly one\)"
    ):
        lr_range_test(Quadratic("sgd"))
    with pytest.raises(ValueError, match="non-empty and of the same length, but got 1 LRs"):
        suggest_lr([1e-3], [])


# ----------------------------------------------------------------- judged on validation data
class Checked(Quadratic):
    """The quadratic, validated on data of the same distribution."""

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", ((x @ self.w - y) ** 2).mean())


class HeldOutDisagrees(Quadratic):
    """Training pulls ``w`` to TRUE_W; held-out data want ``w = 0`` (what it starts at)."""

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", (self.w**2).sum())
        self.log("val_score", -(self.w**2).sum())


def _loaders():
    x, y = _data()
    return {
        "train_dataloaders": DataLoader(TensorDataset(x, y), batch_size=64),
        "val_dataloaders": DataLoader(TensorDataset(x, y), batch_size=512),
    }


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_monitored_suggestion_is_within_3x_of_the_best_constant_lr(optimizer, trainer_kwargs):
    candidates = [10 ** (k / 8) for k in range(-32, 9)]
    losses = [_final_loss(optimizer, lr) for lr in candidates]
    best = candidates[losses.index(min(losses))]
    result = lr_range_test(
        Checked(optimizer),
        **_loaders(),
        min_lr=1e-4,
        max_lr=10.0,
        num_steps=60,
        monitor="val_loss",
        val_every=2,
        **trainer_kwargs,
    )
    assert best / 3 <= result.suggestion <= best * 3, (best, result.suggestion)
    assert result.monitor == "val_loss" and result.mode == "min"
    # one point per validation, at the LR of the step before it
    assert len(result.lrs) == len(result.losses) <= 30
    assert result.lrs[0] == pytest.approx(1e-4 * (10.0 / 1e-4) ** (1 / 59))


def test_the_monitored_curve_not_the_training_loss_decides(trainer_kwargs, lightning_ns):
    """Training keeps improving while held-out data get worse from the first step: the
    monitored test suggests its first LR; the training-loss test a far higher one."""

    class Module(lightning_ns.LightningModule):  # the package under test
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(4))
            self.optimizer = "sgd"

        training_step = Quadratic.training_step
        validation_step = HeldOutDisagrees.validation_step
        configure_optimizers = Quadratic.configure_optimizers

    make = Module
    common = {"min_lr": 1e-3, "max_lr": 1.0, "num_steps": 30, **_loaders(), **trainer_kwargs}
    by_train = lr_range_test(make(), **common)
    by_val = lr_range_test(make(), monitor="val_loss", val_every=3, **common)
    by_score = lr_range_test(make(), monitor="val_score", mode="max", val_every=3, **common)
    assert by_val.suggestion == by_val.lrs[0] == by_val.best_loss_lr
    assert by_train.suggestion > 20 * by_val.suggestion
    assert (by_score.suggestion, by_score.best_loss_lr) == (by_val.suggestion, by_val.lrs[0])
    assert by_score.mode == "max" and by_score.losses[0] > by_score.losses[-1]  # shown as logged
    assert by_val.losses[0] < by_val.losses[-1]


def test_monitored_range_test_on_a_timm_classifier(trainer_kwargs, tmp_path):
    pl.seed_everything(0, verbose=False)
    module = TimmClassifier("test_resnet", num_classes=10)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    result = lr_range_test(
        module,
        DigitsDataModule(image_size=16, batch_size=64),
        num_steps=12,
        monitor="val_loss",
        val_every=3,
        **trainer_kwargs,
    )
    assert result.monitor == "val_loss" and len(result.lrs) == 4
    assert 1e-6 <= result.suggestion <= 1.0
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert result.plot(tmp_path / "range.png").stat().st_size > 0


def test_monitored_range_test_errors(trainer_kwargs):
    common = {"min_lr": 1e-3, "max_lr": 1.0, "num_steps": 6, **_loaders(), **trainer_kwargs}
    with pytest.raises(
        ValueError, match=r"monitor='val_acc'\): the module logged no such .*'val_loss'"
    ):
        lr_range_test(Checked("sgd"), monitor="val_acc", val_every=2, **common)
    with pytest.raises(
        RuntimeError, match=r"validated no step with monitor='val_loss'.*val_every=50"
    ):
        lr_range_test(Checked("sgd"), monitor="val_loss", val_every=50, **common)
    no_val = {**common, "val_dataloaders": None}
    with pytest.raises(RuntimeError, match=r"no validation ran in the ramp's 6 steps.*batches"):
        lr_range_test(Checked("sgd"), monitor="val_loss", val_every=2, **no_val)
    with pytest.raises(
        ValueError, match=r"`mode` must be one of .*'min'.*'max'.*but got mode='low'"
    ):
        lr_range_test(Checked("sgd"), monitor="val_loss", mode="low", **common)
    with pytest.raises(ValueError, match=r"`val_every` must be an int >= 1, but got val_every=0"):
        lr_range_test(Checked("sgd"), monitor="val_loss", val_every=0, **common)
    with pytest.raises(ValueError, match="not both: drop `val_dataloaders`"):
        lr_range_test(
            Checked("sgd"),
            DigitsDataModule(image_size=8),
            val_dataloaders=common["val_dataloaders"],
        )
