from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from lightning_tune.data import DigitsDataModule
from lightning_tune.models import TimmClassifier


def test_one_epoch_on_digits_beats_chance(trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(image_size=16, batch_size=32)
    module = TimmClassifier("test_resnet", num_classes=10, lr=3e-3)
    trainer = pl.Trainer(max_epochs=1, **trainer_kwargs)
    trainer.fit(module, datamodule=dm)
    metrics = trainer.callback_metrics
    assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(metrics)
    assert float(metrics["val_acc"]) > 0.3  # chance is 0.1
    test = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert test["test_acc"] > 0.3


def test_weight_decay_spares_norms_and_biases():
    module = TimmClassifier("test_resnet", num_classes=3, weight_decay=0.1)
    groups = module.configure_optimizers().param_groups
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"all/decay", "all/no_decay"}
    assert by_name["all/no_decay"]["weight_decay"] == 0.0
    assert by_name["all/decay"]["weight_decay"] == 0.1
    assert all(n.endswith("weight") for n in by_name["all/decay"]["param_names"])
    assert "model.fc.bias" in by_name["all/no_decay"]["param_names"]
    assert "model.bn1.weight" in by_name["all/no_decay"]["param_names"]
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(module.parameters()))


def test_layer_decay_scales_lr_by_depth_from_the_model_group_matcher():
    module = TimmClassifier("test_resnet", num_classes=3, lr=0.01, layer_decay=0.5)
    groups = module.configure_optimizers().param_groups
    layers = [name for name, _ in module.layer_groups()]
    depth = len(layers) - 1
    for group in groups:
        index = layers.index(group["name"].split("/")[0])
        assert group["lr_scale"] == pytest.approx(0.5 ** (depth - index))
        assert group["lr"] == pytest.approx(0.01 * group["lr_scale"])
        assert group["initial_lr"] == 0.01
    head = next(g for g in groups if "model.fc.weight" in g["param_names"])
    assert head["lr_scale"] == 1.0


def test_structure_for_freezing_callbacks():
    module = TimmClassifier("test_vit", num_classes=4, model_kwargs={"img_size": 16})
    assert module.classifier is module.model.head
    assert module.classifier_parameter_names == ["model.head.weight", "model.head.bias"]
    groups = module.layer_groups()
    assert set(module.classifier_parameter_names) <= set(groups[-1][1])  # the head: last group
    assert all(n.startswith("model.") for _, names in groups for n in names)


def test_sgd_with_momentum_and_hyperparameters_round_trip(tmp_path, trainer_kwargs):
    module = TimmClassifier("test_resnet", num_classes=10, optimizer="sgd", lr=0.05, momentum=0.8)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.8
    trainer = pl.Trainer(max_steps=2, limit_val_batches=0, **trainer_kwargs)
    trainer.fit(module, datamodule=DigitsDataModule(image_size=16, batch_size=16))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    restored = TimmClassifier.load_from_checkpoint(path)
    assert restored.hparams.optimizer == "sgd" and restored.hparams.lr == 0.05
    x = torch.randn(2, 3, 16, 16)
    module.eval()
    restored.eval()
    assert torch.equal(module(x), restored(x))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 0}, ValueError, "num_classes` must be an int >= 1, but got num_classes=0"),
        ({"lr": 0.0}, ValueError, r"`lr` must be a number > 0, but got lr=0.0"),
        ({"lr": -1e-3}, ValueError, r"`lr` must be a number > 0"),
        ({"lr": "fast"}, TypeError, "`lr` must be a number, but got lr='fast'"),
        (
            {"optimizer": "lamb"},
            ValueError,
            r"`optimizer` must be one of \['adam', 'adamw', 'sgd'\]",
        ),
        ({"layer_decay": 1.5}, ValueError, r"`layer_decay` must be a number > 0 and <= 1"),
        ({"layer_decay": "0.7"}, TypeError, r"`layer_decay` must be a number, but got"),
        ({"weight_decay": -0.1}, ValueError, r"`weight_decay` must be a number >= 0, but got"),
        (
            {"weight_decay": "0.05"},
            TypeError,
            r"`weight_decay` must be a number, but got weight_decay='0.05'",
        ),
        ({"momentum": 1.0}, ValueError, r"`momentum` must be a number >= 0 and < 1"),
        ({"nesterov": "yes"}, TypeError, r"`nesterov` must be true or false"),
        ({"model_name": "resnet_18"}, ValueError, "Did you mean"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        TimmClassifier(**{"model_name": "test_resnet", "num_classes": 3, **kwargs})
