"""Sweep configs written the LightningCLI way: ``class_path`` / ``init_args`` sections.

An existing LightningCLI config (``model:``, ``data:``, ``trainer:`` with a ``callbacks:`` list)
becomes a sweep by adding ``search_space:`` (and optionally ``tuner:`` settings). This module
turns such a config into the ``class`` / ``kwargs`` form of :mod:`lightning_tune.tuner.config`:

* ``model`` / ``data``: ``class_path`` -> ``class``, ``init_args`` -> ``kwargs``;
* ``trainer.callbacks`` (a list, or one entry) -> top-level ``callbacks``;
* ``trainer.max_epochs`` -> ``max_epochs``; ``seed_everything`` -> ``seed``;
* ``tuner:`` -> its keys at top level (any key of a sweep config);
* a search-space name that is a *path* into the config addresses one argument:
  ``model.init_args.lr``, ``data.init_args.batch_size``,
  ``trainer.callbacks[1].init_args.epsilon`` (the callback at index 1 of ``trainer.callbacks``).
  Plain names (``lr``) still reach every model/data ``init_args`` of that name.

The Trainer arguments the tuner owns per trial (``logger``, ``default_root_dir``,
``enable_checkpointing``) are replaced by the tuner's, with a warning.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["from_lightning_cli", "is_lightning_cli_format"]

_CLASS_KEYS = ("class_path", "init_args", "dict_kwargs")
_REPLACED_TRAINER_KEYS = ("logger", "default_root_dir", "enable_checkpointing")
_UNSUPPORTED = {
    "optimizer": "give the optimizer's arguments to the model's init_args",
    "lr_scheduler": "use lightning_tune.callbacks.LRSchedule in trainer.callbacks",
}
_PATH = re.compile(
    r"^(model|data)\.init_args\.(\w+)$|^trainer\.callbacks\[(\d+)\]\.init_args\.(\w+)$"
)


def is_lightning_cli_format(cfg: Mapping[str, Any]) -> bool:
    """Whether a config uses LightningCLI's ``class_path`` form anywhere.

    Example:
        >>> is_lightning_cli_format({"model": {"class_path": "TimmClassifier"}})
        True
        >>> is_lightning_cli_format({"model": {"class": "TimmClassifier"}})
        False
    """
    sections = [cfg.get("model"), cfg.get("data")]
    trainer = cfg.get("trainer")
    if isinstance(trainer, Mapping):
        callbacks = trainer.get("callbacks")
        sections += callbacks if isinstance(callbacks, list) else [callbacks]
    return "tuner" in cfg or any(isinstance(s, Mapping) and "class_path" in s for s in sections)


def _class_entry(section: str, entry: Any) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"class": entry, "kwargs": {}}
    if not isinstance(entry, Mapping) or "class_path" not in entry:
        raise TypeError(
            f"config `{section}` must be {{class_path: ..., init_args: {{...}}}}, but got {entry!r}"
        )
    unknown = sorted(set(entry) - set(_CLASS_KEYS))
    if unknown:
        raise ValueError(
            f"config `{section}` has unknown keys {unknown}; accepted keys: {list(_CLASS_KEYS)}"
        )
    kwargs = {**dict(entry.get("init_args") or {}), **dict(entry.get("dict_kwargs") or {})}
    return {"class": entry["class_path"], "kwargs": kwargs}


def _trainer_section(trainer: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    trainer = dict(trainer)
    callbacks = trainer.pop("callbacks", None)
    if callbacks is not None:
        entries = callbacks if isinstance(callbacks, list) else [callbacks]
        if "callbacks" in out:
            raise ValueError("give callbacks once: `trainer.callbacks` or `callbacks`, not both")
        out["callbacks"] = [
            _class_entry(f"trainer.callbacks[{i}]", e) for i, e in enumerate(entries)
        ]
    if "max_epochs" in trainer:
        out.setdefault("max_epochs", trainer.pop("max_epochs"))
    replaced = sorted(k for k in _REPLACED_TRAINER_KEYS if trainer.pop(k, None) is not None)
    if replaced:
        warnings.warn(
            f"config `trainer`: {replaced} are set by the tuner for each trial (per-trial "
            "directories, loggers and checkpoints); the config's values are not used",
            stacklevel=3,
        )
    return trainer


def _address(cfg: dict[str, Any], name: str) -> None:
    """Turn a path-like search-space name into a ``$name`` template at that argument."""
    match = _PATH.match(name)
    if match is None:
        raise ValueError(
            f"search space name {name!r} looks like a path but is not one of "
            "`model.init_args.<arg>`, `data.init_args.<arg>`, "
            "`trainer.callbacks[<i>].init_args.<arg>`"
        )
    section, arg, index, cb_arg = match.groups()
    if section is not None:
        if section not in cfg:
            raise ValueError(f"search space name {name!r}: the config has no `{section}` section")
        entry = cfg[section]
        cfg[section] = {**entry, "kwargs": {**(entry.get("kwargs") or {}), arg: f"${name}"}}
        return
    callbacks = cfg.get("callbacks") or []
    i = int(index)
    if i >= len(callbacks):
        raise ValueError(
            f"search space name {name!r}: `trainer.callbacks` has {len(callbacks)} entries "
            f"(indices 0..{len(callbacks) - 1})"
        )
    entry = callbacks[i]
    callbacks[i] = {**entry, "kwargs": {**(entry.get("kwargs") or {}), cb_arg: f"${name}"}}


def from_lightning_cli(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep config in the ``class``/``kwargs`` form, from one in LightningCLI's form.

    Configs already in the ``class``/``kwargs`` form are returned unchanged (as a copy).

    Example:
        >>> cfg = from_lightning_cli({
        ...     "model": {"class_path": "TimmClassifier", "init_args": {"model_name": "test_vit"}},
        ...     "trainer": {"max_epochs": 4, "callbacks": [
        ...         {"class_path": "LabelSmoothing", "init_args": {"epsilon": 0.1}}]},
        ...     "search_space": {"trainer.callbacks[0].init_args.epsilon": [0.0, 0.1]},
        ...     "tuner": {"n_trials": 8}})
        >>> cfg["model"], cfg["max_epochs"], cfg["n_trials"]
        ({'class': 'TimmClassifier', 'kwargs': {'model_name': 'test_vit'}}, 4, 8)
        >>> cfg["callbacks"]
        [{'class': 'LabelSmoothing', 'kwargs': {'epsilon': '$trainer.callbacks[0].init_args.epsilon'}}]
    """
    if not isinstance(cfg, Mapping) or not is_lightning_cli_format(cfg):
        return dict(cfg) if isinstance(cfg, Mapping) else cfg
    out = dict(cfg)
    for key, fix in _UNSUPPORTED.items():
        if out.get(key) is not None:
            raise ValueError(f"config `{key}` (LightningCLI's) is not supported in sweeps: {fix}")
        out.pop(key, None)
    if out.pop("ckpt_path", None) is not None:
        raise ValueError("config `ckpt_path`: a sweep starts every trial from scratch")
    tuner = out.pop("tuner", None) or {}
    if not isinstance(tuner, Mapping):
        raise TypeError(f"config `tuner` must be a mapping of sweep settings, but got {tuner!r}")
    for key, value in tuner.items():
        if key in out:
            raise ValueError(f"config key {key!r} is given both at top level and in `tuner`")
        out[key] = value
    if "seed_everything" in out:
        seed = out.pop("seed_everything")
        if seed is not None and not isinstance(seed, bool):
            out.setdefault("seed", seed)
    for key in ("model", "data"):
        if (
            key in out
            and isinstance(out[key], (Mapping, str))
            and (isinstance(out[key], str) or "class_path" in out[key])
        ):
            out[key] = _class_entry(key, out[key])
    if isinstance(out.get("trainer"), Mapping):
        out["trainer"] = _trainer_section(out["trainer"], out)
    for name in out.get("search_space") or {}:
        if "." in name or "[" in name:
            _address(out, name)
    return out
