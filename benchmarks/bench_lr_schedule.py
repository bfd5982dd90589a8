"""Per-step overhead of the LRSchedule callback against a bare Trainer (issue 3).

Variants of the same tiny-MLP fit (4 named param groups, SGD), interleaved in random order over
repeats in one process:

* ``bare``: a plain Trainer, constant LR;
* ``ours``: ``LRSchedule("cosine", warmup=0.1)`` (per-step LR for every group);
* ``empty``: a bare Trainer plus an empty ``pl.Callback()`` (Lightning's per-callback
  dispatch cost, the floor for any callback);
* ``torch``: the same schedule the usual way, ``SequentialLR(LinearLR, CosineAnnealingLR)``
  returned from ``configure_optimizers`` with ``interval="step"`` (for reference).

The step time is the CPU time (``time.process_time``) between consecutive
``on_train_batch_start`` calls inside an epoch (forward, backward, optimizer step and every
hook); its median over the run, then the median over repeats. The ratio is computed per repeat
(same repeat, interleaved) and its median reported, together with the ratio of the fastest
repeats (robust on a loaded machine). ``paired``: one fit in which LRSchedule's hooks run only
in even epochs (an epoch is a fraction of a second, so machine load hits both sides alike); the
ratio of the median step times with / without. Separately, the time spent inside LRSchedule's own
hooks is measured per step (median over steps). Prints one JSON line.

Run: ``python benchmarks/bench_lr_schedule.py [--repeats 7] [--steps 300]``
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
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_tune.callbacks import LRSchedule

logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")


class MLP(pl.LightningModule):
    def __init__(self, torch_schedule: bool = False, total: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.torch_schedule = torch_schedule
        self.total = total

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        groups = [
            {"params": [p], "name": n, "lr_scale": 0.5**i}
            for i, (n, p) in enumerate(self.named_parameters())
        ]
        optimizer = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
        if not self.torch_schedule:
            return optimizer
        warmup = round(0.1 * self.total)
        sched = torch.optim.lr_scheduler
        scheduler = sched.SequentialLR(
            optimizer,
            [
                sched.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup),
                sched.CosineAnnealingLR(optimizer, T_max=self.total - warmup),
            ],
            milestones=[warmup],
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.steps: list[float] = []
        self._last: float | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.process_time()
        if self._last is not None:
            self.steps.append(now - self._last)
        self._last = now


class TimedLRSchedule(LRSchedule):
    """LRSchedule that also records the time spent in its per-step hooks (one entry a step)."""

    hook_ns: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        start = time.perf_counter_ns()
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        TimedLRSchedule.hook_ns.append(time.perf_counter_ns() - start)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        start = time.perf_counter_ns()
        super().on_before_optimizer_step(trainer, pl_module, optimizer)
        TimedLRSchedule.hook_ns[-1] += time.perf_counter_ns() - start


class EveryOtherEpoch(pl.Callback):
    """Runs ``inner``'s per-step hooks only in even epochs (odd epochs = no schedule callback)."""

    def __init__(self, inner: LRSchedule) -> None:
        self.inner = inner
        self.active = True

    def on_fit_start(self, trainer, pl_module):
        self.inner.on_fit_start(trainer, pl_module)

    def on_train_start(self, trainer, pl_module):
        self.inner.on_train_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module):
        self.active = trainer.current_epoch % 2 == 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.active:
            self.inner.on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.active:
            self.inner.on_before_optimizer_step(trainer, pl_module, optimizer)


def paired(steps: int, epochs: int) -> float:
    """Step time with / without LRSchedule, alternating every epoch of one fit."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * 32, 64, generator=g)
    y = torch.randint(0, 10, (steps * 32,), generator=g)
    timers = [StepTimer() for _ in range(epochs)]

    class PerEpoch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            timers[trainer.current_epoch].on_train_batch_start(trainer, pl_module, batch, batch_idx)

    schedule = EveryOtherEpoch(LRSchedule("cosine", warmup=0.1, warmup_start_factor=1e-3))
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[schedule, PerEpoch()],
    )
    trainer.fit(MLP(), DataLoader(TensorDataset(x, y), batch_size=32))
    on = [t for e, timer in enumerate(timers) if e % 2 == 0 for t in timer.steps[5:]]
    off = [t for e, timer in enumerate(timers) if e % 2 == 1 for t in timer.steps[5:]]
    return statistics.median(on) / statistics.median(off)


def fit(variant: str, steps: int, timed: bool = False) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * 32, 64, generator=g)
    y = torch.randint(0, 10, (steps * 32,), generator=g)
    train = DataLoader(TensorDataset(x, y), batch_size=32)
    timer = StepTimer()
    callbacks: list[pl.Callback] = [timer]
    if variant == "empty":
        # Lightning dispatches every hook of every callback (state_key, profiler context) even
        # when the callback defines none: the floor any callback pays.
        callbacks.insert(0, pl.Callback())
    if variant == "ours":
        schedule_cls = TimedLRSchedule if timed else LRSchedule
        callbacks.insert(0, schedule_cls("cosine", warmup=0.1, warmup_start_factor=1e-3))
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(MLP(torch_schedule=variant == "torch", total=steps), train)
    return statistics.median(timer.steps[10:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    variants = ["bare", "empty", "ours", "torch"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    fit("bare", 50)  # warm up imports and allocator
    for _ in range(args.repeats):
        order = variants[:]
        rng.shuffle(order)
        for variant in order:
            times[variant].append(fit(variant, args.steps))
    ratios = {
        v: statistics.median(t / b for t, b in zip(times[v], times["bare"]))
        for v in ("empty", "ours", "torch")
    }
    vs_empty = statistics.median(o / e for o, e in zip(times["ours"], times["empty"]))
    # the least-disturbed repeat of each variant: robust on a shared, loaded machine
    min_ratios = {v: min(times[v]) / min(times["bare"]) for v in ("empty", "ours", "torch")}
    paired_ratios = [paired(args.steps // 4, 16) for _ in range(args.repeats)]
    TimedLRSchedule.hook_ns = []
    fit("ours", args.steps, timed=True)
    # median: a context switch inside one call (shared machine) says nothing about the hook
    hook_us = statistics.median(TimedLRSchedule.hook_ns) / 1e3
    bare_us = 1e6 * statistics.median(times["bare"])
    print(
        json.dumps(
            {
                "benchmark": "lr_schedule_overhead",
                "repeats": args.repeats,
                "steps": args.steps,
                "param_groups": 4,
                "step_us_median": {
                    v: round(1e6 * statistics.median(t), 1) for v, t in times.items()
                },
                "ratio_vs_bare_median": {v: round(r, 4) for v, r in ratios.items()},
                "ratio_vs_bare_of_min": {v: round(r, 4) for v, r in min_ratios.items()},
                "ratio_ours_vs_empty_callback_median": round(vs_empty, 4),
                "ratio_paired_epochs_median": round(statistics.median(paired_ratios), 4),
                "ratio_paired_epochs_all": [round(r, 4) for r in paired_ratios],
                "lrschedule_hook_us_per_step_median": round(hook_us, 2),
                "hook_share_of_bare_step": round(hook_us / bare_us, 4),
                "target_ratio": 1.02,
                "torch": torch.__version__,
                "pytorch_lightning": pl.__version__,
                "python": platform.python_version(),
                "cpu_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
