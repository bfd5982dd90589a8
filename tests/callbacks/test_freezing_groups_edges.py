"""LayerFreezing's optimizer groups at their edges: which optimizer and group the added groups
follow, how the optimizer's own groups are split, named and scaled by depth, which parameters
are added and with which weight decay, BatchNorm subclasses with children, and its warnings."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from timm.layers import BatchNormAct2d
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_tune._lightning as dual
from lightning_tune.callbacks import LayerFreezing
from lightning_tune.models import TimmClassifier

# The Lightning namespace under test, set per test by the fixture (tests/conftest.py).
pl = dual.NAMESPACES[0]
pytestmark = pytest.mark.usefixtures("lightning_ns_as_pl")

GROUPS = ["body.0", "body.2", "out"]  # group_0, group_1, head
BODY0 = {"body.0.weight", "body.0.bias"}
BODY2 = {"body.2.weight", "body.2.bias"}
HEAD = {"out.weight", "out.bias"}
SCALE_WARNING = "multiplies the `lr_scale`"
PRESENT_WARNING = "already in the optimizer while frozen"


def _data() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=generator)
    y = torch.randint(0, 3, (8,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=4)


class Net(dual.LightningModule):
    """Three linear layers; ``make_optimizer(self)`` builds the optimizer (default: SGD over the
    trainable parameters)."""

    def __init__(self, make_optimizer: Callable[[Net], Any] | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.out = nn.Linear(8, 3)
        self.make_optimizer = make_optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> Any:
        if self.make_optimizer is not None:
            return self.make_optimizer(self)
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return _data()


class TrainableAt(dual.Callback):
    """The trainable parameter names at the first batch of each epoch."""

    def __init__(self) -> None:
        self.trainable: dict[int, set[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.trainable[trainer.current_epoch] = {
                n for n, p in pl_module.named_parameters() if p.requires_grad
            }


def _fit(trainer_kwargs, module, callbacks, epochs: int = 2) -> Any:
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, **trainer_kwargs)
    trainer.fit(module)
    return trainer


def _names(module: nn.Module, params) -> set[str]:
    names_of = {id(p): n for n, p in module.named_parameters()}
    return {names_of[id(p)] for p in params}


def _caught(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught]


# --------------------------------------------------------------------------- requires_grad
class GivesBackABias(Net):
    """The user froze ``out.bias`` before fit and trains it again from epoch 1 on."""

    def __init__(self) -> None:
        super().__init__(lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
        self.out.bias.requires_grad_(False)

    def on_train_epoch_start(self) -> None:  # runs after the callbacks' hook
        if self.current_epoch == 1:
            self.out.bias.requires_grad_(True)


def test_a_parameter_frozen_by_the_user_stays_the_users_to_unfreeze(trainer_kwargs):
    freezing, recorder = LayerFreezing("gradual", groups=GROUPS, milestones=[1, 2]), TrainableAt()
    _fit(trainer_kwargs, GivesBackABias(), [freezing, recorder], epochs=3)
    assert recorder.trainable[0] == HEAD - {"out.bias"}
    # LayerFreezing's unfreeze at epoch 2 leaves the user's own decision alone
    assert recorder.trainable[2] == HEAD | BODY2 | BODY0


def test_a_parameter_frozen_by_the_user_is_never_added_to_the_optimizer(trainer_kwargs):
    module = Net()
    module.body[0].bias.requires_grad_(False)
    freezing = LayerFreezing("freeze_then_unfreeze", groups=GROUPS, unfreeze_at_epoch=1)
    trainer = _fit(trainer_kwargs, module, [freezing])
    groups = trainer.optimizers[0].param_groups
    in_optimizer = [n for g in groups for n in _names(module, g["params"])]
    assert sorted(in_optimizer) == sorted(HEAD | BODY2 | {"body.0.weight"})
    assert [g.get("name") for g in groups] == [
        None,
        "group_1/decay",
        "group_1/no_decay",
        "group_0/decay",
    ]


# --------------------------------------------------------------------------- BatchNorm with children
class WithBatchNormAct(Net):
    """A timm BatchNormAct2d with a PReLU (a parameter that is not BatchNorm's own) in the
    middle group."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(4, 8), nn.Identity(), BatchNormAct2d(8, act_layer=nn.PReLU)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body[0](x)[:, :, None, None]
        return self.out(self.body[2](h).flatten(1))


def test_train_bn_trains_the_batchnorm_parameters_but_not_its_activations(trainer_kwargs):
    freezing = LayerFreezing("none", groups=GROUPS, keep_frozen=2, train_bn=True)
    recorder = TrainableAt()
    _fit(trainer_kwargs, WithBatchNormAct(), [freezing, recorder], epochs=1)
    assert recorder.trainable[0] == HEAD | {"body.2.weight", "body.2.bias"}  # not body.2.act


def test_one_dimensional_weights_go_to_the_no_decay_groups(trainer_kwargs):
    module = WithBatchNormAct()
    freezing = LayerFreezing("freeze_then_unfreeze", groups=GROUPS, unfreeze_at_epoch=1)
    trainer = _fit(trainer_kwargs, module, [freezing])
    added = {
        g["name"]: _names(module, g["params"])
        for g in trainer.optimizers[0].param_groups
        if "name" in g
    }
    assert added == {
        "group_1/no_decay": {"body.2.weight", "body.2.bias", "body.2.act.weight"},
        "group_0/decay": {"body.0.weight"},
        "group_0/no_decay": {"body.0.bias"},
    }


# --------------------------------------------------------------------------- existing groups
class WithLooseTensor(Net):
    """The optimizer also trains a tensor the module does not register (a loss temperature)."""

    def __init__(self) -> None:
        super().__init__()
        self.temperature = torch.ones(1, requires_grad=True)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x) / self.temperature, y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(
            [
                {"params": list(self.parameters()), "name": "all/decay", "weight_decay": 0.3},
                {"params": [self.temperature], "name": "all/temperature"},
            ],
            lr=0.1,
        )


