"""Population-based training in the :class:`~lightning_tune.tuner.Tuner`.

``Tuner(..., strategy="pbt", pbt={"population": 8, "interval": 2})`` trains a population of
members side by side. Each member's run is cut into *segments* of ``interval`` epochs, and each
segment is one Optuna trial: its params are the hyperparameters it trained with, its
intermediate values the monitored metric per validation, its value the metric at the end of the
segment, and its ``pbt`` user attribute the lineage (member, round, the checkpoint it continued
from, the donor it copied, what explore changed). After a segment, a member in the bottom
quantile continues from a top member's checkpoint (weights, optimizer state, every callback's
state) with that member's hyperparameters, explored; see :class:`PBTConfig`.

Why one trial per segment and not one per member: a trial's params are fixed once set, but a
member's hyperparameters change; segments keep every schedule step visible to Optuna,
``optuna.load_study`` and optuna-dashboard (each with the params it really ran with), make each
step a unit of work that any worker can claim with Optuna's own WAITING -> RUNNING queue, and
let Optuna's heartbeat retry a killed worker's step, which then resumes from its last epoch.

How hyperparameters reach the running training: a segment builds a fresh module, datamodule
and callbacks from its hyperparameters (so constructor settings such as ``LabelSmoothing``'s
ε, ``GradientClipping``'s threshold, ``LRSchedule``'s peak or a batch size take the new value),
restores the checkpoint, then sets the optimizer's ``lr`` (as ``initial_lr``, keeping each
group's ``lr_scale``), ``weight_decay`` and ``momentum`` on every param group, and calls the
module's ``on_hyperparameters_changed(params)`` if it has one (for anything else a checkpoint
would bring back). A mutable hyperparameter that nothing takes is refused before training.

Storages: the in-memory storage (one process), the study's SQLite file (several processes on
one machine), a journal file, or PostgreSQL for several machines; checkpoints live under
``<output_dir>/<study_name>/pbt``, which must then be a shared directory.
"""

from __future__ import annotations

from lightning_tune.tuner.pbt.apply import (
    HOOK,
    OPTIMIZER_KEYS,
    HyperparameterUpdate,
    set_optimizer_hyperparameters,
)
from lightning_tune.tuner.pbt.explore import explore, perturb, resample
from lightning_tune.tuner.pbt.options import MODES, PBTConfig
from lightning_tune.tuner.pbt.report import (
    best_lineage,
    final_table,
    save_pbt_report,
    segments_frame,
)
from lightning_tune.tuner.pbt.worker import run_pbt

__all__ = [
    "HOOK",
    "MODES",
    "OPTIMIZER_KEYS",
    "HyperparameterUpdate",
    "PBTConfig",
    "best_lineage",
    "explore",
    "final_table",
    "perturb",
    "resample",
    "run_pbt",
    "save_pbt_report",
    "segments_frame",
    "set_optimizer_hyperparameters",
]
