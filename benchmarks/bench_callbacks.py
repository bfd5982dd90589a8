"""Per-step overhead of EarlyStopping + GradientClipping + LabelSmoothing (issue 4).

Three variants of the same tiny-MLP fit, interleaved over repeats in one process:

* ``bare``: a plain Trainer, plain cross-entropy;
* ``bare_ls``: a plain Trainer, ``nn.CrossEntropyLoss(label_smoothing=0.1)``: what the
  smoothed loss itself costs, without any callback;
* ``lightning``: Lightning's ``EarlyStopping`` + ``Trainer(gradient_clip_val=1.0)`` and
  ``nn.CrossEntropyLoss(label_smoothing=0.1)`` (smoothing in train *and* val, Lightning has no
  callback for it);
* ``ours``: ``EarlyStopping`` + ``GradientClipping(max_norm=1.0)`` + ``LabelSmoothing(0.1)``;
* ``empty3`` (with ``--floor``): ``bare_ls`` plus three empty ``pl.Callback()`` objects: the
  cost of Lightning dispatching every hook of three callbacks that do nothing, the floor of any
  three-callback implementation.

The step time is the wall-clock time (one torch thread) between consecutive
``on_train_batch_start`` calls inside an epoch (forward, backward, clipping, optimizer step and
every hook). Per fit we take the 10th percentile of the step times (the machine is shared: the
low quantile is the step without contention spikes) and report the median over the interleaved
repeats; ratios are taken within a repeat, then their median. The once-per-validation early-stopping check is not a per-step cost; ``median_fit_s``
(whole fits, wall clock) shows it is negligible too. Prints one JSON line.

``--model mlp`` (default) is the worst case for per-step overhead (a ~1 ms step);
``--model timm`` trains ``TimmClassifier("test_resnet")`` on the digits at 16 px.

Run: ``python benchmarks/bench_callbacks.py [--model mlp|timm] [--repeats 15] [--steps 150]
[--floor]``
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import statistics
import time
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping as LightningEarlyStopping
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_tune.callbacks import EarlyStopping, GradientClipping, LabelSmoothing

logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")


class MLP(pl.LightningModule):
    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.criterion(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", self.criterion(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.steps: list[float] = []
        self._last: float | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self._last is not None:
            self.steps.append(now - self._last)
        self._last = now


def timm_module(label_smoothing: float = 0.0) -> pl.LightningModule:
    from lightning_tune import TimmClassifier

    torch.manual_seed(0)
    module = TimmClassifier("test_resnet", num_classes=10, lr=1e-3)
    module.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    return module


def digits_loaders(steps: int) -> tuple[DataLoader, DataLoader]:
    from lightning_tune import DigitsDataModule

    dm = DigitsDataModule(image_size=16, batch_size=32)
    dm.setup("fit")
    images, labels = zip(*[batch for batch in dm.train_dataloader()])
    x, y = torch.cat(images), torch.cat(labels)
    x, y = (
        x.repeat(steps * 32 // len(x) + 1, 1, 1, 1)[: steps * 32],
        y.repeat(steps * 32 // len(y) + 1)[: steps * 32],
    )
    return (
        DataLoader(TensorDataset(x, y), batch_size=32),
        DataLoader(TensorDataset(x[:64], y[:64]), batch_size=32),
    )


def loaders(steps: int) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * 32, 64, generator=g)
    y = torch.randint(0, 10, (steps * 32,), generator=g)
    train = DataLoader(TensorDataset(x, y), batch_size=32)
    val = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=32)
    return train, val


def fit_once(variant: str, steps: int, epochs: int, model: str = "mlp") -> tuple[float, float]:
    timer = StepTimer()
    kwargs: dict = {}
    make = MLP if model == "mlp" else timm_module
    if variant == "bare":
        module, callbacks = make(), []
    elif variant == "bare_ls":
        module, callbacks = make(label_smoothing=0.1), []
    elif variant == "empty3":
        module, callbacks = make(label_smoothing=0.1), [pl.Callback() for _ in range(3)]
    elif variant == "lightning":
        module = make(label_smoothing=0.1)
        callbacks = [LightningEarlyStopping("val_loss", patience=100)]
        kwargs["gradient_clip_val"] = 1.0
    else:
        module = make()
        callbacks = [
            EarlyStopping("val_loss", patience=100),
            GradientClipping(max_norm=1.0),
            LabelSmoothing(0.1),
        ]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer, *callbacks],
        **kwargs,
    )
    train, val = (loaders if model == "mlp" else digits_loaders)(steps)
    start = time.perf_counter()
    trainer.fit(module, train, val)
    total = time.perf_counter() - start
    return statistics.quantiles(timer.steps, n=10)[0], total


def clipping_cost_us(model: str, number: int = 300) -> dict[str, float]:
    """Time of the clipping work alone on the model's real gradients (timeit, best of 5).

    ``ours``: ``GradientClipping.on_before_optimizer_step`` (fused norm, non-finite check,
    clip); ``lightning``: ``torch.nn.utils.clip_grad_norm_``, which ``gradient_clip_val`` runs
    (Lightning adds its hook dispatch on top of it).
    """
    import timeit

    module = MLP() if model == "mlp" else timm_module()
    clip = GradientClipping(max_norm=1.0, log_every_n_steps=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clip],
    )
    train, _ = (loaders if model == "mlp" else digits_loaders)(2)
    trainer.fit(module, train)
    optimizer = trainer.optimizers[0]
    x, y = next(iter(train))
    optimizer.zero_grad()
    module.criterion(module(x) if model != "mlp" else module.net(x), y).backward()
    grads = {p: p.grad.clone() for p in module.parameters() if p.grad is not None}
    params = list(grads)

    def reset() -> None:
        for p, g in grads.items():
            p.grad.copy_(g)

    def ours() -> None:
        reset()
        clip.on_before_optimizer_step(trainer, module, optimizer)

    def lightning() -> None:
        reset()
        torch.nn.utils.clip_grad_norm_(params, 1.0)

    base = min(timeit.repeat(reset, number=number, repeat=5))
    return {
        name: round((min(timeit.repeat(fn, number=number, repeat=5)) - base) / number * 1e6, 1)
        for name, fn in (("ours", ours), ("lightning", lightning))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=150, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=["mlp", "timm"], default="mlp")
    parser.add_argument(
        "--floor", action="store_true", help="also run 'empty3': bare_ls + three empty callbacks"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = ["bare", "bare_ls", "lightning", "ours"] + (["empty3"] if args.floor else [])
    for variant in variants:  # warm-up: imports, allocator, first-call costs
        fit_once(variant, 10, 1, args.model)
    step: dict[str, list[float]] = {v: [] for v in variants}
    fit: dict[str, list[float]] = {v: [] for v in variants}
    rng = random.Random(args.seed)
    for _ in range(args.repeats):
        order = variants[:]
        rng.shuffle(order)  # interleaved, in a fresh order every repeat
        for variant in order:
            s, t = fit_once(variant, args.steps, args.epochs, args.model)
            step[variant].append(s)
            fit[variant].append(t)
    med = {v: statistics.median(step[v]) for v in variants}
    # ratio per repeat (same repeat = same machine load), then the median of the ratios
    ratio = {
        name: round(statistics.median(a / b for a, b in zip(step[num], step[den])), 3)
        for name, num, den in (
            ("ours_vs_bare", "ours", "bare"),
            ("lightning_vs_bare", "lightning", "bare"),
            ("ours_vs_bare_ls", "ours", "bare_ls"),
            ("lightning_vs_bare_ls", "lightning", "bare_ls"),
            ("ours_vs_lightning", "ours", "lightning"),
            *(
                (("empty3_vs_bare", "empty3", "bare"), ("empty3_vs_bare_ls", "empty3", "bare_ls"))
                if args.floor
                else ()
            ),
        )
    }
    print(
        json.dumps(
            {
                "benchmark": "callbacks_per_step_overhead",
                "model": (
                    "MLP 64-128-10, SGD"
                    if args.model == "mlp"
                    else "TimmClassifier test_resnet, digits 16px, AdamW"
                )
                + ", batch 32, CPU, 1 thread",
                "repeats": args.repeats,
                "steps_per_epoch": args.steps,
                "epochs": args.epochs,
                "step_ms_p10": {v: round(1e3 * med[v], 4) for v in variants},
                "median_fit_s": {v: round(statistics.median(fit[v]), 3) for v in variants},
                "step_ratio": ratio,
                "clipping_us": clipping_cost_us(args.model),
                "torch": torch.__version__,
                "pytorch_lightning": pl.__version__,
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
