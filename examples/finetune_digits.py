"""Fine-tune a timm model with few labels: pretrain on digits 0-4, fine-tune on 5-9 (offline).

1. pretrain ``test_resnet`` on the digits 0-4 and save its weights to a local file;
2. load that file through ``TimmClassifier(pretrained=path)`` (a new 5-class head is created);
3. fine-tune on the digits 5-9 with only ``--fraction`` of their training labels, with the
   fine-tuning preset (:func:`lightning_tune.recipes.finetune`): its schedule follows the run's
   length in optimizer steps, and the LR comes from a short range test unless ``--lr`` is given.

About a minute on a laptop CPU::

    python examples/finetune_digits.py --fraction 0.1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.callbacks import LRSchedule
from lightning_tune.recipes import finetune


def trainer(epochs: int, callbacks: list) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=epochs,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--fraction", type=float, default=0.1, help="labels kept for 5-9")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=None, help="default: from a range test")
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="where to save the pretrained weights (default: a temp dir)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or Path(tmp) / "digits_0-4.pth"
        # 1. Pretrain on 0-4 and save the timm model's weights.
        pl.seed_everything(0)
        source = DigitsDataModule(image_size=32, batch_size=64, classes=[0, 1, 2, 3, 4])
        model = TimmClassifier(args.model, num_classes=5, lr=3e-3)
        trainer(args.pretrain_epochs, [LRSchedule("cosine", warmup=0.1)]).fit(model, source)
        torch.save(model.model.state_dict(), weights)

        # 2. + 3. Fine-tune on 5-9 with few labels, from the local weights file.
        pl.seed_everything(0)
        target = DigitsDataModule(
            image_size=32, batch_size=8, classes=[5, 6, 7, 8, 9], train_fraction=args.fraction
        )
        model = TimmClassifier(args.model, num_classes=5, pretrained=str(weights))
        plan = finetune(model, target, max_epochs=args.epochs, lr=args.lr)
        print(plan)
        fit = trainer(args.epochs, plan.callbacks)
        fit.fit(model, target)
        result = fit.test(model, target, verbose=False)[0]
    print(
        f"{target.split_sizes()['train']} labelled training images of digits 5-9: "
        f"test accuracy {result['test_acc']:.3f}"
    )


if __name__ == "__main__":
    main()
