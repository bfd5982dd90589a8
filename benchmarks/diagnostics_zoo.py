"""The bug zoo: seeded buggy and healthy training setups on the digits (MLPs and timm models).

Each setup is ``(name, expected_code, build)``: ``build(seed)`` returns ``(module, datamodule)``
ready for ``Trainer.fit``; ``expected_code`` is the finding that names the bug (None: healthy).
Used by ``benchmarks/bench_diagnostics.py`` and by the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_tune import DigitsDataModule, TimmClassifier

__all__ = ["SETUPS", "ZooData", "ZooMLP", "setup_by_name"]

_ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class ZooMLP(pl.LightningModule):
    """An MLP on the flattened 8x8 digits with switches for the classic bugs."""

    def __init__(
        self,
        depth: int = 2,
        width: int = 64,
        activation: str = "relu",
        lr: float = 1e-3,
        optimizer: str = "adam",
        init_std: float | None = None,
        init_constant: float | None = None,
        bias_init: float | None = None,
        dropout: float = 0.0,
        softmax_before_loss: bool = False,
        manual_log_loss: bool = False,
        train_in_validation: bool = False,
        frozen_first_retrained: bool = False,
        in_features: int = 64,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        features = in_features
        for _ in range(depth):
            layers += [nn.Linear(features, width), _ACTS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            features = width
        layers.append(nn.Linear(features, 10))
        self.net = nn.Sequential(*layers)
        self.criterion = nn.CrossEntropyLoss()
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for m in linears[:-1]:
                if init_std is not None:
                    m.weight.normal_(0, init_std)
                if init_constant is not None:
                    m.weight.fill_(init_constant)
                if bias_init is not None:
                    m.bias.fill_(bias_init)
        if frozen_first_retrained:
            linears[0].requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.hparams.frozen_first_retrained:  # "unfreeze for the backward", never re-frozen
            self.net[0].requires_grad_(True)
        logits = self(x)
        if self.hparams.manual_log_loss:
            probs = torch.softmax(logits * 1e3, dim=1)  # a "temperature" that underflows
            loss = -(F.one_hot(y, 10) * probs.log()).sum(1).mean()
        elif self.hparams.softmax_before_loss:
            loss = self.criterion(torch.softmax(logits, dim=1), y)
        else:
            loss = self.criterion(logits, y)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.hparams.frozen_first_retrained:
            self.net[0].requires_grad_(False)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.hparams.train_in_validation:
            self.train()
        x, y = batch
        self.log("val_loss", self.criterion(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class ZooData(pl.LightningDataModule):
    """The digits (normalised, shuffled) with switches for the classic data bugs."""

    def __init__(
        self,
        image_size: int = 8,
        channels: int = 1,
        batch_size: int = 32,
        raw_pixels: bool = False,
        label_shift: int = 0,
        same_batch: bool = False,
        sorted_labels: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.digits = DigitsDataModule(
            image_size=image_size, channels=channels, batch_size=batch_size, seed=seed
        )
        self.batch_size = batch_size
        self.raw_pixels = raw_pixels
        self.label_shift = label_shift
        self.same_batch = same_batch
        self.sorted_labels = sorted_labels
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        self.digits.setup(stage)
        x, y = self.digits.train_set.tensors
        if self.raw_pixels:  # undo the normalisation and scale to 0-255
            x = (x * self.digits.std + self.digits.mean) * 255.0
        if self.sorted_labels:
            order = torch.argsort(y, stable=True)
            x, y = x[order], y[order]
        self.train = TensorDataset(x, y + self.label_shift)
        vx, vy = self.digits.val_set.tensors
        if self.raw_pixels:
            vx = (vx * self.digits.std + self.digits.mean) * 255.0
        self.val = TensorDataset(vx, vy + self.label_shift)

    def train_dataloader(self) -> Any:
        if self.same_batch:
            x, y = self.train.tensors
            return _SameBatch(x[: self.batch_size], y[: self.batch_size], len(x) // self.batch_size)
        generator = torch.Generator().manual_seed(self.seed)
        shuffle = not self.sorted_labels
        return DataLoader(
            self.train, batch_size=self.batch_size, shuffle=shuffle, generator=generator
        )

    def val_dataloader(self) -> Any:
        return DataLoader(self.val, batch_size=256)


class _SameBatch:
    """A loader that yields one batch again and again (the bug)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n: int) -> None:
        self.x, self.y, self.n = x, y, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        for _ in range(self.n):
            yield self.x, self.y


