"""LabelSmoothing: training-only smoothing for every way a module reaches its loss; schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.callbacks import EarlyStopping, GradientClipping, LabelSmoothing
from lightning_tune.demo import demo_callbacks

# The Lightning namespace under test (pytorch_lightning or lightning.pytorch): every test
# runs once per installed package, with `pl` set by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")


def tiny_fit(trainer_kwargs, module, callbacks, **kwargs):
    settings = {
        **trainer_kwargs,
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        **kwargs,
    }
    trainer = pl.Trainer(callbacks=callbacks, **settings)
    trainer.fit(module)
    return trainer


class Tiny(dual.LightningModule):
    """A linear classifier whose loss is reached in the way ``kind`` says; records its losses."""

    def __init__(self, kind: str = "ce", classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.classes = classes
        self.layer = nn.Linear(4, classes)
        if kind in ("ce", "ce_soft"):
            self.criterion = nn.CrossEntropyLoss()
        elif kind in ("bce", "bce_multilabel"):
            self.criterion = nn.BCEWithLogitsLoss()
        elif kind == "function":
            self.loss_fn = F.cross_entropy
        elif kind == "attribute":
            self.label_smoothing = 0.0
        self.seen: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {
            "train": [],
            "val": [],
        }

    def targets(self, y):
        if self.kind == "ce_soft":
            return F.one_hot(y, self.classes).float() * 0.8 + 0.2 / self.classes
        if self.kind == "bce":
            return (y > 0).float()
        if self.kind == "bce_multilabel":
            return F.one_hot(y, self.classes).float()
        return y

    def step(self, batch, stage):
        x, y = batch
        logits = self.layer(x)
        if self.kind == "bce":
            logits = logits[:, 0]
        target = self.targets(y)
        if self.kind == "function":
            loss = self.loss_fn(logits, target)
        elif self.kind == "attribute":
            loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        elif self.kind == "none":
            loss = F.cross_entropy(logits, target)
        else:
            loss = self.criterion(logits, target)
        self.seen[stage].append((logits.detach(), target, loss.detach()))
        self.log(f"{stage}_loss", loss)
        return loss

    def training_step(self, batch, batch_idx):
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self.step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def _loader(self, seed):
        g = torch.Generator().manual_seed(seed)
        return DataLoader(
            TensorDataset(
                torch.randn(16, 4, generator=g), torch.randint(0, self.classes, (16,), generator=g)
            ),
            batch_size=8,
        )

    def train_dataloader(self):
        return self._loader(0)

    def val_dataloader(self):
        return self._loader(1)


@pytest.mark.parametrize(
    ("kind", "reference"),
    [
        ("ce", lambda z, t, e: F.cross_entropy(z, t, label_smoothing=e)),
        ("ce_soft", lambda z, t, e: F.cross_entropy(z, t, label_smoothing=e)),
        ("function", lambda z, t, e: F.cross_entropy(z, t, label_smoothing=e)),
        ("attribute", lambda z, t, e: F.cross_entropy(z, t, label_smoothing=e)),
        ("bce", lambda z, t, e: F.binary_cross_entropy_with_logits(z, t * (1 - e) + e / 2)),
        (
            "bce_multilabel",
            lambda z, t, e: F.binary_cross_entropy_with_logits(z, t * (1 - e) + e / 2),
        ),
    ],
)
def test_training_loss_smoothed_validation_loss_not(trainer_kwargs, kind, reference):
    module = Tiny(kind)
    tiny_fit(trainer_kwargs, module, [LabelSmoothing(epsilon=0.3)])
    for logits, target, loss in module.seen["train"]:
        torch.testing.assert_close(loss, reference(logits, target, 0.3))
        assert not torch.allclose(loss, reference(logits, target, 0.0))
    for logits, target, loss in module.seen["val"]:
        torch.testing.assert_close(loss, reference(logits, target, 0.0))
    # the module gets its loss back unchanged
    if kind == "function":
        assert module.loss_fn is F.cross_entropy
    elif kind == "attribute":
        assert module.label_smoothing == 0.0
    elif kind.startswith("bce"):
        assert not module.criterion._forward_pre_hooks
    else:
        assert module.criterion.label_smoothing == 0.0


def test_one_sided_softens_only_positives(trainer_kwargs):
    module = Tiny("bce")
    tiny_fit(trainer_kwargs, module, [LabelSmoothing(epsilon=0.2, one_sided=True)])
    for logits, target, loss in module.seen["train"]:
        expected = F.binary_cross_entropy_with_logits(logits, target * 0.8)
        torch.testing.assert_close(loss, expected)


def test_validation_loss_identical_with_and_without_smoothing(trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(image_size=16, batch_size=32, classes=[0, 1, 2])
    losses, val_losses = {}, {}
    for eps in (0.0, 0.25):
        pl.seed_everything(0, verbose=False)
        module = TimmClassifier("test_resnet", num_classes=3, lr=1e-3)
        trainer = pl.Trainer(
            callbacks=[LabelSmoothing(epsilon=eps)],
            max_epochs=1,
            limit_train_batches=1,
            limit_val_batches=2,
            **trainer_kwargs,
        )
        trainer.fit(module, datamodule=dm)
        losses[eps] = float(trainer.callback_metrics["train_loss"])
        fit_val = float(trainer.callback_metrics["val_loss"])
        val_losses[eps] = float(
            trainer.validate(module, datamodule=dm, verbose=False)[0]["val_loss"]
        )
        plain = pl.Trainer(limit_val_batches=2, **trainer_kwargs)
        assert fit_val == val_losses[eps]
        assert plain.validate(module, datamodule=dm, verbose=False)[0]["val_loss"] == fit_val
        assert module.criterion.label_smoothing == 0.0
    # the first step's loss is the smoothed loss of the initial weights
    pl.seed_everything(0, verbose=False)
    fresh = TimmClassifier("test_resnet", num_classes=3, lr=1e-3)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    fresh.train()
    with torch.no_grad():
        logits = fresh(images)
    # same first batch, same weights: each run's training loss is its own (un)smoothed loss
    for eps in (0.0, 0.25):
        expected = float(F.cross_entropy(logits, labels, label_smoothing=eps))
        assert losses[eps] == pytest.approx(expected, rel=1e-5)
    assert abs(losses[0.25] - losses[0.0]) > 1e-3


class EpsilonRecorder(dual.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def on_before_backward(self, trainer, pl_module, loss):
        self.seen.append((trainer.current_epoch, pl_module.criterion.label_smoothing))


def test_annealed_to_zero_over_the_last_epochs(trainer_kwargs):
    recorder = EpsilonRecorder()
    smoothing = LabelSmoothing(epsilon=0.2, anneal_epochs=2)
    tiny_fit(trainer_kwargs, Tiny("ce"), [smoothing, recorder], max_epochs=5)
    per_epoch = sorted(set(recorder.seen))
    assert per_epoch == [(0, 0.2), (1, 0.2), (2, 0.2), (3, 0.1), (4, 0.0)]


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_schedule_resumes_exactly(trainer_kwargs, tmp_path):
    every = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)
    straight, recorder = Tiny("ce"), EpsilonRecorder()
    tiny_fit(
        {**trainer_kwargs, "enable_checkpointing": True},
        straight,
        [LabelSmoothing(0.3, anneal_epochs=3), recorder, every],
        max_epochs=4,
    )
    resumed, again = Tiny("ce"), EpsilonRecorder()
    trainer = pl.Trainer(
        callbacks=[LabelSmoothing(0.3, anneal_epochs=3), again],
        max_epochs=4,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(resumed, ckpt_path=next(tmp_path.glob("epoch=1-*.ckpt")))
    assert again.seen == recorder.seen[-len(again.seen) :] and len(again.seen) == 4
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)


def test_anneal_needs_max_epochs(trainer_kwargs):
    with pytest.raises(ValueError, match=r"anneal_epochs=2.*needs Trainer\(max_epochs=...\)"):
        tiny_fit(
            trainer_kwargs,
            Tiny("ce"),
            [LabelSmoothing(0.1, anneal_epochs=2)],
            max_epochs=-1,
            max_steps=3,
        )


def test_module_without_reachable_loss_fails_in_setup(trainer_kwargs):
    with pytest.raises(
        ValueError,
        match=r"cannot reach the loss of Tiny.*no float "
        r"`label_smoothing` attribute",
    ):
        tiny_fit(trainer_kwargs, Tiny("none"), [LabelSmoothing(0.1)])
    with pytest.raises(
        ValueError,
        match=r"loss_attribute='loss'.*Tiny has no such attribute. "
        r"Loss-like attributes: \['criterion'\]",
    ):
        tiny_fit(trainer_kwargs, Tiny("ce"), [LabelSmoothing(0.1, loss_attribute="loss")])


def test_several_loss_modules_need_loss_attribute(trainer_kwargs):
    module = Tiny("ce")
    module.aux_criterion = nn.BCEWithLogitsLoss()
    with pytest.raises(
        ValueError, match=r"several loss modules .*\['criterion', 'aux_criterion'\]"
    ):
        tiny_fit(trainer_kwargs, module, [LabelSmoothing(0.1)])
    tiny_fit(trainer_kwargs, module, [LabelSmoothing(0.1, loss_attribute="criterion")])
    _, _, loss = module.seen["train"][-1]
    logits, target, _ = module.seen["train"][-1]
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, label_smoothing=0.1))


def test_one_sided_refused_for_multiclass_cross_entropy(trainer_kwargs):
    with pytest.raises(
        ValueError, match=r"one_sided=True\) needs binary targets.*CrossEntropyLoss"
    ):
        tiny_fit(trainer_kwargs, Tiny("ce"), [LabelSmoothing(0.1, one_sided=True)])


def test_smoothing_is_switched_off_when_a_step_fails(trainer_kwargs):
    class Failing(Tiny):
        def training_step(self, batch, batch_idx):
            raise ArithmeticError("boom")

    module = Failing("ce")
    with pytest.raises(ArithmeticError, match="boom"):
        tiny_fit(trainer_kwargs, module, [LabelSmoothing(0.1)])
    assert module.criterion.label_smoothing == 0.0
    module = Failing("function")
    with pytest.raises(ArithmeticError, match="boom"):
        tiny_fit(trainer_kwargs, module, [LabelSmoothing(0.1)])
    assert module.loss_fn is F.cross_entropy  # the wrapper is gone too


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"epsilon": -0.1},
            ValueError,
            r"`epsilon` must be a number >= 0 and < 1, but got epsilon=-0.1",
        ),
        (
            {"epsilon": 1.0},
            ValueError,
            r"`epsilon` must be a number >= 0 and < 1, but got epsilon=1.0",
        ),
        ({"epsilon": "0.1"}, TypeError, r"`epsilon` must be a number, but got epsilon='0.1'"),
        ({"anneal_epochs": -1}, ValueError, r"`anneal_epochs` must be an int >= 0"),
        ({"one_sided": True, "binary": False}, ValueError, r"`one_sided=True`.*binary=False"),
        ({"loss_attribute": ""}, TypeError, r"`loss_attribute` must be a name or None"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LabelSmoothing(**kwargs)


def test_timm_classifier_with_all_three_and_the_demo_rows(trainer_kwargs):
    names = {type(cb).__name__ for cb in demo_callbacks()}
    assert {"EarlyStopping", "GradientClipping", "LabelSmoothing"} <= names
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(image_size=16, batch_size=32, classes=[0, 1, 2, 3])
    module = TimmClassifier("test_vit", num_classes=4, lr=3e-3, model_kwargs={"img_size": 16})
    early = EarlyStopping("val_loss", patience=1, restore_best_weights=True)
    clip = GradientClipping(max_norm=1.0, log_every_n_steps=1)
    trainer = pl.Trainer(
        callbacks=[LabelSmoothing(0.1), clip, early],
        max_epochs=3,
        limit_train_batches=3,
        limit_val_batches=2,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=dm)
    assert early.best_epoch is not None and early.restored_epoch == early.best_epoch
    assert float(trainer.callback_metrics["grad_norm/after"]) <= 1.0 + 1e-4
    assert clip.skipped_steps == 0 and module.criterion.label_smoothing == 0.0
