"""Fine-tuning on a grid of settings: where does a recipe beat plain full fine-tuning?

Transfer task, offline: each model is pretrained once on the even digits (weights saved to a
local file made here, cached in ``--cache``), then fine-tuned on the odd digits with a fraction
of their labels. The grid crosses batch {8, 32, 64}, LR {3e-4, 1e-3, 3e-3}, labels {5 %, 10 %,
30 %}, epochs {10, 30} and models {test_resnet, test_efficientnet, test_vit}: nine *bases*
(model, batch, labels, epochs) from an L9 orthogonal array, every base at every LR, so 27
settings that cover every value of every axis, and every pair of the three 3-level axes of a
base. The score is the test accuracy of the last epoch (no early stopping, no selection).

Arms (``--arms``): ``plain`` (full fine-tuning, constant LR), ``backbone_finetuning``
(Lightning's ``BackboneFinetuning`` defaults), ``old_recipe`` (the README's former
recommendation), ``preset`` (``lightning_tune.recipes.finetune`` at the setting's LR),
``preset_auto`` (the preset with no LR given: the LR from its probe, judged on the validation
accuracy; once per base), ``preset_probe_loss`` (the probe judged on the validation loss),
``preset_range_test`` (an LR range test judged on the validation loss), ``preset_auto_train``
(the range test on the training loss) and ``cand_*``
(candidate recipes of the pilot that chose the preset). The *oracle* is ``plain`` at the best
LR of its base, read from the same runs.

Every finished run is appended to ``--results`` (JSONL) and skipped when the command runs
again, so an interrupted grid resumes. ``--summary`` prints the tables of
``docs/benchmarks/finetuning.md`` from the JSONL; ``--plot`` writes the heat map.

Run the grid (2 worker processes, one torch thread each; be nice on a shared machine)::

    nice -n 19 python benchmarks/bench_finetuning.py --workers 2 \
        --results docs/benchmarks/finetuning_runs.jsonl
    python benchmarks/bench_finetuning.py --results docs/benchmarks/finetuning_runs.jsonl \
        --summary --plot docs/benchmarks/finetuning.png
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BackboneFinetuning
from torch import nn

from lightning_tune import DigitsDataModule, TimmClassifier
from lightning_tune.callbacks import LabelSmoothing, LayerFreezing, LRSchedule
from lightning_tune.schedules import Schedule

MODELS = ("test_resnet", "test_efficientnet", "test_vit")
MODEL_KWARGS: dict[str, dict[str, Any]] = {"test_vit": {"img_size": 16, "patch_size": 4}}
BATCHES = (8, 32, 64)
LRS = (3e-4, 1e-3, 3e-3)
LABELS = (0.05, 0.1, 0.3)
EPOCHS = (10, 30)
IMAGE_SIZE = 16  # the digits are 8x8: 16 px loses nothing and costs a quarter of 32 px
SOURCE, TARGET = (0, 2, 4, 6, 8), (1, 3, 5, 7, 9)
PRETRAIN = {"epochs": 15, "batch_size": 64, "lr": 3e-3}
PRETRAIN_LR = {"test_efficientnet": 1e-2}  # 3e-3 leaves it at 0.59 source accuracy
TIE = 0.01  # a setting's mean within +-1 point counts as a tie


@dataclass(frozen=True)
class Base:
    """A setting without its LR."""

    model: str
    batch: int
    labels: float
    epochs: int


def bases() -> list[Base]:
    """Nine bases from the L9 orthogonal array: every pair of model, batch and labels once.

    30 epochs go to one base of each model, on the 5 % and 10 % labels (30 % for 30 epochs
    would cost as much as the rest of the grid).
    """
    out = []
    for i, model in enumerate(MODELS):
        for j, batch in enumerate(BATCHES):
            labels = LABELS[(i + j) % 3]
            long = (i, j) in ((0, 0), (1, 2), (2, 2))
            out.append(Base(model, batch, labels, EPOCHS[1] if long else EPOCHS[0]))
    return out


# ------------------------------------------------------------------------------ arms
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


def _old_recipe(run: dict) -> list[Any]:
    return [
        LayerFreezing("gradual", unfreeze_at_epoch=1, lr_decay=0.9, warmup_steps=4),
        LRSchedule("cosine", warmup=0.1),
        LabelSmoothing(0.1),
    ]


# The preset with no LR given, one run per base and seed: how it searches for the LR.
AUTO_ARMS: dict[str, dict[str, Any]] = {
    "preset_auto": {},  # the preset's default: the LR probe, judged on the validation accuracy
    "preset_probe_loss": {"monitor": "val_loss", "mode": "min"},  # the probe on val_loss
    "preset_range_test": {"lr_search": "range_test", "monitor": "val_loss", "mode": "min"},
    "preset_auto_train": {"lr_search": "range_test", "monitor": None},  # the training loss
}


def _preset(run: dict, module: TimmClassifier, data: DigitsDataModule) -> list[Any]:
    from lightning_tune.recipes import finetune

    if run["arm"] in AUTO_ARMS:
        recipe = finetune(module, data, max_epochs=run["epochs"], **AUTO_ARMS[run["arm"]])
    else:
        recipe = finetune(module, data, max_epochs=run["epochs"], lr=run["lr"])
    run["preset"] = recipe.summary()
    return recipe.callbacks


@dataclass(frozen=True)
class WarmupStableDecay(Schedule):
    """Constant, then a cosine down to 0 over the last ``decay`` fraction of the run."""

    needs_total: ClassVar[bool] = True
    decay: float = 0.3

    def __call__(self, step: float, total: int | None = None) -> float:
        start = (1 - self.decay) * total
        if step < start:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - start) / (total - start)))


def _head_first(run: dict, steps: int, fraction: float = 0.1) -> LayerFreezing:
    """Head only for ``fraction`` of the epochs (the pilot's step-unaware stand-in), then the
    backbone joins with a warmup of its own of ``fraction`` of the run."""
    return LayerFreezing(
        "freeze_then_unfreeze",
        unfreeze_at_epoch=max(1, round(fraction * run["epochs"])),
        warmup_steps=max(1, round(fraction * steps)),
    )


class HeadScale(pl.Callback):
    """The pilot's head-LR multiplier: the last layer group's ``lr_scale`` times ``scale``."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def on_fit_start(self, trainer: pl.Trainer, pl_module: TimmClassifier) -> None:
        head = set(pl_module.layer_groups()[-1][1])
        for group in trainer.optimizers[0].param_groups:
            if set(group["param_names"]) <= head:
                group["lr_scale"] = group.get("lr_scale", 1.0) * self.scale


def _wsd(decay: float = 0.3, warmup: float = 0.1, start: float = 0.0) -> LRSchedule:
    return LRSchedule(WarmupStableDecay(decay), warmup=warmup, warmup_start_factor=start)


# The pilot's candidates: each a function of the run and its length in steps.
CANDIDATES: dict[str, Callable[[dict, int], list[Any]]] = {
    "cand_cosine": lambda r, n: [LRSchedule("cosine", warmup=0.1)],
    "cand_cosine_floor": lambda r, n: [LRSchedule("cosine", warmup=0.1, min_factor=0.1)],
    "cand_warmup_const": lambda r, n: [LRSchedule("constant", warmup=0.1)],
    "cand_wsd": lambda r, n: [_wsd()],
    "cand_wsd_head": lambda r, n: [_wsd(), _head_first(r, n)],
    "cand_wsd20": lambda r, n: [_wsd(0.2, 0.05, 0.1)],
    "cand_wsd10": lambda r, n: [_wsd(0.1, 0.05, 0.1)],
    "cand_wsd20_head": lambda r, n: [_wsd(0.2, 0.05, 0.1), _head_first(r, n, 0.05)],
    "cand_wsd20_h10": lambda r, n: [_wsd(0.2, 0.05, 0.1), HeadScale(10.0)],
    "cand_const_h10": lambda r, n: [_wsd(0.01, 0.05, 0.1), HeadScale(10.0)],
    "cand_wsd_ls": lambda r, n: [_wsd(), LabelSmoothing(0.1)],
    "cand_wsd_decay": lambda r, n: [_wsd(), LayerFreezing("none", lr_decay=0.8)],
    "cand_cosine_head": lambda r, n: [LRSchedule("cosine", warmup=0.1), _head_first(r, n)],
}
ARMS = ("plain", "backbone_finetuning", "old_recipe", "preset", *AUTO_ARMS, *CANDIDATES)
DEFAULT_ARMS = ("plain", "backbone_finetuning", "old_recipe", "preset", "preset_auto")


def callbacks_for(run: dict, module: TimmClassifier, data: DigitsDataModule) -> list[Any]:
    arm = run["arm"]
    if arm == "plain":
        return []
    if arm == "backbone_finetuning":
        return [BackboneFinetuning()]
    if arm == "old_recipe":
        return _old_recipe(run)
    if arm == "preset" or arm in AUTO_ARMS:
        return _preset(run, module, data)
    steps = run["epochs"] * len(data.train_dataloader())
    return CANDIDATES[arm](run, steps)


# ------------------------------------------------------------------------------ runs
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
        limit_val_batches=0,
        deterministic=True,
    )