@pytest.mark.parametrize(
    ("lr_decay", "expected"),
    [
        (
            0.5,
            [  # name, params, lr_scale, weight_decay: split by depth, deepest first
                ("group_0/decay", BODY0, 0.25, 0.3),
                ("group_1/decay", BODY2, 0.5, 0.3),
                ("head/decay", HEAD, 1.0, 0.3),
                ("all/temperature", None, 1.0, 0.0),  # not a layer's: the head's depth
            ],
        ),
        # lr_decay=1: depths do not matter, the groups stay whole and keep their names
        (1.0, [("all/decay", BODY0 | BODY2 | HEAD, 1.0, 0.3), ("all/temperature", None, 1.0, 0.0)]),
    ],
)
def test_the_optimizers_groups_are_split_by_depth_named_after_their_layer_and_scaled(
    lr_decay, expected, trainer_kwargs
):
    module = WithLooseTensor()
    freezing = LayerFreezing("none", groups=GROUPS, lr_decay=lr_decay)
    trainer = _fit(trainer_kwargs, module, [freezing], epochs=1)
    groups = trainer.optimizers[0].param_groups
    assert [g["name"] for g in groups] == [name for name, *_ in expected]
    for group, (name, params, scale, weight_decay) in zip(groups, expected):
        if params is None:
            assert group["params"] == [module.temperature], name
        else:
            assert _names(module, group["params"]) == params, name
        assert group["lr_scale"] == scale, name
        assert group["initial_lr"] == 0.1, name
        assert group["lr"] == pytest.approx(0.1 * scale), name
        assert group["weight_decay"] == weight_decay, name


def test_a_named_group_split_in_two_depths_gets_depth_suffixes(trainer_kwargs):
    def make(m: Net) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [
                {"params": list(m.body[0].parameters()), "name": "bottom"},
                {"params": [*m.body[2].parameters(), *m.out.parameters()], "name": "top"},
            ],
            lr=0.1,
        )

    module = Net(make)
    trainer = _fit(
        trainer_kwargs, module, [LayerFreezing("none", groups=GROUPS, lr_decay=0.5)], epochs=1
    )
    groups = trainer.optimizers[0].param_groups
    assert [(g["name"], g["lr_scale"]) for g in groups] == [
        ("bottom", 0.25),
        ("top/depth1", 0.5),
        ("top/depth0", 1.0),
    ]
    assert _names(module, groups[1]["params"]) == BODY2


@pytest.mark.parametrize(
    ("lr_scale", "lr_decay", "warns"),
    [
        (None, 0.5, False),  # groups without lr_scale
        (1.0, 0.5, False),  # groups with lr_scale 1 (TimmClassifier without layer_decay)
        (0.5, 0.5, True),  # two decays multiply
        (0.5, 1.0, False),  # LayerFreezing adds no decay
    ],
)
def test_a_decay_on_top_of_the_optimizers_own_lr_scale_warns(
    lr_scale, lr_decay, warns, trainer_kwargs
):
    def make(m: Net) -> torch.optim.Optimizer:
        group: dict[str, Any] = {"params": list(m.parameters())}
        if lr_scale is not None:
            group["lr_scale"] = lr_scale
        return torch.optim.SGD([group], lr=0.1)

    freezing = LayerFreezing("none", groups=GROUPS, lr_decay=lr_decay)
    trainer, caught = _caught(lambda: _fit(trainer_kwargs, Net(make), [freezing], epochs=1))
    assert any(SCALE_WARNING in m for m in caught) is warns
    expected = (1.0 if lr_scale is None else lr_scale) * lr_decay**2
    assert trainer.optimizers[0].param_groups[0]["lr_scale"] == expected  # group_0 (depth 2)


def test_a_timm_classifier_with_lr_scale_one_does_not_warn(trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    module = TimmClassifier("test_resnet", num_classes=3, lr=1e-2)
    assert {g["lr_scale"] for g in module.param_groups()} == {1.0}

    def fit() -> Any:
        generator = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(4, 3, 16, 16, generator=generator), torch.arange(4) % 3)
        trainer = pl.Trainer(
            max_epochs=1, callbacks=[LayerFreezing("none", lr_decay=0.5)], **trainer_kwargs
        )
        trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=4))
        return trainer

    trainer, caught = _caught(fit)
    assert not any(SCALE_WARNING in m for m in caught)
    names = [g["name"] for g in trainer.optimizers[0].param_groups]
    assert names[0] == "stem/decay" and names[-1] == "head/no_decay"


