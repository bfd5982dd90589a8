"""A ready image classifier LightningModule over any timm model."""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_tune._lightning import LightningModule
from lightning_tune._validation import check_bool, check_number, check_optional
from lightning_tune.timm_utils import classifier_parameter_names, create_model, layer_groups

__all__ = ["OPTIMIZERS", "TimmClassifier"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


class TimmClassifier(LightningModule):
    """Image classification with any timm model: parameter groups, metrics and fine-tuning hooks.

    The optimizer gets timm-style parameter groups: no weight decay on norms, biases and the
    model's ``no_weight_decay()`` parameters; with ``layer_decay`` the groups follow the model's
    own ``group_matcher`` and each carries ``lr_scale = layer_decay ** depth`` (0 = head). Every
    group also carries ``name``, ``param_names`` (names in this module) and ``initial_lr`` (the
    unscaled base LR); its ``lr`` starts at ``initial_lr * lr_scale``. The module returns no LR
    scheduler: add :class:`~lightning_tune.callbacks.LRSchedule`, which owns the LR and honours
    ``lr_scale``.

    Logged: ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``test_loss``,
    ``test_acc``. The loss is ``self.criterion`` (an ``nn.CrossEntropyLoss``) so that callbacks
    such as :class:`~lightning_tune.callbacks.LabelSmoothing` can reach it.

    Args:
        model_name: any timm model name (``timm.list_models()``).
        num_classes: number of classes (>= 1).
        pretrained: False, True (hub weights) or a path to a local weights file.
        optimizer: ``"adamw"`` (default), ``"adam"`` or ``"sgd"`` (with ``momentum``).
        lr: base learning rate (> 0).
        weight_decay: decoupled (AdamW) or L2 (SGD/Adam) decay, not applied to norms/biases.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        layer_decay: optional layer-wise LR decay in (0, 1].
        model_kwargs: extra ``timm.create_model`` arguments (``drop_rate``, ``img_size``, ...).

    Example:
        >>> module = TimmClassifier("test_resnet", num_classes=3, lr=1e-3, layer_decay=0.5)
        >>> optimizer = module.configure_optimizers()
        >>> [round(g["lr_scale"], 4) for g in optimizer.param_groups][-2:]
        [1.0, 1.0]
        >>> module(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        model_name: str = "test_resnet",
        num_classes: int = 10,
        pretrained: bool | str | os.PathLike = False,
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        momentum: float = 0.9,
        nesterov: bool = False,
        layer_decay: float | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(
                f"`optimizer` must be one of {sorted(OPTIMIZERS)}, but got {optimizer=!r}"
            )
        check_number("lr", lr, low=0, low_open=True)
        check_number("weight_decay", weight_decay, low=0)
        check_number("momentum", momentum, low=0, high=1, high_open=True)
        check_bool("nesterov", nesterov)
        check_optional(check_number, "layer_decay", layer_decay, low=0, high=1, low_open=True)
        if isinstance(pretrained, os.PathLike):
            pretrained = os.fspath(pretrained)
        self.save_hyperparameters()
        self.model = create_model(
            model_name, num_classes=num_classes, pretrained=pretrained, **(model_kwargs or {})
        )
        self.criterion = nn.CrossEntropyLoss()
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    # ----------------------------------------------------------------- structure for callbacks
    @property
    def classifier(self) -> nn.Module:
        """The model's classifier module (``get_classifier()``)."""
        return self.model.get_classifier()

    @property
    def classifier_parameter_names(self) -> list[str]:
        """Names (in this module) of the classifier's parameters."""
        return [f"model.{name}" for name in classifier_parameter_names(self.model)]

    def layer_groups(self, coarse: bool = False) -> list[tuple[str, list[str]]]:
        """The model's layer groups bottom to top, with parameter names in this module.

        The last group holds the head (and any parameter no matcher claims), as in timm.
        """
        return [
            (name, [f"model.{n}" for n in names])
            for name, names in layer_groups(self.model, coarse=coarse)
        ]

    # ---------------------------------------------------------------------------- optimization
    def _no_decay(self, name: str, param: nn.Parameter) -> bool:
        skip = getattr(self.model, "no_weight_decay", lambda: set())()
        return param.ndim <= 1 or name.endswith(".bias") or name.removeprefix("model.") in skip

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer (see the class docstring for their keys)."""
        hp = self.hparams
        params = dict(self.named_parameters())
        if hp.layer_decay is None:
            layered = [("all", list(params), 1.0)]
        else:
            groups = self.layer_groups(coarse=False)
            depth = len(groups) - 1
            layered = [
                (name, names, float(hp.layer_decay) ** (depth - i))
                for i, (name, names) in enumerate(groups)
            ]
        out: list[dict[str, Any]] = []
        for layer_name, names, scale in layered:
            for decay in (True, False):
                chosen = [
                    n
                    for n in names
                    if params[n].requires_grad and self._no_decay(n, params[n]) is not decay
                ]
                if not chosen:
                    continue
                out.append(
                    {
                        "params": [params[n] for n in chosen],
                        "param_names": chosen,
                        "name": f"{layer_name}/{'decay' if decay else 'no_decay'}",
                        "weight_decay": float(hp.weight_decay) if decay else 0.0,
                        "lr_scale": scale,
                        "initial_lr": float(hp.lr),
                        "lr": float(hp.lr) * scale,
                    }
                )
        return out

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        kwargs: dict[str, Any] = {"lr": hp.lr}
        if hp.optimizer == "sgd":
            kwargs.update(momentum=hp.momentum, nesterov=hp.nesterov and hp.momentum > 0)
        return OPTIMIZERS[hp.optimizer](self.param_groups(), **kwargs)

    # --------------------------------------------------------------------------------- steps
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _shared_step(self, batch: Any, stage: str, metric: MulticlassAccuracy) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.criterion(logits, targets)
        metric(logits.detach(), targets)
        self.log(f"{stage}_loss", loss, prog_bar=stage != "train", on_step=False, on_epoch=True)
        self.log(f"{stage}_acc", metric, prog_bar=stage == "val", on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train", self.train_acc)

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val", self.val_acc)

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return F.softmax(self(images), dim=-1)