def pretrained_file(model: str, cache: Path) -> Path:
    """Pretrain ``model`` on the source digits once; the weights file is cached."""
    path = cache / f"{model}_digits_even_{IMAGE_SIZE}px.pth"
    if path.exists():
        return path
    torch.set_num_threads(1)  # the same float sums on any machine: the same weights file
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(
        image_size=IMAGE_SIZE, batch_size=PRETRAIN["batch_size"], classes=list(SOURCE), seed=0
    )
    module = TimmClassifier(
        model,
        num_classes=len(SOURCE),
        lr=PRETRAIN_LR.get(model, PRETRAIN["lr"]),
        model_kwargs=MODEL_KWARGS.get(model),
    )
    t = trainer(PRETRAIN["epochs"], [LRSchedule("cosine", warmup=0.1)])
    t.fit(module, datamodule=data)
    acc = float(t.test(module, datamodule=data, verbose=False)[0]["test_acc"])
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(module.model.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({"source_test_acc": acc}))
    return path


def finetune_run(run: dict, weights: str) -> dict:
    """One fine-tuning run; returns ``run`` with its test accuracy and wall time."""
    pl.seed_everything(run["seed"], verbose=False)
    data = DigitsDataModule(
        image_size=IMAGE_SIZE,
        batch_size=run["batch"],
        classes=list(TARGET),
        train_fraction=run["labels"],
        val_fraction=run.get("val_fraction", 0.15),
        seed=run["seed"],
    )
    cls = BackboneModule if run["arm"] == "backbone_finetuning" else TimmClassifier
    module = cls(
        run["model"],
        num_classes=len(TARGET),
        # preset_auto*: a placeholder, the centre of the preset's LR probe
        lr=run["lr"] if run["lr"] is not None else 1e-3,
        pretrained=weights,
        model_kwargs=MODEL_KWARGS.get(run["model"]),
        # per-layer param groups, so that a callback can scale the head's LR alone
        layer_decay=1.0 if run["arm"].endswith("_h10") else None,
    )
    start, cpu = time.perf_counter(), time.process_time()
    t = trainer(run["epochs"], callbacks_for(run, module, data))
    t.fit(module, datamodule=data)
    acc = float(t.test(module, datamodule=data, verbose=False)[0]["test_acc"])
    sizes = data.split_sizes()
    return {
        **run,
        "acc": acc,
        "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "train_images": sizes["train"],
        "steps": t.global_step,
    }


