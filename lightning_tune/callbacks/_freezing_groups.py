"""LayerFreezing's work on the model and the optimizer: requires_grad, BatchNorm modes, param
groups with layer-wise LR, and the frozen-weights checksum (its second base class)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import nn

if TYPE_CHECKING:
    import pytorch_lightning as pl


__all__ = ["FreezingGroups"]

# Public BatchNorm classes (timm's BatchNormAct2d subclasses BatchNorm2d).
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class FreezingGroups:
    """Freezing, BatchNorm and optimizer groups of a :class:`~lightning_tune.callbacks.LayerFreezing`."""

    # ------------------------------------------------------------------------- freezing
    def _trainable_names(self, unfrozen: set[int]) -> set[str]:
        names = {n for i in unfrozen for n in self._groups[i][1]}
        if self.train_bn:
            names |= self._bn_param_names
        return names - self._user_frozen

    def _apply(self, pl_module: pl.LightningModule, unfrozen: set[int]) -> None:
        """Set ``requires_grad`` and the BatchNorm modes for the given unfrozen groups."""
        trainable = self._trainable_names(unfrozen)
        managed = {n for _, names in self._groups for n in names}
        for name, param in pl_module.named_parameters():
            if name in managed and name not in self._user_frozen:
                param.requires_grad_(name in trainable)
        self._unfrozen = set(unfrozen)
        # Modes are set in the training hooks: Lightning warns about eval modules at fit start.
        before = {id(m) for m in self._frozen_bn}
        self._frozen_bn = [
            m for m, names in self._bn_modules if not self.train_bn and not names & trainable
        ]
        now = {id(m) for m in self._frozen_bn}
        self._thawed_bn += [m for m, _ in self._bn_modules if id(m) in before - now]
        self._verify_pending = self.verify_frozen

    def _collect_bn(self, pl_module: pl.LightningModule) -> None:
        self._bn_modules = []
        for name, module in pl_module.named_modules():
            if isinstance(module, _BATCH_NORMS):
                prefix = f"{name}." if name else ""
                self._bn_modules.append(
                    (module, {prefix + n for n, _ in module.named_parameters(recurse=False)})
                )
        self._bn_param_names = {n for _, names in self._bn_modules for n in names}
        self._frozen_bn = []
        self._thawed_bn = []

    # ------------------------------------------------------------------------- optimizer groups
    @staticmethod
    def _names_of(pl_module: pl.LightningModule) -> dict[int, str]:
        return {id(p): n for n, p in pl_module.named_parameters()}

    def _group_of(self) -> dict[str, int]:
        return {n: i for i, (_, names) in enumerate(self._groups) for n in names}

    def _scale_existing_groups(
        self, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Give the optimizer's own groups ``initial_lr``/``lr_scale`` by depth (fresh runs)."""
        if (
            any(g.get("lr_scale", 1.0) != 1.0 for g in optimizer.param_groups)
            and self.lr_decay != 1
        ):
            rank_zero_warn(
                "LayerFreezing(lr_decay=...) multiplies the `lr_scale` the optimizer's groups "
                "already have (e.g. TimmClassifier(layer_decay=...)): use one of the two"
            )
        names_of = self._names_of(pl_module)
        group_of = self._group_of()
        head = len(self._groups) - 1
        rebuilt: list[dict[str, Any]] = []
        for group in optimizer.param_groups:
            by_depth: dict[int, list[torch.Tensor]] = {}
            for p in group["params"]:
                depth = self.depth(group_of.get(names_of.get(id(p), ""), head))
                # With lr_decay == 1 depths do not matter: keep the group whole.
                by_depth.setdefault(depth if self.lr_decay != 1 else 0, []).append(p)
            base_scale = float(group.get("lr_scale", 1.0))
            initial_lr = float(group.get("initial_lr", group["lr"]))
            for depth, params in sorted(by_depth.items(), reverse=True):
                new = {k: v for k, v in group.items() if k not in ("params", "param_names")}
                new["params"] = params
                if "param_names" in group:  # the names the optimizer was given
                    own = dict(zip(map(id, group["params"]), group["param_names"]))
                    new["param_names"] = [own[id(p)] for p in params]
                if "name" in group:
                    new["name"] = self._group_name(group["name"], params, names_of, depth)
                    if len(by_depth) > 1 and new["name"] == group["name"]:
                        new["name"] = f"{group['name']}/depth{depth}"
                new["initial_lr"] = initial_lr
                new["lr_scale"] = base_scale * self.lr_decay**depth
                new["lr"] = initial_lr * new["lr_scale"]
                rebuilt.append(new)
        if len(rebuilt) != len(optimizer.param_groups):
            if optimizer.state:
                raise ValueError(
                    "LayerFreezing must split optimizer groups that mix layer depths "
                    "(lr_decay < 1), but the optimizer already has state; create it fresh in "
                    "`configure_optimizers`"
                )
            optimizer.param_groups.clear()
            for group in rebuilt:
                optimizer.add_param_group(group)
        else:
            for group, new in zip(optimizer.param_groups, rebuilt):
                group.update(
                    {k: new[k] for k in ("initial_lr", "lr_scale", "lr", "name") if k in new}
                )

    def _group_name(
        self, name: str, params: list[torch.Tensor], names_of: dict[int, str], depth: int
    ) -> str:
        """``all/decay`` -> ``head/decay`` when all of a group's parameters are in one layer
        group (the head at fit start): the optimizer's group says which layers it trains."""
        first, _, rest = str(name).partition("/")
        group_of = self._group_of()
        owners = {group_of.get(names_of.get(id(p), ""), -1) for p in params}
        if first != "all" or len(owners) != 1 or -1 in owners:
            return name
        layer = self._groups[owners.pop()][0]
        return f"{layer}/{rest}" if rest else layer

    def _head_optimizer(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> torch.optim.Optimizer:
        """The optimizer that trains the head: unfrozen groups join it (GAN-style setups keep
        their other optimizers untouched)."""
        params = dict(pl_module.named_parameters())
        head = {id(params[n]) for n in self._groups[-1][1]}
        for optimizer in trainer.optimizers:
            if any(id(p) in head for g in optimizer.param_groups for p in g["params"]):
                return optimizer
        if not trainer.optimizers:
            raise ValueError(
                "LayerFreezing found no optimizer: return one from `configure_optimizers`"
            )
        return trainer.optimizers[0]

    def _base_lr(self, optimizer: torch.optim.Optimizer, pl_module: pl.LightningModule) -> float:
        if self.lr is not None:
            return self.lr
        head = set(self._groups[-1][1])
        names_of = self._names_of(pl_module)
        for group in optimizer.param_groups:
            if any(names_of.get(id(p)) in head for p in group["params"]):
                return float(group.get("initial_lr", group["lr"]))
        first = optimizer.param_groups[0]
        return float(first.get("initial_lr", first["lr"]))

    def _add_groups(
        self, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer, indices: list[int]
    ) -> list[str]:
        present = {id(p) for g in optimizer.param_groups for p in g["params"]}
        params = dict(pl_module.named_parameters())
        with_names = "param_names" in optimizer.param_groups[0]
        base_lr = self._base_lr(optimizer, pl_module)
        decay = self.weight_decay
        if decay is None:
            decay = max(
                (float(g.get("weight_decay", 0.0)) for g in optimizer.param_groups), default=0.0
            )
        added: list[str] = []
        for i in indices:
            name, names = self._groups[i]
            chosen = [n for n in names if params[n].requires_grad and id(params[n]) not in present]
            already = [
                n
                for n in names
                if params[n].requires_grad
                and id(params[n]) in present
                and n not in self._bn_param_names
            ]
            if already and self.lr_decay != 1:  # same LR either way with lr_decay == 1
                rank_zero_warn(
                    f"LayerFreezing: {len(already)} parameters of {name} (e.g. {already[0]}) were "
                    "already in the optimizer while frozen, so they train with that group's LR, "
                    "not lr_scale; build the optimizer from trainable parameters only "
                    "(`p.requires_grad`) for per-layer LRs"
                )
            scale = self.lr_decay ** self.depth(i)
            for with_decay in (True, False):
                part = [n for n in chosen if self._decays(n, params[n]) is with_decay]
                if not part:
                    continue
                group: dict[str, Any] = {
                    "params": [params[n] for n in part],
                    "name": f"{name}/{'decay' if with_decay else 'no_decay'}",
                    "weight_decay": decay if with_decay else 0.0,
                    "initial_lr": base_lr,
                    "lr_scale": scale,
                    "lr": base_lr * scale,
                }
                if with_names:
                    group["param_names"] = part
                if self._warmup:
                    group["warmup_steps"] = self._warmup
                optimizer.add_param_group(group)
                added.append(group["name"])
        return added

    def _decays(self, name: str, param: torch.Tensor) -> bool:
        return not (param.ndim <= 1 or name.endswith(".bias") or name in self._no_weight_decay)

    # ------------------------------------------------------------------------- verification
    def _frozen_tensors(self, pl_module: pl.LightningModule) -> list[tuple[str, torch.Tensor]]:
        tensors = [(n, p) for n, p in pl_module.named_parameters() if not p.requires_grad]
        frozen_bn = {id(m) for m in self._frozen_bn}
        for name, module in pl_module.named_modules():
            if id(module) in frozen_bn:
                tensors += [(f"{name}.{b}", t) for b, t in module.named_buffers(recurse=False)]
        return tensors

    @staticmethod
    def _checksum(tensors: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
        with torch.no_grad():
            if not tensors:
                return torch.zeros(0, 2, dtype=torch.float64)
            return torch.stack(
                [torch.stack([t.double().sum(), t.double().abs().sum()]) for _, t in tensors]
            ).cpu()