# --------------------------------------------------------------------------- added groups
def _by_layer(m: Net) -> torch.optim.Optimizer:
    """group_1's parameters (frozen at the start) with LR 0.1, the head's with LR 0.01."""
    return torch.optim.SGD(
        [{"params": list(m.body[2].parameters()), "lr": 0.1}, {"params": list(m.out.parameters())}],
        lr=0.01,
    )


@pytest.mark.parametrize("lr_decay", [1.0, 0.5])
def test_added_groups_take_the_lr_of_the_heads_group(lr_decay, trainer_kwargs):
    module = Net(_by_layer)
    freezing = LayerFreezing(
        "freeze_then_unfreeze", groups=GROUPS, unfreeze_at_epoch=1, lr_decay=lr_decay
    )
    trainer, caught = _caught(lambda: _fit(trainer_kwargs, module, [freezing]))
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 4  # group_1 was there already: only group_0 is added
    assert [g["initial_lr"] for g in groups] == [0.1, 0.01, 0.01, 0.01]
    assert [g["lr_scale"] for g in groups] == [lr_decay, 1.0, lr_decay**2, lr_decay**2]
    assert [g.get("name") for g in groups[2:]] == ["group_0/decay", "group_0/no_decay"]
    assert groups[2]["lr"] == pytest.approx(0.01 * lr_decay**2)
    # group_1 trains with its own group's LR: worth a warning only when LRs differ by depth
    present = [m for m in caught if PRESENT_WARNING in m]
    assert present == (
        []
        if lr_decay == 1
        else [
            "LayerFreezing: 2 parameters of group_1 (e.g. body.2.weight) were already in the "
            "optimizer while frozen, so they train with that group's LR, not lr_scale; build "
            "the optimizer from trainable parameters only (`p.requires_grad`) for per-layer LRs"
        ]
    )


def test_without_weight_decay_in_the_optimizer_added_groups_have_none(trainer_kwargs):
    module = Net(lambda m: torch.optim.Rprop([p for p in m.parameters() if p.requires_grad]))
    freezing = LayerFreezing("freeze_then_unfreeze", groups=GROUPS, unfreeze_at_epoch=1)
    trainer = _fit(trainer_kwargs, module, [freezing])
    added = [g for g in trainer.optimizers[0].param_groups if "name" in g]
    assert [g["name"] for g in added] == [
        "group_1/decay",
        "group_1/no_decay",
        "group_0/decay",
        "group_0/no_decay",
    ]
    assert {g["weight_decay"] for g in added} == {0.0}


class TwoOptimizers(Net):
    """GAN-style: one optimizer for the body, one for the head, stepped by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        optimizers = self.optimizers()
        self.manual_backward(nn.functional.cross_entropy(self(x), y))
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()

    def configure_optimizers(self) -> Any:
        return [
            torch.optim.SGD(self.body.parameters(), lr=0.1),
            torch.optim.SGD(self.out.parameters(), lr=0.01),
        ]


def test_unfrozen_groups_join_the_optimizer_that_trains_the_head(trainer_kwargs):
    module = TwoOptimizers()
    freezing = LayerFreezing("gradual", groups=GROUPS, milestones=[1])
    trainer = _fit(trainer_kwargs, module, [freezing])
    body, head = trainer.optimizers
    assert len(body.param_groups) == 1  # untouched
    assert [g.get("name") for g in head.param_groups] == [
        None,
        "group_1/decay",
        "group_1/no_decay",
    ]
    assert [g["initial_lr"] for g in head.param_groups] == [0.01] * 3
    assert _names(module, head.param_groups[1]["params"]) == {"body.2.weight"}


def _resolved() -> tuple[LayerFreezing, Net]:
    module = Net()
    freezing = LayerFreezing(groups=GROUPS)
    freezing._resolve_groups(module)
    return freezing, module


def test_without_any_optimizer_the_error_says_so():
    freezing, module = _resolved()
    with pytest.raises(ValueError, match="LayerFreezing found no optimizer"):
        freezing._head_optimizer(SimpleNamespace(optimizers=[]), module)


def test_when_no_optimizer_trains_the_head_the_first_one_gets_the_groups():
    freezing, module = _resolved()
    first = torch.optim.SGD(
        [
            {"params": list(module.body[0].parameters()), "lr": 0.2},
            {"params": list(module.body[2].parameters())},
        ],
        lr=0.3,
    )
    second = torch.optim.SGD(module.body[2].parameters(), lr=0.4)
    trainer = SimpleNamespace(optimizers=[first, second])
    assert freezing._head_optimizer(trainer, module) is first
    assert freezing._base_lr(first, module) == 0.2  # its first group's LR