def _quiet() -> None:
    torch.set_num_threads(1)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning_tune").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _key(run: dict) -> tuple:
    return (run["model"], run["batch"], run["labels"], run["epochs"], run["lr"], run["arm"],
            run["seed"])  # fmt: skip


def planned_runs(
    arms: Iterable[str],
    seeds: int,
    selected: list[Base],
    lrs: Iterable[float] = LRS,
    first_seed: int = 0,
) -> list[dict]:
    """Seed by seed, then arm by arm (in the order given), the longest runs first: an
    interrupted grid has whole seeds of the first arms, where the arms differ most."""
    runs = []
    by_length = sorted(selected, key=lambda b: -b.epochs * b.labels / b.batch)
    for seed in range(first_seed, first_seed + seeds):
        for arm in arms:
            # preset_auto* chooses its own LR: one run per base and seed (lr=None).
            arm_lrs: tuple[float | None, ...] = (None,) if arm in AUTO_ARMS else tuple(lrs)
            for base in by_length:
                for lr in arm_lrs:
                    runs.append({**asdict(base), "lr": lr, "arm": arm, "seed": seed})
    return runs


def load(path: Path) -> list[dict]:
    """The finished runs; a run recorded twice (two commands at once) counts once."""
    if not path.exists():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return list({_key(r): r for r in runs}.values())


