"""Train a tiny timm model on the bundled digits with TimmClassifier (offline, ~30 s on CPU).

python examples/train_digits.py --model test_resnet --epochs 5
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.demo import demo_callbacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--layer-decay", type=float, default=None)
    args = parser.parse_args()

    pl.seed_everything(0)
    dm = DigitsDataModule(image_size=32, batch_size=64)
    model = TimmClassifier(
        args.model, num_classes=dm.num_classes, lr=3e-3, layer_decay=args.layer_decay
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=demo_callbacks(),
        logger=pl.loggers.CSVLogger("lightning_tune_runs", name="example"),
    )
    trainer.fit(model, datamodule=dm)
    print(trainer.test(model, datamodule=dm))


if __name__ == "__main__":
    main()
