"""LabelSmoothing edge cases: target shapes and dtypes, how the loss is found and wrapped, ε = 0."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_label_smoothing import Tiny  # same directory: pytest puts it on sys.path
from torch import nn

import lightning_tune._lightning as dual
from lightning_tune.callbacks import LabelSmoothing
from lightning_tune.callbacks.label_smoothing import _SmoothedLoss, smooth_targets

# The Lightning namespace under test, set per test by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")


def fit(trainer_kwargs, module, callbacks, **kwargs):
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


# --------------------------------------------------------------------------- smooth_targets
@pytest.mark.parametrize("shape", [(1, 4), (2, 3, 5)])
def test_class_indices_with_extra_dims_put_the_class_dim_second(shape):
    torch.manual_seed(0)
    y = torch.randint(0, 3, shape)
    out = smooth_targets(y, 0.3, num_classes=3)
    assert out.shape == (shape[0], 3, *shape[1:])
    expected = F.one_hot(y, 3).movedim(-1, 1).float() * 0.7 + 0.1
    torch.testing.assert_close(out, expected)
    # what F.cross_entropy makes of it: the same loss as its own label smoothing
    logits = torch.randn(shape[0], 3, *shape[1:])
    torch.testing.assert_close(
        F.cross_entropy(logits, out), F.cross_entropy(logits, y, label_smoothing=0.3)
    )


def test_a_single_probability_vector_is_smoothed_over_its_length():
    out = smooth_targets(torch.tensor([0.0, 1.0, 0.0, 0.0]), 0.4)
    torch.testing.assert_close(out, torch.tensor([0.1, 0.7, 0.1, 0.1]))


@pytest.mark.parametrize("one_sided", [False, True])
def test_binary_float_targets_keep_their_dtype(one_sided):
    targets = torch.tensor([0.0, 1.0, 1 / 3], dtype=torch.float64)
    out = smooth_targets(targets, 0.1, binary=True, one_sided=one_sided)
    assert out.dtype == torch.float64
    expected = targets * 0.9 if one_sided else targets * 0.9 + 0.05
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # integer targets become floats of the default dtype
    ints = smooth_targets(torch.tensor([0, 1]), 0.1, binary=True, one_sided=one_sided)
    assert ints.dtype == torch.get_default_dtype()


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("anneal_epochs", [True, 1.0])
def test_anneal_epochs_must_be_an_int(anneal_epochs):
    with pytest.raises(TypeError, match=r"`anneal_epochs` must be an int, but got"):
        LabelSmoothing(0.2, anneal_epochs=anneal_epochs)


def test_anneal_epochs_zero_keeps_epsilon_constant():
    smoothing = LabelSmoothing(0.2, anneal_epochs=0)
    assert [smoothing.epsilon_at(e, 3) for e in range(3)] == [0.2, 0.2, 0.2]


def test_anneal_accepts_max_epochs_zero(trainer_kwargs):
    module = Tiny("ce")
    trainer = fit(trainer_kwargs, module, [LabelSmoothing(0.1, anneal_epochs=1)], max_epochs=0)
    assert trainer.global_step == 0 and module.seen["train"] == []
    assert module.criterion.label_smoothing == 0.0


@pytest.mark.parametrize(
    "kwargs", [{"binary": True}, {"one_sided": True}], ids=["binary", "one_sided"]
)
def test_float_attribute_refuses_binary_and_one_sided(trainer_kwargs, kwargs):
    module = Tiny("attribute")
    with pytest.raises(ValueError, match=r"float `label_smoothing` attribute is multi-class only"):
        fit(trainer_kwargs, module, [LabelSmoothing(0.1, **kwargs)])
    assert module.seen["train"] == [] and module.label_smoothing == 0.0


# --------------------------------------------------------------------------- finding the loss
def test_loss_like_attributes_that_are_no_functions_are_ignored():
    module = Tiny("function")
    module.loss_weight = 0.5  # a loss-like name, but no function
    module.best_loss = None
    module.loss_head = nn.Linear(3, 3)  # callable, but a module (and no loss type)
    assert LabelSmoothing().find_loss(module) == ("loss_fn", F.cross_entropy)


def test_several_loss_functions_need_loss_attribute():
    module = Tiny("function")
    module.aux_loss_fn = F.nll_loss
    with pytest.raises(
        ValueError, match=r"several loss functions in Tiny: \['aux_loss_fn', 'loss_fn'\]"
    ):
        LabelSmoothing().find_loss(module)
    assert LabelSmoothing(loss_attribute="aux_loss_fn").find_loss(module) == (
        "aux_loss_fn",
        F.nll_loss,
    )


class BinaryLossFunction(Tiny):
    """Multi-label targets and ``loss_fn = F.binary_cross_entropy_with_logits``."""

    def __init__(self) -> None:
        super().__init__("function")
        self.loss_fn = F.binary_cross_entropy_with_logits

    def targets(self, y):
        return F.one_hot(y, self.classes).float()


@pytest.mark.parametrize(
    ("binary", "offset"), [(None, 0.2 / 2), (False, 0.2 / 3)], ids=["binary=None", "binary=False"]
)
def test_binary_from_the_loss_function_name_unless_given(trainer_kwargs, binary, offset):
    module = BinaryLossFunction()
    fit(trainer_kwargs, module, [LabelSmoothing(0.2, binary=binary)])
    for logits, target, loss in module.seen["train"]:
        expected = F.binary_cross_entropy_with_logits(logits, target * 0.8 + offset)
        torch.testing.assert_close(loss, expected)
    for logits, target, loss in module.seen["val"]:
        torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, target))


# --------------------------------------------------------------------------- wrapping the loss
def test_sanity_validation_before_training_is_not_smoothed(trainer_kwargs):
    assert LabelSmoothing().active is False
    for kind, plain in (
        ("function", F.cross_entropy),
        ("bce", F.binary_cross_entropy_with_logits),
    ):
        module = Tiny(kind)
        fit(trainer_kwargs, module, [LabelSmoothing(0.3)], num_sanity_val_steps=1)
        assert len(module.seen["val"]) == 2  # the sanity check's batch and the epoch's
        for logits, target, loss in module.seen["val"]:
            torch.testing.assert_close(loss, plain(logits, target))


def recording_loss_fn(calls):
    def loss_fn(input, target, weight=None):
        calls.append((target, weight))
        return F.cross_entropy(input, target, weight=weight)

    return loss_fn


class RecordingLoss(nn.Module):
    """A loss module of no known type: multi-class, it records what it is called with."""

    def __init__(self, calls) -> None:
        super().__init__()
        self.calls = calls

    def forward(self, input, target, weight=None):
        self.calls.append((target, weight))
        return F.cross_entropy(input, target, weight=weight)


class ThreeArgumentLoss(Tiny):
    """Calls its loss (a function or a module) with a third positional argument, the weight."""

    def __init__(self, via: str) -> None:
        super().__init__("none")
        self.via = via
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.class_weight = torch.tensor([1.0, 2.0, 3.0])
        if via == "module":
            self.criterion = RecordingLoss(self.calls)
        else:
            self.loss_fn = recording_loss_fn(self.calls)

    def step(self, batch, stage):
        x, y = batch
        loss_fn = self.criterion if self.via == "module" else self.loss_fn
        loss = loss_fn(self.layer(x), y, self.class_weight)
        self.log(f"{stage}_loss", loss)
        return loss


@pytest.mark.parametrize(("via", "loss_attribute"), [("function", None), ("module", "criterion")])
def test_smoothed_while_epsilon_positive_then_targets_passed_unchanged(
    trainer_kwargs, via, loss_attribute
):
    module = ThreeArgumentLoss(via)
    smoothing = LabelSmoothing(0.3, anneal_epochs=1, loss_attribute=loss_attribute)
    fit(trainer_kwargs, module, [smoothing], max_epochs=2, limit_val_batches=0)
    labels = [y for _, y in module.train_dataloader()]
    assert len(module.calls) == 4
    for (target, weight), y in zip(module.calls[:2], labels):  # epoch 0: ε = 0.3
        torch.testing.assert_close(target, smooth_targets(y, 0.3, num_classes=3))
        assert weight is module.class_weight
    for (target, weight), y in zip(module.calls[2:], labels):  # last epoch: ε = 0
        assert target.dtype == torch.int64 and torch.equal(target, y)
        assert weight is module.class_weight
    if via == "module":
        assert not module.criterion._forward_pre_hooks
    else:
        assert not isinstance(module.loss_fn, _SmoothedLoss)  # the wrapper is gone


# --------------------------------------------------------------------------- ignore_index
class IgnoringTiny(dual.LightningModule):
    """Cross-entropy through a loss function, with some targets set to ``ignore_index``."""

    def __init__(self, loss_fn) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 3)
        self.loss_fn = loss_fn
        self.losses: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        y = torch.where(torch.arange(len(y)) % 3 == 0, torch.full_like(y, -100), y)
        logits = self.layer(x)
        loss = self.loss_fn(logits, y, ignore_index=-100)
        self.losses.append((logits.detach(), y, loss.detach()))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(12, 4, generator=g), torch.arange(12) % 3)
        return torch.utils.data.DataLoader(data, batch_size=6)


def test_a_cross_entropy_function_keeps_its_ignore_index_and_gets_epsilon_as_its_own(
    trainer_kwargs,
):
    module = IgnoringTiny(F.cross_entropy)
    fit(trainer_kwargs, module, [LabelSmoothing(0.2)], limit_val_batches=0)
    assert len(module.losses) == 2
    for logits, y, loss in module.losses:
        assert (y == -100).any()
        expected = F.cross_entropy(logits, y, ignore_index=-100, label_smoothing=0.2)
        torch.testing.assert_close(loss, expected)
        assert not torch.allclose(loss, F.cross_entropy(logits, y, ignore_index=-100))
    assert module.loss_fn is F.cross_entropy


def test_a_loss_function_without_label_smoothing_gets_smoothed_targets(trainer_kwargs):
    def plain(logits, target, ignore_index=-100):  # no label_smoothing keyword
        return F.cross_entropy(logits, target, ignore_index=ignore_index)

    module = IgnoringTiny(plain)
    with pytest.raises(ValueError, match=r"must be in \[0, 3\) to be smoothed, but got values "
                       r"from -100 to 2\. An ignore_index"):  # fmt: skip
        fit(trainer_kwargs, module, [LabelSmoothing(0.2)], limit_val_batches=0)
    assert module.loss_fn is plain  # restored after the failed fit


def test_smooth_targets_refuses_class_indices_outside_the_classes():
    with pytest.raises(ValueError, match=r"from 0 to 3\."):
        smooth_targets(torch.tensor([0, 3]), 0.1, num_classes=3)
    torch.testing.assert_close(
        smooth_targets(torch.tensor([0, 2]), 0.3, num_classes=3),
        torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]),
    )
    assert smooth_targets(torch.tensor([], dtype=torch.long), 0.1, num_classes=3).shape == (0, 3)


def test_functions_without_a_signature_get_smoothed_targets():
    from lightning_tune.callbacks.label_smoothing import _takes_label_smoothing

    assert _takes_label_smoothing(F.cross_entropy)
    assert not _takes_label_smoothing(F.nll_loss)
    assert not _takes_label_smoothing(max)  # a builtin: inspect.signature raises ValueError


@pytest.mark.parametrize("num_classes", [1, 2, 5])
def test_an_empty_batch_of_class_indices_is_smoothed_to_no_rows(num_classes):
    # nothing to check the range of: an empty batch is fine for any number of classes
    smoothed = smooth_targets(torch.empty(0, dtype=torch.long), 0.1, num_classes=num_classes)
    assert smoothed.shape == (0, num_classes)
