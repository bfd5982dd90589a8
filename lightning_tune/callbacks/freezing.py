"""Freeze a backbone and unfreeze it gradually, with layer-wise LR decay, for timm models."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_tune._compat import check_trainer
from lightning_tune._lightning import Callback
from lightning_tune.callbacks._freezing_groups import FreezingGroups
from lightning_tune.callbacks._freezing_plan import (
    STRATEGIES,
    FreezingPlan,
    Strategy,
    check_options,
)
from lightning_tune.callbacks._milestones import Unit, run_length, to_steps
from lightning_tune.callbacks._resume import warn_if_resume_skips_validation

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["STRATEGIES", "LayerFreezing"]


class LayerFreezing(FreezingPlan, FreezingGroups, Callback):
    """Freeze a model's lower layers, unfreeze them top-down, and give each layer its own LR.

    The layer groups come from the model itself: for a timm model (a :class:`TimmClassifier`, or
    any LightningModule with a timm model attribute) timm's ``group_matcher`` gives the stem, the
    stages (``coarse=True``) or blocks (``coarse=False``), and the head, which always holds the
    classifier (``get_classifier()`` / ``pretrained_cfg["classifier"]``). For other models pass
    ``groups``: module names or regex patterns over parameter names, bottom to top, head last.

    Strategies (``keep_frozen=K`` additionally keeps the lowest K groups frozen for the whole
    run, whatever the strategy):

    ============================  =================================================================
    ``"gradual"``                 head only, then ``groups_per_step`` more groups top-down at
                                  ``unfreeze_at``, every ``unfreeze_every``, or at the explicit
                                  moments in ``milestones``
    ``"freeze_then_unfreeze"``    head only until ``unfreeze_at``, then everything
    ``"none"``                    everything trains from the start (only discriminative LRs;
                                  with ``keep_frozen`` the bottom layers stay frozen)
    ============================  =================================================================

    Learning rates follow the shared contract of ``lightning_tune``: a group at depth ``d``
    (0 = head) gets ``lr_scale = lr_decay ** d``, its ``initial_lr`` is the unscaled base LR, and
    :class:`~lightning_tune.callbacks.LRSchedule` sets ``lr = initial_lr * lr_scale * f(step)``
    for every group, including those added here. At fit start the optimizer's own groups get
    their ``lr_scale`` multiplied by the decay (a group mixing depths is split by depth). When a
    layer group is unfrozen its parameters are added to the optimizer as new groups (weight decay
    and no-weight-decay, by parameter name), with ``warmup_steps`` for a warmup of their own;
    existing groups and their optimizer state are untouched.

    BatchNorm: layers of frozen groups are put in eval mode, so their running statistics are
    neither used from the batch nor updated; with ``train_bn=True`` they keep training (their
    affine parameters train and the statistics update), as in Lightning's ``BaseFinetuning``.

    The trainable-parameter count is logged as ``freezing/trainable_params`` each epoch (and
    reported on each change). With ``verify_frozen=True`` the first training step after each
    change checks, by checksum, that frozen weights (and frozen BatchNorm statistics) did not
    move, and raises ``RuntimeError`` if they did.

    **When**: ``unfreeze_at``, ``unfreeze_every`` and ``milestones`` count epochs by default
    (``unit="epoch"``), optimizer steps with ``unit="step"``, and a float in [0, 1) is a
    fraction of the run's optimizer steps (``trainer.estimated_stepping_batches``), so a run of
    30 steps and one of 3,000 get the same shape: with 31 images and batch 32 an epoch is one
    step, and ``unfreeze_at_epoch=10`` would freeze a third of a 30-epoch run. Steps and
    fractions are applied at the optimizer step they fall on, epochs at the start of their
    epoch; :meth:`describe_schedule` shows both. ``warmup_steps`` may be a fraction too.

    The state (unfrozen groups, the optimizer's groups by parameter name) is saved in
    checkpoints: resuming rebuilds exactly the same frozen set and param groups before Lightning
    loads the optimizer state, so a resumed run equals the uninterrupted one. Parameters that were
    already frozen when ``fit`` started (frozen by the user) are never unfrozen.

    Args:
        strategy: one of ``"gradual"``, ``"freeze_then_unfreeze"``, ``"none"``.
        unfreeze_at_epoch: epoch of the first unfreeze (default 1); not with ``"none"``.
        unfreeze_every: ``"gradual"``: ``unit``s (or a fraction of the run) between unfreezes
            (default 1).
        groups_per_step: ``"gradual"``: groups unfrozen at each step (default 1).
        milestones: ``"gradual"``: explicit, increasing moments (``unit``s, or fractions of the
            run) of the unfreeze steps instead of ``unfreeze_at``/``unfreeze_every``; groups
            beyond the last step stay frozen.
        keep_frozen: number of bottom groups frozen for the whole run.
        lr_decay: layer-wise LR decay in (0, 1]; 1 gives every group the same LR.
        warmup_steps: optimizer steps (or a float fraction of the run) of linear warmup for each
            newly unfrozen group (driven by ``LRSchedule`` through the group key
            ``"warmup_steps"``).
        train_bn: keep BatchNorm layers of frozen groups training.
        coarse: timm grouping by stage (True) or by block (False).
        groups: explicit groups for non-timm models (each a module name, a regex over parameter
            names, or a list of those), bottom to top; the last one is the head. Parameters no
            entry claims join the head.
        model_attribute: path of the timm model in the LightningModule when it is ambiguous.
        lr: base LR of added groups; default the ``initial_lr`` of the group holding the head.
        weight_decay: weight decay of added groups; default the largest of the optimizer's groups.
        verify_frozen: check after a step that frozen tensors did not change.
        unfreeze_at: the first unfreeze, in ``unit``s or as a fraction of the run (the general
            form of ``unfreeze_at_epoch``; default 1 ``unit``).
        unit: ``"epoch"`` or ``"step"`` (optimizer steps), for int moments.

    Example:
        >>> from lightning_tune import TimmClassifier
        >>> freezing = LayerFreezing("gradual", unfreeze_at_epoch=1, unfreeze_every=2,
        ...                          lr_decay=0.5, warmup_steps=10)
        >>> for epoch, groups in freezing.plan(TimmClassifier("test_resnet"), epochs=4):
        ...     print(epoch, groups, [freezing.lr_scale(g) for g in groups])
        0 ['head'] [1.0]
        1 ['head', 'layer4'] [1.0, 0.5]
        2 ['head', 'layer4'] [1.0, 0.5]
        3 ['head', 'layer4', 'layer3'] [1.0, 0.5, 0.25]

        Train with it (``LRSchedule`` drives the LR of the groups it adds):
        ``pl.Trainer(callbacks=[freezing, LRSchedule("cosine", warmup=0.1)])``.
    """

    def __init__(
        self,
        strategy: Strategy = "gradual",
        *,
        unfreeze_at_epoch: int | None = None,
        unfreeze_every: int | float = 1,
        groups_per_step: int = 1,
        milestones: Sequence[int | float] | None = None,
        keep_frozen: int = 0,
        lr_decay: float = 1.0,
        warmup_steps: int | float = 0,
        unfreeze_at: int | float | None = None,
        unit: Unit = "epoch",
        train_bn: bool = False,
        coarse: bool = True,
        groups: Sequence[str | Sequence[str]] | None = None,
        model_attribute: str | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        verify_frozen: bool = True,
    ) -> None:
        super().__init__()
        # Every argument by name (nothing else is defined yet), checked and normalised.
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self._configure(check_options(**arguments))

        # Resolved in setup.
        self._groups: list[tuple[str, list[str]]] = []
        self._no_weight_decay: set[str] = set()
        self._user_frozen: set[str] = set()
        self._unfrozen: set[int] = set()
        self._restored: dict[str, Any] | None = None
        self._show_plan = False
        self._synced_t: int | None = None  # the epoch (or step) whose groups are unfrozen
        self._reference: tuple[list[str], torch.Tensor] | None = None
        self._verify_pending = False
        self._trainer_ref: weakref.ref[pl.Trainer] | None = None
        self._bn_modules: list[tuple[nn.Module, set[str]]] = []
        self._bn_param_names: set[str] = set()
        self._frozen_bn: list[nn.Module] = []
        self._thawed_bn: list[nn.Module] = []
        # Lightning reads state_key around every hook call of every step: build it once.
        self._state_key = self._generate_state_key(
            strategy=self.strategy, coarse=self.coarse, keep_frozen=self.keep_frozen
        )

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    # ------------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._synced_t = None
        check_trainer(trainer, self, pl_module)
        if stage != "fit":
            return
        self._trainer_ref = weakref.ref(trainer)
        self._resolve_groups(pl_module)
        self._validate(trainer)
        managed = {n for _, names in self._groups for n in names}
        self._user_frozen = {
            n for n, p in pl_module.named_parameters() if n in managed and not p.requires_grad
        }
        self._collect_bn(pl_module)
        initial = self._initial()
        if not self._trainable_names(initial):
            raise ValueError(
                f"LayerFreezing leaves no trainable parameter at the start: the trainable groups "
                f"{[self._groups[i][0] for i in sorted(initial)]} have all their parameters "
                "frozen already (requires_grad=False)"
            )
        self._apply(pl_module, initial)
        self._reference = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after `configure_optimizers` and before Lightning loads the optimizer state.
        if self._restored is None:
            for optimizer in trainer.optimizers:
                self._scale_existing_groups(pl_module, optimizer)
            steps = self.schedule()
            if trainer.lr_scheduler_configs and steps:
                scheduler = type(trainer.lr_scheduler_configs[0].scheduler).__name__
                raise ValueError(
                    f"LayerFreezing adds param groups during training ({steps}, as ({self.unit}, "
                    f"groups)), but configure_optimizers returns the torch LR scheduler "
                    f"{scheduler}, which only knows the groups it was built with: the added ones "
                    "would keep a fixed LR and break the layer-wise order (lr_scale). Remove the "
                    "scheduler and add `lightning_tune.callbacks.LRSchedule` (it schedules added "
                    "groups with their lr_scale), or use LayerFreezing(strategy='none') (no "
                    "groups added)"
                )
            self._show_plan = True  # at train start, once the run's length is known
            return
        state, self._restored = self._restored, None
        known = {name: i for i, name in enumerate(self.group_names)}
        unknown = [g for g in state["unfrozen"] if g not in known]
        if unknown:
            raise ValueError(
                f"checkpoint of LayerFreezing names groups {unknown} this model "
                f"does not have; its groups are {self.group_names}"
            )
        self._apply(pl_module, {known[g] for g in state["unfrozen"]})
        params: dict[str | int, Any] = dict(pl_module.named_parameters())
        names_of = self._names_of(pl_module)
        saved = state.get("optimizers", [])
        for optimizer, groups in zip(trainer.optimizers, saved):
            tensors = {**params, **dict(enumerate(_unnamed(optimizer, names_of)))}
            missing = [n for g in groups for n in g["params"] if n not in tensors]
            if missing:
                raise ValueError(
                    f"checkpoint of LayerFreezing refers to parameters {missing[:5]} "
                    "this model does not have (a number: the optimizer's n-th tensor that is "
                    "not a parameter of the module)"
                )
            if optimizer.state:
                raise ValueError(
                    "LayerFreezing must rebuild the optimizer's groups on resume, "
                    "but the optimizer already has state"
                )
            optimizer.param_groups.clear()
            for group in groups:
                optimizer.add_param_group(
                    {**group, "params": [tensors[n] for n in group["params"]]}
                )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._lengths = run_length(trainer)
        total = self._lengths[0]
        self._warmup = to_steps(self.warmup_steps, "step", total, None)
        if self._show_plan:
            self._show_plan = False
            rank_zero_info(self.plan_table(pl_module))
        if self.by_step and total is not None:
            late = [(s, names) for s, names in self.step_schedule() if s >= total]
            if late:
                rank_zero_warn(
                    f"LayerFreezing: unfreeze steps {late} are at or beyond the run's {total} "
                    "optimizer steps; those groups stay frozen for the whole run"
                )

    def _unfreeze_due(self, trainer: pl.Trainer, pl_module: pl.LightningModule, t: int) -> None:
        """Unfreeze the groups due at epoch (or step) ``t`` and add them to the optimizer."""
        new = sorted(self._target(t) - self._unfrozen, reverse=True)
        if not new:
            return
        self._apply(pl_module, self._unfrozen | set(new))
        added = self._add_groups(pl_module, self._head_optimizer(trainer, pl_module), new)
        when = f"step {t}" if self.by_step else f"epoch {t}"
        rank_zero_info(
            f"LayerFreezing: {when}: unfroze {[self._groups[i][0] for i in new]} "
            f"(new param groups {added}); {self._count(pl_module):,} of "
            f"{sum(p.numel() for p in pl_module.parameters()):,} parameters trainable"
        )

    def _set_bn_modes(self) -> None:
        for module in self._thawed_bn:
            module.train()
        self._thawed_bn = []
        for module in self._frozen_bn:
            module.eval()

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.by_step:
            self._unfreeze_due(trainer, pl_module, trainer.current_epoch)
        self._set_bn_modes()
        pl_module.log(
            "freezing/trainable_params", float(self._count(pl_module)), on_step=False, on_epoch=True
        )

    @staticmethod
    def _count(pl_module: pl.LightningModule) -> int:
        return sum(p.numel() for p in pl_module.parameters() if p.requires_grad)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        t = trainer.global_step if self.by_step else trainer.current_epoch
        if t != self._synced_t and self._target(t) - self._unfrozen:
            # By step, groups come due mid-epoch. By epoch, a run resumed from a checkpoint
            # written at an epoch's last batch starts the next epoch without
            # `on_train_epoch_start`: the frozen set follows the epoch here as well.
            self._unfreeze_due(trainer, pl_module, t)
            self._set_bn_modes()
        self._synced_t = t  # checked once per epoch (by epoch), not at every batch
        for module in self._frozen_bn:  # a user's `train()` call must not wake them up
            if module.training:  # an attribute read per step; eval() only when needed
                module.eval()
        if self._verify_pending:
            tensors = self._frozen_tensors(pl_module)
            self._reference = ([n for n, _ in tensors], self._checksum(tensors))

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._verify_pending or self._reference is None:
            return
        names, before = self._reference
        tensors = dict(self._frozen_tensors(pl_module))
        after = self._checksum([(n, tensors[n]) for n in names])
        self._verify_pending = False
        self._reference = None
        changed = [n for n, a, b in zip(names, after, before) if not torch.equal(a, b)]
        if changed:
            raise RuntimeError(
                f"LayerFreezing: {len(changed)} frozen tensors changed during a training step: "
                f"{changed[:8]}. Something else updates them (an optimizer group with "
                "zero_grad(set_to_none=False) and weight decay or momentum, or a BatchNorm put "
                "back in train mode); frozen parameters must not receive updates"
            )

    # ------------------------------------------------------------------------- state
    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        warn_if_resume_skips_validation(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        optimizers: list[list[dict[str, Any]]] = []
        if trainer is not None and trainer.lightning_module is not None:
            names_of = self._names_of(trainer.lightning_module)
            for optimizer in trainer.optimizers:
                # A tensor the module does not register (a loss's own parameter, a plain
                # attribute) has no name: it is saved as its index among the optimizer's
                # unnamed tensors, which `configure_optimizers` creates again on resume.
                unnamed = {id(p): i for i, p in enumerate(_unnamed(optimizer, names_of))}
                optimizers.append(
                    [
                        {
                            **{k: v for k, v in g.items() if k != "params"},
                            "params": [
                                names_of.get(id(p), unnamed.get(id(p))) for p in g["params"]
                            ],
                        }
                        for g in optimizer.param_groups
                    ]
                )
        return {"unfrozen": self.unfrozen_groups, "optimizers": optimizers}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = {
            "unfrozen": list(state_dict.get("unfrozen", [])),
            "optimizers": state_dict.get("optimizers", []),
        }


def _unnamed(optimizer: torch.optim.Optimizer, names_of: dict[int, str]) -> list[torch.Tensor]:
    """The optimizer's tensors that are not parameters of the module, in the groups' order."""
    return [p for g in optimizer.param_groups for p in g["params"] if id(p) not in names_of]