def _mlp(data: dict[str, Any] | None = None, **kw: Any) -> Callable[[int], Any]:
    def build(seed: int) -> tuple[pl.LightningModule, pl.LightningDataModule]:
        torch.manual_seed(seed)
        return ZooMLP(**kw), ZooData(seed=seed, **(data or {}))

    return build


def _timm(
    name: str = "test_resnet", data: dict[str, Any] | None = None, freeze: bool = False, **kw: Any
) -> Callable[[int], Any]:
    def build(seed: int) -> tuple[pl.LightningModule, pl.LightningDataModule]:
        torch.manual_seed(seed)
        module = TimmClassifier(name, num_classes=10, **kw)
        if freeze:  # a frozen backbone; BatchNorm left in train mode
            for n, p in module.named_parameters():
                p.requires_grad_(n in module.classifier_parameter_names)
        return module, ZooData(image_size=16, channels=3, seed=seed, **(data or {}))

    return build


#: (name, expected code or None for healthy, build(seed) -> (module, datamodule)).
SETUPS: list[tuple[str, str | None, Callable[[int], Any]]] = [
    ("softmax_before_cross_entropy", "softmax_before_loss", _mlp(softmax_before_loss=True)),
    ("targets_off_by_one", "labels_out_of_range", _mlp(data={"label_shift": 1})),
    ("unnormalised_inputs_0_255", "inputs_unscaled", _mlp(data={"raw_pixels": True})),
    ("all_zero_init", "weights_zero", _mlp(init_constant=0.0)),
    ("constant_init_symmetric", "weights_symmetric", _mlp(init_constant=0.05)),
    ("lr_100x_too_high", "update_ratio_high", _mlp(lr=1e-1)),
    ("lr_1000x_too_low", "update_ratio_low", _mlp(lr=1e-6)),
    ("dying_relu_negative_bias", "dead_units", _mlp(bias_init=-10.0)),
    ("frozen_layer_trains", "frozen_param_changed", _mlp(frozen_first_retrained=True)),
    ("bn_train_mode_frozen_backbone", "frozen_bn_drift", _timm(freeze=True)),
    ("same_batch_every_step", "repeated_batch", _mlp(data={"same_batch": True})),
    ("dropout_on_in_eval", "dropout_in_eval", _mlp(dropout=0.3, train_in_validation=True)),
    (
        "exploding_deep_plain_mlp",
        "grad_exploding",
        _mlp(depth=12, init_std=0.4, optimizer="sgd", lr=1e-3),
    ),
    ("vanishing_deep_sigmoid_mlp", "grad_vanishing", _mlp(depth=12, activation="sigmoid")),
    ("nan_from_log_0", "nonfinite_loss", _mlp(manual_log_loss=True)),
    ("unshuffled_sorted_data", "class_imbalance", _mlp(data={"sorted_labels": True})),
    ("timm_unnormalised_inputs", "inputs_unscaled", _timm(data={"raw_pixels": True})),
    ("timm_lr_1000x_too_low", "update_ratio_low", _timm(lr=1e-6)),
    # healthy
    ("healthy_mlp_adam", None, _mlp()),
    ("healthy_mlp_sgd", None, _mlp(optimizer="sgd", lr=0.05)),
    ("healthy_mlp_tanh_dropout", None, _mlp(activation="tanh", dropout=0.1)),
    ("healthy_test_resnet", None, _timm()),
    ("healthy_test_efficientnet", None, _timm("test_efficientnet")),
    ("healthy_test_vit", None, _timm("test_vit", model_kwargs={"img_size": 16})),
]


def setup_by_name(name: str) -> tuple[str | None, Callable[[int], Any]]:
    """(expected code, build) of the setup called ``name``."""
    for setup_name, code, build in SETUPS:
        if setup_name == name:
            return code, build
    raise ValueError(f"unknown setup {name!r}; known: {[s[0] for s in SETUPS]}")