def run_grid(args: argparse.Namespace) -> None:
    selected = [b for i, b in enumerate(bases()) if args.bases is None or i in args.bases]
    done = {_key(r) for r in load(args.results)}
    planned = planned_runs(args.arms, args.seeds, selected, args.lrs, args.first_seed)
    planned = [{**r, "val_fraction": args.val_fraction} for r in planned]
    todo = [r for r in planned if _key(r) not in done]
    weights = {m: str(pretrained_file(m, args.cache)) for m in {r["model"] for r in todo}}
    print(f"{len(done)} runs done, {len(todo)} to go", flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, get_context("spawn"), initializer=_quiet) as pool:
        futures = [pool.submit(finetune_run, r, weights[r["model"]]) for r in todo]
        for n, future in enumerate(as_completed(futures), 1):
            result = future.result()
            with args.results.open("a") as f:
                f.write(json.dumps(result) + "\n")
            print(
                f"[{n}/{len(todo)} {time.perf_counter() - start:.0f}s] {result['arm']} "
                f"{result['model']} b{result['batch']} {result['labels']:g} e{result['epochs']} "
                f"lr={result['lr']} s{result['seed']}: {result['acc']:.3f}",
                flush=True,
            )


# ------------------------------------------------------------------------------ summary
def means(runs: list[dict]) -> dict[tuple, float]:
    """Mean accuracy per (base, lr, arm)."""
    groups: dict[tuple, list[float]] = {}
    for r in runs:
        key = (Base(r["model"], r["batch"], r["labels"], r["epochs"]), r["lr"], r["arm"])
        groups.setdefault(key, []).append(r["acc"])
    return {k: statistics.mean(v) for k, v in groups.items()}


def compare(mean: dict[tuple, float], arm: str, against: str = "plain") -> list[dict]:
    """Per setting: the arm's mean, plain at the same LR, the oracle, and the verdict."""
    rows = []
    for (base, lr, a), value in sorted(mean.items(), key=lambda kv: str(kv[0])):
        if a != arm or lr is None:
            continue
        ref = mean.get((base, lr, against))
        plains = [mean.get((base, x, "plain")) for x in LRS]
        if ref is None or any(p is None for p in plains):
            continue
        diff = value - ref
        verdict = "win" if diff > TIE else "loss" if diff < -TIE else "tie"
        rows.append(
            {
                "base": base,
                "lr": lr,
                "acc": value,
                "ref": ref,
                "diff": diff,
                "oracle": max(plains),
                "verdict": verdict,
            }
        )
    return rows


