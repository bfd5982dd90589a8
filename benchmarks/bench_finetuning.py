"""Fine-tuning recipes on digits 5-9 with 5% / 10% of the labels, from a model pretrained on 0-4.

Pretrains ``test_resnet`` once on digits 0-4 (weights saved to a local file), then fine-tunes on
digits 5-9 with each recipe, every label fraction and several seeds, all for the same number of
epochs, and reports the test accuracy of the last epoch (mean and std over seeds) and the wall
time. Prints one JSON line; with ``--plot`` also writes a PNG.

Run (about 5 minutes on one CPU core with the defaults: 7 recipes x 2 fractions x 5 seeds)::

    python benchmarks/bench_finetuning.py --plot docs/benchmarks/finetuning.png \
        --raw docs/benchmarks/finetuning_runs.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BackboneFinetuning
from torch import nn

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.callbacks import LabelSmoothing, LayerFreezing, LRSchedule

MODEL = "test_resnet"
IMAGE_SIZE = 32
SOURCE, TARGET = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
LR = 3e-3
BATCH_SIZE = 8
RECIPES = [
    "scratch",
    "full_finetune",
    "head_only",
    "freeze_then_unfreeze",
    "lightning_backbone_finetuning",
    "recommended",
    "full_finetune_cosine",
]


class BackboneModule(TimmClassifier):
    """TimmClassifier with the ``backbone`` attribute Lightning's BackboneFinetuning needs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        head = self.model.get_classifier()
        self.backbone = nn.ModuleList(m for m in self.model.children() if m is not head)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # BackboneFinetuning adds unnamed groups, which torch refuses next to named ones.
        groups = [{k: v for k, v in g.items() if k != "param_names"} for g in self.param_groups()]
        return torch.optim.AdamW(groups, lr=self.hparams.lr)


def trainer(epochs: int, callbacks: list[Any]) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=epochs,
        deterministic=True,
    )


def pretrain(path: Path, epochs: int) -> float:
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(image_size=IMAGE_SIZE, batch_size=64, classes=SOURCE, seed=0)
    module = TimmClassifier(MODEL, num_classes=len(SOURCE), lr=3e-3)
    t = trainer(epochs, [LRSchedule("cosine", warmup=0.1)])
    t.fit(module, datamodule=data)
    torch.save(module.model.state_dict(), path)
    return float(t.test(module, datamodule=data, verbose=False)[0]["test_acc"])


def recipe_callbacks(recipe: str, epochs: int) -> list[Any]:
    if recipe in ("scratch", "full_finetune"):
        return []
    if recipe == "head_only":
        return [LayerFreezing("none", keep_frozen=5)]  # test_resnet: 5 groups below the head
    if recipe == "freeze_then_unfreeze":
        return [LayerFreezing("freeze_then_unfreeze", unfreeze_at_epoch=epochs // 3)]
    if recipe == "full_finetune_cosine":  # ablation: the recipe's schedule, nothing else
        return [LRSchedule("cosine", warmup=0.1)]
    if recipe == "lightning_backbone_finetuning":
        return [BackboneFinetuning()]
    if recipe == "recommended":
        return [
            LayerFreezing("gradual", unfreeze_at_epoch=1, lr_decay=0.9, warmup_steps=4),
            LRSchedule("cosine", warmup=0.1),
            LabelSmoothing(0.1),
        ]
    raise ValueError(f"unknown recipe {recipe!r}; known: {RECIPES}")


def finetune(
    recipe: str,
    fraction: float,
    seed: int,
    weights: Path,
    epochs: int,
    lr: float = LR,
    batch_size: int = BATCH_SIZE,
) -> dict:
    pl.seed_everything(seed, verbose=False)
    data = DigitsDataModule(
        image_size=IMAGE_SIZE,
        batch_size=batch_size,
        classes=TARGET,
        train_fraction=fraction,
        seed=seed,
    )
    cls = BackboneModule if recipe == "lightning_backbone_finetuning" else TimmClassifier
    module = cls(
        MODEL,
        num_classes=len(TARGET),
        lr=lr,
        pretrained=False if recipe == "scratch" else str(weights),
    )
    t = trainer(epochs, recipe_callbacks(recipe, epochs))
    start = time.perf_counter()
    t.fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    acc = float(t.test(module, datamodule=data, verbose=False)[0]["test_acc"])
    return {"acc": acc, "seconds": seconds, "train_images": data.split_sizes()["train"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    parser.add_argument("--lr", type=float, default=LR, help="base LR of every recipe")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG here")
    parser.add_argument("--raw", type=Path, default=None, help="write every run as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    total = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "digits04.pth"
        source_acc = pretrain(weights, args.pretrain_epochs)
        runs = [
            {
                "recipe": r,
                "fraction": f,
                "seed": s,
                **finetune(r, f, s, weights, args.epochs, args.lr, args.batch_size),
            }
            for f in args.fractions
            for r in args.recipes
            for s in range(args.seeds)
        ]
    summary: dict[str, Any] = {}
    for f in args.fractions:
        for r in args.recipes:
            accs = [x["acc"] for x in runs if x["recipe"] == r and x["fraction"] == f]
            secs = [x["seconds"] for x in runs if x["recipe"] == r and x["fraction"] == f]
            summary[f"{r}@{f:g}"] = {
                "acc_mean": round(statistics.mean(accs), 4),
                "acc_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                "seconds_mean": round(statistics.mean(secs), 2),
            }
    result = {
        "benchmark": "finetuning",
        "model": MODEL,
        "image_size": IMAGE_SIZE,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "source_test_acc": round(source_acc, 4),
        "train_images": {
            f"{f:g}": next(x["train_images"] for x in runs if x["fraction"] == f)
            for f in args.fractions
        },
        "results": summary,
        "total_seconds": round(time.perf_counter() - total, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if args.raw:
        args.raw.write_text(json.dumps(runs, indent=1))
    if args.plot:
        plot(summary, args.fractions, args.recipes, args.plot)
    print(json.dumps(result))


def plot(summary: dict, fractions: list[float], recipes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(fractions)
    for k, f in enumerate(fractions):
        means = [summary[f"{r}@{f:g}"]["acc_mean"] for r in recipes]
        stds = [summary[f"{r}@{f:g}"]["acc_std"] for r in recipes]
        xs = [i + (k - (len(fractions) - 1) / 2) * width for i in range(len(recipes))]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=f"{f:.0%} of target labels")
    ax.set_xticks(range(len(recipes)))
    ax.set_xticklabels([r.replace("_", "\n") for r in recipes], fontsize=8)
    ax.set_ylabel("test accuracy (digits 5-9)")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title("Fine-tuning test_resnet pretrained on digits 0-4 (mean ± std over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
