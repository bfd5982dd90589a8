from __future__ import annotations

import pytest
import pytorch_lightning as pl

from lightning_tune._compat import check_pytorch_lightning


def test_objects_from_the_unified_package_are_named_as_such():
    lightning = pytest.importorskip(
        "lightning", reason="the unified `lightning` package is not installed"
    )
    with pytest.raises(
        TypeError, match=r"`callbacks\[0\]` is a lightning\.pytorch.*cannot be mixed"
    ):
        check_pytorch_lightning(lightning.pytorch.Callback(), "callbacks[0]", "callback")


def test_other_types_are_refused_plainly():
    with pytest.raises(
        TypeError, match=r"`module` must be a pytorch_lightning.LightningModule, but got int"
    ):
        check_pytorch_lightning(3, "module", "module")
    check_pytorch_lightning(pl.Callback(), "callbacks[0]", "callback")


@pytest.mark.parametrize(
    "make",
    [
        lambda cb: cb.LRSchedule("cosine", warmup=0.1),
        lambda cb: cb.EarlyStopping("val_loss"),
        lambda cb: cb.GradientClipping(max_norm=1.0),
        lambda cb: cb.LabelSmoothing(0.1),
        lambda cb: cb.LayerFreezing(),
    ],
)
def test_our_callbacks_in_a_unified_lightning_trainer_fail_with_the_fix(make, tmp_path):
    lightning = pytest.importorskip(
        "lightning", reason="the unified `lightning` package is not installed"
    )
    import torch

    import lightning_tune.callbacks as cb

    class UnifiedModule(lightning.pytorch.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            data = torch.utils.data.TensorDataset(torch.randn(8, 4))
            return torch.utils.data.DataLoader(data, batch_size=4)

    callback = make(cb)
    trainer = lightning.pytorch.Trainer(
        callbacks=[callback],
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
    )
    with pytest.raises(
        TypeError,
        match=f"{type(callback).__name__} is a `pytorch_lightning` "
        r"callback.*pl\.Trainer",
    ):
        trainer.fit(UnifiedModule())
