"""Resume from any checkpoint: every stateful callback, four places a checkpoint is written.

One uninterrupted run writes checkpoints at the last batch of an epoch (where Lightning skips
the next validation and ``on_train_epoch_start`` on resume), mid-epoch, at a train-epoch end
and after validation; each resumed run must take exactly the steps of the uninterrupted one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune._lightning import NAMESPACES, Callback
from lightning_tune.callbacks import (
    EarlyStopping,
    GradientClipping,
    LabelSmoothing,
    LayerFreezing,
    LRSchedule,
)
from lightning_tune.callbacks._resume import resume_skips_validation

BATCHES, EPOCHS = 4, 4
POINTS = {
    # name: (ModelCheckpoint settings, the step of the first checkpoint)
    "last-batch": ({"every_n_train_steps": BATCHES}, BATCHES),
    "mid-epoch": ({"every_n_train_steps": BATCHES + 2}, BATCHES + 2),
    "epoch-end": ({"every_n_epochs": 1, "save_on_train_epoch_end": True}, BATCHES),
    "after-validation": (
        {"every_n_epochs": 1, "save_on_train_epoch_end": False, "monitor": "val_loss"},
        BATCHES,
    ),
}


class Trace(Callback):
    """Per step: global step, epoch, every group's LR, ε, trainable parameters, the loss."""

    def __init__(self, smoothing: LabelSmoothing) -> None:
        self.smoothing = smoothing
        self.rows: list[tuple[Any, ...]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        groups = trainer.optimizers[0].param_groups
        self.rows.append(
            (
                trainer.global_step,
                trainer.current_epoch,
                tuple((g.get("name"), g["lr"]) for g in groups),
                self.smoothing.current_epsilon,
                sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
                float(outputs["loss"]),
            )
        )


def _callbacks() -> list[Any]:
    smoothing = LabelSmoothing(0.2, anneal_epochs=3)
    return [
        LRSchedule("cosine", warmup=3, eta_min=1e-4),
        LayerFreezing("gradual", unfreeze_at_epoch=1, lr_decay=0.5, warmup_steps=2),
        smoothing,
        EarlyStopping("val_loss", patience=20),
        GradientClipping(max_norm=1.0),
        Trace(smoothing),
    ]


def _run(pl: ModuleType, root: Path, extra: list[Any], ckpt_path: str | None = None):
    """A run with a Trainer of the Lightning package ``pl`` (each test runs with both)."""
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(image_size=16, classes=[0, 1, 2, 3], batch_size=16)
    module = TimmClassifier("test_resnet", num_classes=4, lr=3e-3)
    callbacks = _callbacks()
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        limit_train_batches=BATCHES,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        callbacks=[*callbacks, *extra],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module, callbacks


@pytest.fixture(scope="module", params=NAMESPACES, ids=lambda ns: ns.__name__)
def uninterrupted(request, tmp_path_factory):
    pl = request.param
    root = tmp_path_factory.mktemp("resume")
    checkpoints = [
        pl.callbacks.ModelCheckpoint(
            dirpath=root / name, filename="{step}", save_top_k=-1, **settings
        )
        for name, (settings, _) in POINTS.items()
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, module, callbacks = _run(pl, root, checkpoints)
    skipped = [w for w in caught if "skips that validation" in str(w.message)]
    return root, trainer, module, callbacks, skipped, pl


@pytest.mark.slow
@pytest.mark.parametrize("point", list(POINTS))
def test_resume_takes_exactly_the_steps_of_the_uninterrupted_run(uninterrupted, point):
    root, _, module, callbacks, _, pl = uninterrupted
    _, step = POINTS[point]
    path = root / point / f"step={step}.ckpt"
    assert path.is_file(), sorted(p.name for p in (root / point).iterdir())
    _, resumed, resumed_callbacks = _run(pl, root / f"{point}-resumed", [], str(path))
    full, rest = callbacks[-1].rows, resumed_callbacks[-1].rows
    assert rest[0][0] == step + 1 and len(rest) == EPOCHS * BATCHES - step
    assert rest == full[step:]  # LRs of every group, ε, frozen set and loss, per step
    assert len(full[-1][2]) > len(full[0][2])  # the freezing callback did add groups
    final, expected = resumed.state_dict(), module.state_dict()
    assert all(torch.equal(final[k], v) for k, v in expected.items())
    stopping, reference = resumed_callbacks[3], callbacks[3]
    if point != "last-batch":  # Lightning skips one validation on resume there (warned)
        assert stopping.state_dict() == reference.state_dict()


@pytest.mark.slow
def test_a_checkpoint_before_a_due_validation_warns_once(uninterrupted):
    *_, skipped, _ = uninterrupted
    assert len(skipped) == 1
    message = str(skipped[0].message)
    assert "last training batch of epoch 0 (step 4)" in message
    assert "ModelCheckpoint(every_n_epochs=1)" in message and "4 batches per epoch" in message


def test_no_checkpoint_point_outside_a_last_batch_is_flagged(lightning_ns):
    assert not resume_skips_validation(
        lightning_ns.Trainer(logger=False, enable_progress_bar=False)
    )