def per_axis(rows: list[dict]) -> list[str]:
    lines = [
        "| axis | value | wins | ties | losses | mean diff (points) |",
        "|---|---|---|---|---|---|",
    ]
    axes: list[tuple[str, Callable[[dict], Any]]] = [
        ("model", lambda r: r["base"].model),
        ("batch", lambda r: r["base"].batch),
        ("LR", lambda r: r["lr"]),
        ("labels", lambda r: f"{r['base'].labels:.0%}"),
        ("epochs", lambda r: r["base"].epochs),
    ]
    for name, get in axes:
        for value in sorted({get(r) for r in rows}, key=str):
            sub = [r for r in rows if get(r) == value]
            count = {v: sum(r["verdict"] == v for r in sub) for v in ("win", "tie", "loss")}
            diff = 100 * statistics.mean(r["diff"] for r in sub)
            lines.append(
                f"| {name} | {value} | {count['win']} | {count['tie']} | {count['loss']} "
                f"| {diff:+.1f} |"
            )
    return lines


def summary(runs: list[dict], arms: list[str]) -> str:
    mean = means(runs)
    out = []
    for arm in [a for a in arms if a != "plain" and a not in AUTO_ARMS]:
        rows = compare(mean, arm)
        if not rows:
            continue
        count = {v: sum(r["verdict"] == v for r in rows) for v in ("win", "tie", "loss")}
        worst = min(rows, key=lambda r: r["diff"])
        gap = 100 * statistics.mean(r["oracle"] - r["acc"] for r in rows)
        out += [
            f"### {arm} vs plain at the same LR ({len(rows)} settings)",
            "",
            f"wins {count['win']}, ties {count['tie']}, losses {count['loss']} "
            f"(>= plain in {count['win'] + count['tie']}/{len(rows)}); worst "
            f"{100 * worst['diff']:+.1f} points ({_setting(worst)}); mean "
            f"{100 * statistics.mean(r['diff'] for r in rows):+.1f} points; "
            f"below the oracle by {gap:.1f} points on average",
            "",
            *per_axis(rows),
            "",
        ]
    for arm in [a for a in arms if a in AUTO_ARMS]:
        out += _auto_lines(mean, arm, runs)
    out += _settings_table(mean, arms)
    return "\n".join(out)


def _setting(r: dict) -> str:
    b = r["base"]
    return f"{b.model} b{b.batch} {b.labels:.0%} {b.epochs}ep lr {r['lr']:g}"


