"""The options of population-based training (``Tuner(..., strategy="pbt", pbt={...})``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from lightning_tune._validation import check_choice, check_int, check_number

__all__ = ["MODES", "PBTConfig"]

#: ``"async"``: a member is exploited/explored as soon as its own segment ends;
#: ``"sync"``: the whole population finishes a round before anyone is exploited.
MODES = ("async", "sync")
#: What ``interval`` counts: epochs, or validation runs (``check_val_every_n_epoch`` epochs each).
INTERVAL_UNITS = ("epoch", "validation")


@dataclass(frozen=True)
class PBTConfig:
    """How a population-based training run exploits and explores (Ray Tune's names in brackets).

    Every ``interval`` epochs or validations (``perturbation_interval``), a member in the bottom ``quantile``
    of the population (``quantile_fraction``) continues from the checkpoint of a member in the
    top ``quantile`` (weights, optimizer state, every callback's state) with that member's
    hyperparameters, explored: each parameter of ``hyperparam_mutations`` is, with probability
    ``resample_probability``, drawn again from the search space, otherwise perturbed (floats
    multiplied by one of ``perturbation_factors``, ints, powers of two and categoricals moved
    to a neighbouring value), always staying inside the search space.

    ``mode="async"`` (the default, as Ray Tune's ``synch=False``) decides for a member as soon
    as its own segment ends, against the latest results of the others: no worker waits for the
    slowest member, and a killed worker holds up only its own member. ``mode="sync"`` waits
    until every member has finished the round, so every decision sees the same round; it is
    the easier schedule to reason about, and deterministic for a fixed seed with any number
    of workers.

    Args:
        population: members trained side by side (>= 2).
        interval: epochs (or validations) between two exploit/explore steps (>= 1).
        interval_unit: ``"epoch"`` (default) or ``"validation"``: with
            ``check_val_every_n_epoch=k`` in the Trainer settings an interval of ``n``
            validations is ``n * k`` epochs (Ray Tune's ``time_attr`` counts reported results
            the same way). Segments end at epoch ends, where a validation must run.
        quantile: fraction of the population in the bottom (and top) group, in (0, 0.5].
        resample_probability: probability of drawing a mutated parameter again, in [0, 1].
        perturbation_factors: the two factors a float is multiplied by (> 0).
        hyperparam_mutations: names of the parameters that may change during a member's run
            (default: every sampled parameter); the others keep the value their lineage
            started with.
        mode: ``"async"`` or ``"sync"``.

    Example:
        >>> config = PBTConfig(population=4, interval=2)
        >>> config.rounds(max_epochs=7), config.epochs(round=3, max_epochs=7)
        (4, (6, 7))
        >>> PBTConfig(interval=2, interval_unit="validation").epoch_interval(3)
        6
        >>> PBTConfig.coerce({"population": 1})
        Traceback (most recent call last):
        ...
        ValueError: `population` must be an int >= 2, but got population=1
    """

    population: int = 4
    interval: int = 1
    quantile: float = 0.25
    resample_probability: float = 0.25
    perturbation_factors: tuple[float, float] = (0.8, 1.2)
    hyperparam_mutations: tuple[str, ...] | None = None
    mode: Literal["async", "sync"] = "async"
    interval_unit: Literal["epoch", "validation"] = "epoch"

    def __post_init__(self) -> None:
        check_int("population", self.population, minimum=2)
        check_int("interval", self.interval, minimum=1)
        check_number("quantile", self.quantile, low=0, high=0.5, low_open=True)
        check_number("resample_probability", self.resample_probability, low=0, high=1)
        factors = self.perturbation_factors
        if isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence):
            raise TypeError(f"`perturbation_factors` must be two numbers, but got {factors=!r}")
        if len(factors) != 2:
            raise ValueError(f"`perturbation_factors` must be two numbers, but got {factors=!r}")
        for factor in factors:
            check_number("perturbation_factors", factor, low=0, low_open=True)
        object.__setattr__(self, "perturbation_factors", tuple(float(f) for f in factors))
        mutations = self.hyperparam_mutations
        if mutations is not None:
            if isinstance(mutations, (str, bytes)) or not isinstance(mutations, Sequence):
                raise TypeError(
                    "`hyperparam_mutations` must be a list of search space names, but got "
                    f"hyperparam_mutations={mutations!r}"
                )
            if not mutations or not all(isinstance(m, str) for m in mutations):
                raise ValueError(
                    "`hyperparam_mutations` must be a non-empty list of search space names, "
                    f"but got hyperparam_mutations={mutations!r}"
                )
            object.__setattr__(self, "hyperparam_mutations", tuple(mutations))
        check_choice("mode", self.mode, MODES)
        check_choice("interval_unit", self.interval_unit, INTERVAL_UNITS)

    @classmethod
    def coerce(cls, value: PBTConfig | Mapping[str, Any] | None) -> PBTConfig:
        """``value`` as a :class:`PBTConfig` (None: the defaults); unknown keys are errors."""
        if isinstance(value, PBTConfig):
            return value
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise TypeError(f"`pbt` must be a mapping of PBT options, but got pbt={value!r}")
        accepted = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(accepted))
        if unknown:
            raise ValueError(f"`pbt` has unknown keys {unknown}; accepted keys: {accepted}")
        return cls(**value)

    def epoch_interval(self, check_val_every_n_epoch: int = 1) -> int:
        """Epochs per segment, for a Trainer that validates every ``check_val_every_n_epoch``."""
        return self.interval * (
            check_val_every_n_epoch if self.interval_unit == "validation" else 1
        )

    def rounds(self, max_epochs: int, check_val_every_n_epoch: int = 1) -> int:
        """Segments per member: ``ceil(max_epochs / epochs per segment)``."""
        return math.ceil(max_epochs / self.epoch_interval(check_val_every_n_epoch))

    def epochs(
        self, round: int, max_epochs: int, check_val_every_n_epoch: int = 1
    ) -> tuple[int, int]:
        """The epochs ``[start, end)`` of segment ``round``."""
        step = self.epoch_interval(check_val_every_n_epoch)
        return round * step, min((round + 1) * step, max_epochs)

    def quantile_size(self, n: int) -> int:
        """Members in the bottom (and top) group of ``n`` ranked members, as Ray Tune counts.

        Example:
            >>> [PBTConfig(quantile=0.25).quantile_size(n) for n in (1, 2, 4, 8)]
            [0, 1, 1, 2]
        """
        size = math.ceil(n * self.quantile)
        return size if size <= n / 2 else math.floor(n / 2)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able options (recorded in the study's user attributes)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["perturbation_factors"] = list(self.perturbation_factors)
        if self.hyperparam_mutations is not None:
            out["hyperparam_mutations"] = list(self.hyperparam_mutations)
        return out
