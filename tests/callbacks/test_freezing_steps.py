"""LayerFreezing in optimizer steps and fractions of the run: the same shape at any epoch size."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_tune.callbacks import LayerFreezing, LRSchedule
from lightning_tune.models import TimmClassifier


def loader(n: int, batch_size: int = 8) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 16, 16, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


class PerStep(Callback):
    """Number of trainable parameter tensors before each optimizer step."""

    def __init__(self) -> None:
        self.trainable: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.trainable.append(sum(p.requires_grad for p in pl_module.parameters()))


def run(freezing: LayerFreezing, epochs: int, images: int, trainer_kwargs, **extra) -> PerStep:
    """30 optimizer steps: ``epochs`` epochs of ``images / 8`` steps."""
    pl.seed_everything(0, verbose=False)
    module = TimmClassifier("test_resnet", num_classes=3, lr=1e-2)
    steps = PerStep()
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[freezing, steps, *extra.pop("callbacks", [])],
        limit_val_batches=0,
        **trainer_kwargs,
    )
    trainer.fit(module, train_dataloaders=loader(images), **extra)
    return steps


SHAPES = [(30, 8), (3, 80)]  # 30 epochs of 1 step, 3 epochs of 10 steps: 30 steps each


@pytest.mark.parametrize(("epochs", "images"), SHAPES)
def test_a_fraction_freezes_the_same_part_of_the_run_at_any_epoch_size(
    epochs, images, trainer_kwargs
):
    freezing = LayerFreezing("freeze_then_unfreeze", unfreeze_at=0.3)
    steps = run(freezing, epochs, images, trainer_kwargs)
    head_only, everything = min(steps.trainable), max(steps.trainable)
    assert len(steps.trainable) == 30
    assert steps.trainable == [head_only] * 9 + [everything] * 21  # 30 % of the run frozen
    assert freezing.step_schedule()[0][0] == 9
    assert freezing.describe_schedule() == ["at 30% of the run (step 9 of 30)"]


def test_epochs_do_not_give_the_same_shape(trainer_kwargs):
    frozen = []
    for epochs, images in SHAPES:
        freezing = LayerFreezing("freeze_then_unfreeze", unfreeze_at_epoch=1)
        steps = run(freezing, epochs, images, trainer_kwargs)
        frozen.append(steps.trainable.count(min(steps.trainable)))
    assert frozen == [1, 10]  # 3 % of one run and 33 % of the other


@pytest.mark.parametrize(("epochs", "images"), SHAPES)
def test_gradual_fractions_unfreeze_at_the_same_steps(epochs, images, trainer_kwargs):
    freezing = LayerFreezing("gradual", unfreeze_at=0.2, unfreeze_every=0.1)
    steps = run(freezing, epochs, images, trainer_kwargs)
    changes = [i for i in range(1, 30) if steps.trainable[i] != steps.trainable[i - 1]]
    assert changes == [6, 9, 12, 15, 18]  # five groups below the head, one every 3 steps
    assert [s for s, _ in freezing.step_schedule()] == changes


def test_steps_unfreeze_in_the_middle_of_an_epoch(trainer_kwargs):
    freezing = LayerFreezing("gradual", milestones=[5, 12], unit="step")
    steps = run(freezing, 3, 80, trainer_kwargs)
    changes = [i for i in range(1, 30) if steps.trainable[i] != steps.trainable[i - 1]]
    assert changes == [5, 12]
    assert freezing.unfrozen_groups == ["head", "layer4", "layer3"]


def test_a_fractional_warmup_is_counted_in_steps_of_this_run(trainer_kwargs):
    freezing = LayerFreezing("freeze_then_unfreeze", unfreeze_at=0.5, warmup_steps=0.2)
    seen: dict[str, int] = {}

    class Groups(Callback):
        def on_train_end(self, trainer, pl_module):
            for group in trainer.optimizers[0].param_groups:
                if "warmup_steps" in group:
                    seen[group["name"]] = group["warmup_steps"]

    run(freezing, 3, 80, trainer_kwargs, callbacks=[LRSchedule("constant"), Groups()])
    assert seen and set(seen.values()) == {6}  # 20 % of 30 steps


def test_resume_in_steps_matches_the_uninterrupted_run(tmp_path, trainer_kwargs):
    def fit(ckpt_path: str | None = None) -> TimmClassifier:
        pl.seed_everything(0, verbose=False)
        module = TimmClassifier("test_resnet", num_classes=3, lr=1e-2)
        saver = ModelCheckpoint(
            dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}"
        )
        trainer = pl.Trainer(
            max_epochs=3,
            callbacks=[LayerFreezing("gradual", unfreeze_at=0.5, lr_decay=0.5), saver],
            limit_val_batches=0,
            deterministic=True,
            **{**trainer_kwargs, "enable_checkpointing": True},
        )
        trainer.fit(module, train_dataloaders=loader(80), ckpt_path=ckpt_path)
        return module

    full = fit()
    for epoch in (0, 1):  # before the first unfreeze (step 15) and after it
        resumed = fit(str(tmp_path / "ckpt" / f"epoch={epoch}.ckpt"))
        for key, value in full.state_dict().items():
            assert torch.equal(value, resumed.state_dict()[key]), (epoch, key)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"unfreeze_at": 1.5},
            ValueError,
            r"`unfreeze_at` must be an int >= 0 \(epochs\) or a float in \[0, 1\) \(a fraction "
            r"of the run\), but got unfreeze_at=1.5",
        ),
        ({"unfreeze_at": "10%"}, TypeError, r"`unfreeze_at` must be an int >= 0"),
        ({"unfreeze_at": 2, "unfreeze_at_epoch": 2}, ValueError, "either `unfreeze_at`"),
        ({"unfreeze_at_epoch": 2, "unit": "step"}, ValueError, "use `unfreeze_at`"),
        ({"unit": "minute"}, ValueError, r"`unit` must be one of \['epoch', 'step'\]"),
        ({"unfreeze_every": 0.0}, ValueError, r"`unfreeze_every` must be an int >= 1 \(epochs\)"),
        ({"milestones": [0.1, 3]}, ValueError, r"or of fractions of the run \(not both\)"),
        ({"warmup_steps": -0.5}, ValueError, r"`warmup_steps` must be an int >= 0 \(steps\)"),
    ],
)
def test_bad_moments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LayerFreezing(**kwargs)