def _auto_lines(mean: dict[tuple, float], arm: str, runs: list[dict]) -> list[str]:
    """An LR-searching arm against the oracle, and against plain at every LR of its base."""
    rows = sorted(((b, v) for (b, lr, a), v in mean.items() if a == arm), key=lambda r: str(r[0]))
    if not rows:
        return []
    gaps = [max(mean.get((b, x, "plain"), math.nan) for x in LRS) - v for b, v in rows]
    versus = [v - mean[(b, x, "plain")] for b, v in rows for x in LRS if (b, x, "plain") in mean]
    count = {
        "win": sum(d > TIE for d in versus),
        "tie": sum(abs(d) <= TIE for d in versus),
        "loss": sum(d < -TIE for d in versus),
    }

    def of(base: Base, name: str) -> list[dict]:
        return [r for r in runs if r["arm"] == name and Base(r["model"], r["batch"], r["labels"],
                                                             r["epochs"]) == base]  # fmt: skip

    lines = [
        f"### {arm} (no LR given) vs the oracle ({len(rows)} bases)",
        "",
        f"below the oracle by {100 * statistics.mean(gaps):.1f} points on average "
        f"(worst {100 * max(gaps):.1f}, best {100 * min(gaps):+.1f}); against plain at each "
        f"LR of its base: wins {count['win']}, ties {count['tie']}, losses {count['loss']} "
        f"(>= plain in {count['win'] + count['tie']}/{len(versus)}), worst "
        f"{100 * min(versus):+.1f} points",
        "",
        "| model | batch | labels | epochs | LR chosen (per seed) | accuracy | oracle | gap "
        "(points) | wall time / plain's |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (base, value), gap in zip(rows, gaps):
        chosen = sorted(of(base, arm), key=lambda r: r["seed"])
        lrs = ", ".join(f"{r['preset']['lr']:.1g}" for r in chosen if r.get("preset"))
        plain = [r["seconds"] for r in of(base, "plain")]
        cost = (
            statistics.mean(r["seconds"] for r in chosen) / statistics.mean(plain) if plain else 0
        )
        lines.append(
            f"| {base.model} | {base.batch} | {base.labels:.0%} | {base.epochs} | {lrs} "
            f"| {value:.3f} | {value + gap:.3f} | {100 * gap:+.1f} | {cost:.1f}x |"
        )
    return [*lines, ""]


def _settings_table(mean: dict[tuple, float], arms: list[str]) -> list[str]:
    shown = [a for a in arms if a not in AUTO_ARMS]
    lines = [
        "| model | batch | labels | epochs | LR | " + " | ".join(shown) + " | oracle |",
        "|---" * (6 + len(shown)) + "|",
    ]
    for base in bases():
        for lr in LRS:
            if (base, lr, "plain") not in mean:
                continue
            oracle = max(mean.get((base, x, "plain"), -1.0) for x in LRS)
            cells = [f"{mean[(base, lr, a)]:.3f}" if (base, lr, a) in mean else "" for a in shown]
            lines.append(
                f"| {base.model} | {base.batch} | {base.labels:.0%} | {base.epochs} | {lr:g} | "
                + " | ".join(cells)
                + f" | {oracle:.3f} |"
            )
    return ["### Every setting (mean test accuracy over seeds)", "", *lines, ""]


def plot(runs: list[dict], path: Path) -> None:
    """Heat maps: the preset at each setting's LR against plain at that LR, the oracle and
    BackboneFinetuning; the preset given no LR (one run per base) against plain at each LR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = means(runs)
    names = [f"{b.model[5:]} b{b.batch} {b.labels:.0%} {b.epochs}ep" for b in bases()]
    panels = [  # (arm, title, reference arm; None: the oracle)
        ("preset", "plain, same LR", "plain"),
        ("preset", "oracle", None),
        ("preset", "BackboneFinetuning", "backbone_finetuning"),
        ("preset_auto", "plain at this LR", "plain"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(17, 5), sharey=True)
    for ax, (arm, title, ref) in zip(axes, panels):
        grid = torch.full((len(names), len(LRS)), math.nan)
        for i, base in enumerate(bases()):
            for j, lr in enumerate(LRS):
                value = mean.get((base, None if arm in AUTO_ARMS else lr, arm))
                other = (
                    max(mean.get((base, x, "plain"), math.nan) for x in LRS)
                    if ref is None
                    else mean.get((base, lr, ref))
                )
                if value is not None and other is not None:
                    grid[i, j] = 100 * (value - other)
        image = ax.imshow(grid.numpy(), cmap="RdYlGn", vmin=-15, vmax=15, aspect="auto")
        for (i, j), v in zip(((i, j) for i in range(len(names)) for j in range(len(LRS))),
                             grid.flatten().tolist()):  # fmt: skip
            if not math.isnan(v):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(LRS)), [f"{lr:g}" for lr in LRS])
        ax.set_xlabel("LR")
        label = "preset, no LR given" if arm in AUTO_ARMS else "preset at this LR"
        ax.set_title(f"{label}\nminus {title} (points)", fontsize=10)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", type=Path, default=Path("docs/benchmarks/finetuning_runs.jsonl")
    )
    parser.add_argument("--cache", type=Path, default=Path("lightning_tune_runs/bench_finetuning"))
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=ARMS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed .. first-seed+seeds-1"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.15,
        help="the digits held out for validation (0.15: 136 target images; 0.05: 45)",
    )
    parser.add_argument("--bases", type=int, nargs="+", default=None, help="indices 0-8 of bases()")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LRS), help="a subset of LRS")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--summary", action="store_true", help="print the tables, run nothing")
    parser.add_argument("--plot", type=Path, default=None, help="write the heat map here")
    args = parser.parse_args()
    _quiet()
    if args.summary or args.plot:
        runs = load(args.results)
        if args.summary:
            print(summary(runs, args.arms))
        if args.plot:
            plot(runs, args.plot)
        return
    run_grid(args)


if __name__ == "__main__":
    main()
