"""EarlyStopping: scripted metric sequences, restore-best, grace period, min_epochs, resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune.callbacks import EarlyStopping
from lightning_tune.callbacks.early_stopping import EarlyStoppingReason

# The Lightning namespace under test (pytorch_lightning or lightning.pytorch): every test
# runs once per installed package, with `pl` set by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")


class Scripted(dual.LightningModule):
    """Trains a tiny linear model and logs ``values[k]`` as ``val_loss`` at the k-th validation."""

    def __init__(self, values: list[float], metric: str = "val_loss") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.values = values
        self.metric = metric
        self.validations = 0
        self.weights_at: dict[int, dict[str, torch.Tensor]] = {}
        self.should_stop_at_epoch_start: list[bool] = []

    def on_train_epoch_start(self):
        self.should_stop_at_epoch_start.append(self.trainer.should_stop)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        self.log(self.metric, float(self.values[self.validations]))
        self.weights_at[self.validations] = {
            k: v.detach().clone() for k, v in self.state_dict().items()
        }
        self.validations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(16, 4, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(4, 4), torch.zeros(4, 1)), batch_size=4)


def fit(trainer_kwargs, values, callbacks, **kwargs):
    module = Scripted(values)
    settings = {
        **trainer_kwargs,
        "max_epochs": len(values),
        "limit_train_batches": 2,
        "num_sanity_val_steps": 0,
        **kwargs,
    }
    trainer = pl.Trainer(callbacks=callbacks, **settings)
    trainer.fit(module)
    return trainer, module


@pytest.mark.parametrize(
    ("values", "kwargs", "stop_epoch"),
    [
        ([5, 4, 3, 3, 3, 3, 3, 3], {"patience": 3}, 5),
        ([5, 4, 3, 3, 3, 3, 3, 3], {"patience": 0}, 3),
        ([5, 4, 3, 3, 2, 3, 3, 3, 3, 3], {"patience": 3}, 7),
        ([1, 2, 3, 4, 5, 6], {"patience": 2, "mode": "max"}, None),
        ([6, 5, 5, 5, 5, 5], {"patience": 2, "mode": "max"}, 2),
        ([10, 9.5, 9.2, 9.0, 8.9, 8.85], {"patience": 1, "min_delta": 0.25}, 3),
        ([10, 9.5, 9.2, 9.0, 8.9, 8.85], {"patience": 1, "min_delta": 0.5}, 1),
    ],
)
def test_stop_epoch_matches_script_and_lightning(trainer_kwargs, values, kwargs, stop_epoch):
    ours = EarlyStopping("val_loss", **kwargs)
    trainer, _ = fit(trainer_kwargs, values, [ours])
    expected_epochs = len(values) if stop_epoch is None else stop_epoch + 1
    assert trainer.current_epoch == expected_epochs
    assert ours.stopped_epoch == (stop_epoch or 0)
    reason = (
        EarlyStoppingReason.NOT_STOPPED
        if stop_epoch is None
        else EarlyStoppingReason.PATIENCE_EXHAUSTED
    )
    assert ours.stopping_reason == reason
    theirs = pl.callbacks.EarlyStopping("val_loss", **kwargs)
    trainer, _ = fit(trainer_kwargs, values, [theirs])
    assert trainer.current_epoch == expected_epochs
    assert theirs.stopped_epoch == ours.stopped_epoch


@pytest.mark.parametrize(
    ("min_delta", "stop_epoch"),
    # 5 %: 100 -> 94 and 94 -> 89 improve by more than 5 % of the best, 89 -> 86 does not
    [(0.05, 3), (0.01, None)],
)
def test_relative_min_delta(trainer_kwargs, min_delta, stop_epoch):
    values = [100, 94, 89, 86, 82, 78]
    early = EarlyStopping("val_loss", patience=1, min_delta=min_delta, min_delta_mode="rel")
    fit(trainer_kwargs, values, [early])
    assert early.stopped_epoch == (stop_epoch or 0)
    assert early.best_epoch == (2 if stop_epoch else 5)


def test_grace_period_ignores_early_epochs(trainer_kwargs):
    values = [1, 5, 5, 5, 4, 4, 4, 4]
    plain = EarlyStopping("val_loss", patience=2)
    fit(trainer_kwargs, values, [plain])
    assert plain.stopped_epoch == 2
    grace = EarlyStopping("val_loss", patience=2, start_from_epoch=3)
    fit(trainer_kwargs, values, [grace])
    assert (grace.best_epoch, grace.stopped_epoch) == (4, 6)


def test_min_epochs_delays_the_stop_without_extra_validation(trainer_kwargs):
    values = [1, 2, 2, 2, 2, 2, 2, 2, 2]
    early = EarlyStopping("val_loss", patience=1)
    trainer, module = fit(trainer_kwargs, values, [early], min_epochs=5)
    assert early.stopped_epoch == 4
    assert trainer.current_epoch == 5
    assert module.validations == 5  # one validation per epoch, none extra
    assert module.should_stop_at_epoch_start == [False] * 5  # never a refused stop signal
    assert early.wait_count == 4


def test_smoothing_ignores_a_single_noisy_epoch(trainer_kwargs):
    values = [10, 8, 6, 6.5, 5.8, 5.6, 5.5, 5.4]
    raw = EarlyStopping("val_loss", patience=1)
    fit(trainer_kwargs, values, [raw])
    assert raw.stopped_epoch == 3
    smooth = EarlyStopping("val_loss", patience=1, smoothing=0.5)
    fit(trainer_kwargs, values, [smooth])
    assert smooth.stopped_epoch == 0 and smooth.best_epoch == 7
    ema = 10.0
    for v in values[1:]:
        ema = 0.5 * ema + 0.5 * v
    assert smooth.best_score == pytest.approx(ema)


@pytest.mark.parametrize(
    ("values", "kwargs", "reason", "stop_epoch", "words"),
    [
        (
            [5, 4, 0.5, 0.4],
            {"stopping_threshold": 1.0},
            EarlyStoppingReason.STOPPING_THRESHOLD,
            2,
            "stopping threshold",
        ),
        (
            [5, 4, 12, 3],
            {"divergence_threshold": 10.0},
            EarlyStoppingReason.DIVERGENCE_THRESHOLD,
            2,
            "divergence threshold",
        ),
        ([5, 4, math.nan, 3], {}, EarlyStoppingReason.NON_FINITE_METRIC, 2, "not finite"),
    ],
)
def test_thresholds_and_non_finite(trainer_kwargs, values, kwargs, reason, stop_epoch, words):
    early = EarlyStopping("val_loss", patience=5, **kwargs)
    fit(trainer_kwargs, values, [early])
    assert early.stopping_reason == reason
    assert early.stopped_epoch == stop_epoch
    assert words in early.stopping_reason_message


def test_validation_every_two_epochs_counts_checks(trainer_kwargs):
    values = [5, 4, 4, 4, 4, 4]  # one value per validation: epochs 1, 3, 5, 7, 9, 11
    early = EarlyStopping("val_loss", patience=2)
    _, module = fit(trainer_kwargs, values, [early], max_epochs=12, check_val_every_n_epoch=2)
    assert module.validations == 4
    assert early.stopped_epoch == 7


def test_several_validations_per_epoch(trainer_kwargs):
    values = [5, 4, 3, 3, 3, 3, 3, 3]  # two validations per epoch
    early = EarlyStopping("val_loss", patience=2)
    _, module = fit(
        trainer_kwargs, values, [early], max_epochs=4, limit_train_batches=4, val_check_interval=0.5
    )
    assert module.validations == 5
    assert early.stopped_epoch == 2
    assert early.best_epoch == 1


class TrainEpochMetric(Scripted):
    def on_validation_epoch_end(self):
        pass

    def on_train_epoch_end(self):
        self.log("train_metric", float(self.values[self.current_epoch]))


def test_metric_logged_in_module_on_train_epoch_end_is_seen(trainer_kwargs):
    early = EarlyStopping("train_metric", patience=1, check_on_train_epoch_end=True)
    trainer = pl.Trainer(
        callbacks=[early],
        max_epochs=5,
        limit_train_batches=2,
        limit_val_batches=0,
        **trainer_kwargs,
    )
    trainer.fit(TrainEpochMetric([3, 2, 2, 2, 2]))
    assert early.stopped_epoch == 2
    assert trainer.early_stopping_callback is early


def test_missing_metric_names_it_and_lists_logged(trainer_kwargs):
    early = EarlyStopping("val_acc")
    with pytest.raises(RuntimeError, match=r"no metric 'val_acc'.*\['val_loss'\]"):
        fit(trainer_kwargs, [1, 2, 3], [early])
    lenient = EarlyStopping("val_acc", strict=False)
    with pytest.warns(UserWarning, match="val_acc"):
        trainer, _ = fit(trainer_kwargs, [1, 2, 3], [lenient])
    assert trainer.current_epoch == 3


def test_restore_best_weights_from_memory(trainer_kwargs):
    values = [5, 3, 1, 2, 4, 6, 7]
    early = EarlyStopping("val_loss", patience=3, restore_best_weights=True)
    _, module = fit(trainer_kwargs, values, [early])
    assert early.stopped_epoch == 5 and early.restored_epoch == 2
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, module.weights_at[2][key], rtol=0, atol=0)
    assert not torch.equal(
        module.weights_at[2]["layer.weight"], module.weights_at[5]["layer.weight"]
    )


def test_restore_best_weights_from_model_checkpoint(trainer_kwargs, tmp_path):
    values = [5, 3, 1, 2, 4, 6, 7]
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val_loss", mode="min"
    )
    early = EarlyStopping("val_loss", patience=3, restore_best_weights=True)
    _, module = fit({**trainer_kwargs, "enable_checkpointing": True}, values, [early, checkpoint])
    assert early.state_dict().get("best_weights") is None  # no copy kept in memory
    assert early.restored_epoch == 2
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, module.weights_at[2][key], rtol=0, atol=0)


def test_restore_from_checkpoint_needs_a_matching_model_checkpoint(trainer_kwargs):
    early = EarlyStopping("val_loss", restore_best_weights=True, restore_from="checkpoint")
    with pytest.raises(ValueError, match="needs a ModelCheckpoint with monitor='val_loss'"):
        fit(trainer_kwargs, [1, 2], [early])


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_resume_mid_patience_continues_exactly(trainer_kwargs, tmp_path):
    values = [5, 4, 3, 3.5, 3.6, 3.7, 3.8, 3.9, 4, 4, 4]
    kwargs = {"patience": 3, "smoothing": 0.2, "restore_best_weights": True}
    every = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "all", save_top_k=-1, every_n_epochs=1)
    full = EarlyStopping("val_loss", **kwargs)
    _, straight = fit({**trainer_kwargs, "enable_checkpointing": True}, values, [full, every])
    assert (full.best_epoch, full.stopped_epoch, full.restored_epoch) == (2, 5, 2)

    # epoch 3 ends mid-patience (wait_count == 1); the best weights (epoch 2) predate the resume
    ckpt = next((tmp_path / "all").glob("epoch=3-*.ckpt"))
    saved = torch.load(ckpt, weights_only=False)["callbacks"]
    assert saved[full.state_key]["wait_count"] == 1
    resumed = EarlyStopping("val_loss", **kwargs)
    module = Scripted(values)
    module.validations = 4
    trainer = pl.Trainer(
        callbacks=[resumed],
        max_epochs=len(values),
        limit_train_batches=2,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(module, ckpt_path=ckpt)
    assert trainer.current_epoch == 6
    state = {k: v for k, v in resumed.state_dict().items() if k != "best_weights"}
    assert state == {k: v for k, v in full.state_dict().items() if k != "best_weights"}
    assert resumed.restored_epoch == 2
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, straight.weights_at[2][key], rtol=0, atol=0)
        torch.testing.assert_close(value, straight.state_dict()[key], rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_resume_keeps_constructor_settings(trainer_kwargs, tmp_path):
    values = [5, 4, 4, 4, 4, 4, 4, 4]
    every = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "all", save_top_k=-1, every_n_epochs=1)
    fit(
        {**trainer_kwargs, "enable_checkpointing": True},
        values,
        [EarlyStopping("val_loss", patience=5), every],
    )
    ckpt = next((tmp_path / "all").glob("epoch=2-*.ckpt"))
    impatient = EarlyStopping("val_loss", patience=2)
    module = Scripted(values)
    module.validations = 3
    trainer = pl.Trainer(
        callbacks=[impatient],
        max_epochs=len(values),
        limit_train_batches=2,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(module, ckpt_path=ckpt)
    assert impatient.patience == 2
    assert impatient.stopped_epoch == 3  # wait_count 1 from the checkpoint, +1 -> 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"patience": -1}, ValueError, r"`patience` must be an int >= 0, but got patience=-1"),
        ({"patience": 2.5}, TypeError, r"`patience` must be an int"),
        (
            {"min_delta": -0.1},
            ValueError,
            r"`min_delta` must be a number >= 0, but got min_delta=-0.1",
        ),
        ({"mode": "maximum"}, ValueError, r"`mode` must be one of \['max', 'min'\].*'maximum'"),
        ({"min_delta_mode": "pct"}, ValueError, r"`min_delta_mode` must be one of"),
        (
            {"smoothing": 1.0},
            ValueError,
            r"`smoothing` must be a number >= 0 and < 1, but got smoothing=1.0",
        ),
        ({"start_from_epoch": -2}, ValueError, r"`start_from_epoch` must be an int >= 0"),
        ({"restore_from": "disk"}, ValueError, r"`restore_from` must be one of"),
        (
            {"stopping_threshold": "low"},
            TypeError,
            r"`stopping_threshold` must be a number, but got stopping_threshold='low'",
        ),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        EarlyStopping("val_loss", **kwargs)
