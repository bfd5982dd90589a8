"""Sweep configs: a YAML file that describes a whole sweep, turned into a :class:`Tuner`.

A config names the model and data classes (``TimmClassifier``, ``DigitsDataModule``, any
``package.module.Class``), their fixed arguments, the search space, the callbacks, the
pruner/sampler, the trial budget, the storage and the output directory. In ``kwargs`` of the
model, data and callbacks, a string ``"$name"`` is replaced by the trial's value of hyperparameter
``name`` (so ``{epsilon: $label_smoothing}`` tunes a callback). Model and data classes also get
every hyperparameter whose name is one of their ``__init__`` arguments.

Unknown keys are errors that name them, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pathlib
import re
import types
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from lightning_tune._lightning import NAMESPACES
from lightning_tune.tuner.cli_format import from_lightning_cli
from lightning_tune.tuner.recovery import HEARTBEAT_INTERVAL
from lightning_tune.tuner.tuner import Tuner

__all__ = ["CONFIG_KEYS", "bundled_config", "load_config", "tuner_from_config"]

#: Top-level keys of a sweep config and what they mean.
CONFIG_KEYS: dict[str, str] = {
    "study_name": "name of the study and of its directory",
    "output_dir": "where study directories go",
    "storage": "null (SQLite in the study dir), 'memory', or an Optuna storage URL",
    "seed": "sampler seed; trial k is seeded with seed + k",
    "n_trials": "finished (COMPLETE + PRUNED) trials the study should have; re-running continues",
    "heartbeat_interval": "seconds between heartbeats of a running trial (default 10); 0 or null: "
    "no crash recovery",
    "grace_period": "seconds without heartbeat before a running trial counts as dead",
    "max_retry": "retries of a dead trial with its parameters",
    "timeout": "seconds after which no new trial starts",
    "preflight": "fit one training and one validation batch of trial 0 before the sweep "
    "(default true)",
    "resume": "check (default: continue a study only with the settings it was created with), "
    "force (continue it with new settings) or new (the study must not exist yet)",
    "max_consecutive_failures": "stop after this many trials in a row failed with the same "
    "error type (default 3; null: never)",
    "monitor": "metric to optimize, or a list of metrics (a multi-objective sweep)",
    "direction": "minimize or maximize (a list with one per metric for several)",
    "objective": "best or last validation value as the trial value",
    "on_nonfinite": "prune or fail trials whose metric is NaN/inf",
    "max_epochs": "epochs of a full trial",
    "keep_checkpoints": "checkpoints kept for this many best trials",
    "loggers": "list of csv / tensorboard (Lightning logger objects or factories from Python)",
    "test_best": "evaluate the best configuration on the test split",
    "plots": "save plots with the report",
    "quiet": "no progress output",
    "sampler": "name or {name, kwargs}",
    "pruner": "name or {name, kwargs}",
    "model": "{class, kwargs}",
    "data": "{class, kwargs}",
    "search_space": "mapping of parameter specs",
    "callbacks": "list of {class, kwargs}",
    "trainer": "other Trainer arguments",
    "strategy": "sweep (default) or pbt (population-based training)",
    "pbt": "PBT options: population, interval, quantile, resample_probability, ...",
    "diagnostics": "true, or TrainingDiagnostics arguments: prune trials on error-level findings",
}
_OBJECT_KEYS = ("class", "kwargs")
_NAMED_KEYS = ("name", "kwargs")
# Bare class names: ours first, then the callbacks of the installed Lightning package(s).
_SEARCH_MODULES = (
    "lightning_tune",
    "lightning_tune.callbacks",
    *(f"{ns.__name__}.callbacks" for ns in NAMESPACES),
)
# ``$name``; names may be paths such as ``$trainer.callbacks[0].init_args.epsilon``.
_TEMPLATE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_.\[\]]*)$")
# Directories of the configs read in this process: their modules are importable for `class:`.
_CONFIG_DIRS: list[str] = []


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` (no dot) as a float, as people write it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def bundled_config(name: str = "digits_sweep") -> pathlib.Path:
    """Path of a config shipped with the package (``lightning_tune/configs/<name>.yaml``).

    Example:
        >>> bundled_config().name
        'digits_sweep.yaml'
    """
    path = pathlib.Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"no bundled config {name!r}; available: {available}")
    return path


def _check_keys(
    section: str, mapping: Any, accepted: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"config `{section}` must be a mapping, but got {mapping!r}")
    unknown = sorted(set(mapping) - set(accepted))
    if unknown:
        raise ValueError(
            f"config `{section}` has unknown keys {unknown}; accepted keys: {sorted(accepted)}"
        )
    return dict(mapping)


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sweep config (YAML) and check its keys.

    Example:
        >>> cfg = load_config(bundled_config())
        >>> cfg["model"]["class"], cfg["pruner"]["name"]
        ('TimmClassifier', 'hyperband')
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"config file {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at "
            f"position {err.start}): save it as UTF-8"
        ) from None
    except OSError as err:
        raise ValueError(f"config file {path} cannot be read: {err.strerror or err}") from None
    try:
        cfg = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"config file {path}: YAML syntax error{where}: {problem}") from None
    if cfg is None:
        raise ValueError(f"config file {path} is empty")
    _CONFIG_DIRS.append(str(path.resolve().parent))
    return check_config(cfg, source=str(path))


def check_config(cfg: Any, source: str = "config") -> dict[str, Any]:
    """Check the keys of a config dict (top level and sections); return a copy.

    A config in LightningCLI's form (``class_path`` / ``init_args``, ``trainer.callbacks``,
    a ``tuner:`` section) is converted first (see :mod:`lightning_tune.tuner.cli_format`).
    """
    cfg = _check_keys(source, from_lightning_cli(cfg), list(CONFIG_KEYS))
    for key in ("model", "data"):
        if key in cfg:
            _check_keys(key, cfg[key], _OBJECT_KEYS)
    for key in ("sampler", "pruner"):
        if isinstance(cfg.get(key), Mapping):
            _check_keys(key, cfg[key], _NAMED_KEYS)
    callbacks = cfg.get("callbacks") or []
    if not isinstance(callbacks, list):
        raise TypeError(
            f"config `callbacks` must be a list of {{class, kwargs}}, got {callbacks!r}"
        )
    for i, item in enumerate(callbacks):
        _check_keys(f"callbacks[{i}]", item, _OBJECT_KEYS)
    if "model" not in cfg:
        raise ValueError(f"{source}: `model` is required ({{class: ..., kwargs: {{...}}}})")
    if "search_space" not in cfg:
        raise ValueError(f"{source}: `search_space` is required")
    return cfg


def _classes_in(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    return [f"{module_name}.{n}" for n in dir(module) if isinstance(getattr(module, n), type)]


def _import_dotted(name: str, section: str) -> type:
    """``package.module.Class``; else a one-line error with the closest existing path."""
    module_name, _, attr = name.rpartition(".")
    failure = None
    try:
        module = _import_user_module(module_name, section)
    except ValueError as err:
        module, failure = None, str(err)
    if module is not None and isinstance(getattr(module, attr, None), type):
        return getattr(module, attr)
    prefix = module_name if module is not None else None
    parts = module_name.split(".")
    while prefix is None and len(parts) > 1:
        parts.pop()
        try:
            importlib.import_module(".".join(parts))
            prefix = ".".join(parts)
        except ImportError:
            continue
    candidates = _classes_in(prefix) if prefix else []
    if prefix and prefix != module_name:
        parent = importlib.import_module(prefix)
        candidates += [
            f"{prefix}.{n}.{c}"
            for n in getattr(parent, "__all__", dir(parent))
            if isinstance(getattr(parent, n, None), types.ModuleType)
            for c in dir(getattr(parent, n))
            if isinstance(getattr(getattr(parent, n), c), type)
        ]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if failure is not None and not close:
        raise ValueError(failure)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"config `{section}.class`: no class {name!r}{hint}")


def resolve_class(name: str, section: str) -> type:
    """A class from a dotted path, or a name exported by lightning_tune / its callbacks /
    the installed Lightning package's ``callbacks``.

    Example:
        >>> resolve_class("DigitsDataModule", "data").__name__
        'DigitsDataModule'
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"config `{section}.class` must be a class name, but got {name!r}")
    if "." in name:
        return _import_dotted(name, section)
    for module_name in _SEARCH_MODULES:
        module = importlib.import_module(module_name)
        if hasattr(module, name):
            return getattr(module, name)
    known = sorted(
        {
            n
            for m in _SEARCH_MODULES[:2]
            for n in getattr(importlib.import_module(m), "__all__", [])
            if isinstance(getattr(importlib.import_module(m), n, None), type)
        }
    )
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? Or " if close else ""
    raise ValueError(
        f"config `{section}.class`: unknown class {name!r}; {hint}use a dotted path "
        f"(package.module.Class) or one of {known}"
    )


def _import_user_module(module_name: str, section: str) -> Any:
    """Import ``module_name``; modules next to the config file or in the current directory
    count too (appended to ``sys.path``, so spawned workers find them as well)."""
    import sys

    places = [os.getcwd(), *_CONFIG_DIRS[-1:]]
    for attempt in range(2):
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            top = module_name.split(".", 1)[0]
            if attempt == 0 and err.name is not None and top.startswith(err.name):
                for place in places:
                    if place not in sys.path:
                        sys.path.append(place)
                importlib.invalidate_caches()
                continue
            raise ValueError(
                f"config `{section}.class`: cannot import {module_name!r} ({err}); looked on the "
                f"Python path, in the current directory {places[0]}"
                + (f" and in the config's directory {places[1]}" if len(places) > 1 else "")
            ) from None
        except ImportError as err:
            raise ValueError(
                f"config `{section}.class`: cannot import {module_name!r}: {err}"
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _templates(value: Any) -> set[str]:
    if isinstance(value, str):
        match = _TEMPLATE.match(value)
        return {match.group(1)} if match else set()
    if isinstance(value, Mapping):
        return set().union(*(_templates(v) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(_templates(v) for v in value)) if value else set()
    return set()


def _substitute(value: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        match = _TEMPLATE.match(value)
        return params[match.group(1)] if match else value
    if isinstance(value, Mapping):
        return {k: _substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, params) for v in value]
    return value


def _factory(
    cls: type, kwargs: Mapping[str, Any], match_names: bool
) -> Callable[[dict[str, Any]], Any]:
    from lightning_tune.tuner.failfast import accepted_kwargs

    accepted = accepted_kwargs(cls) if match_names else set()

    def build(params: dict[str, Any]) -> Any:
        # Only the names passed on are read (the tuner checks that every searched name is).
        names = [
            k for k in dict.keys(params) if match_names and (accepted is None or k in accepted)
        ]
        return cls(**{**{k: params[k] for k in names}, **_substitute(kwargs, params)})

    build.__name__ = f"build_{cls.__name__}"
    # what PBT's checks read: the class built and the hyperparameters it takes by template
    build.cls = cls  # type: ignore[attr-defined]
    build.param_names = sorted(_templates(kwargs))  # type: ignore[attr-defined]
    return build


def _named(cfg: Mapping[str, Any], key: str, default: str | None) -> tuple[Any, dict[str, Any]]:
    value = cfg.get(key, default)
    if isinstance(value, Mapping):
        return value.get("name", default), dict(value.get("kwargs") or {})
    return value, {}


#: Config keys handed to the ``Tuner`` as they are.
_TUNER_OPTIONS = (
    "storage",
    "study_name",
    "output_dir",
    "seed",
    "monitor",
    "direction",
    "objective",
    "on_nonfinite",
    "max_epochs",
    "keep_checkpoints",
    "loggers",
    "quiet",
    "heartbeat_interval",
    "grace_period",
    "max_retry",
    "strategy",
    "pbt",
    "diagnostics",
    "max_consecutive_failures",
    "resume",
)


def _sources(cfg: Mapping[str, Any], names: set[str]) -> tuple[Any, dict, Any, dict, list]:
    """``(module, model_kwargs, datamodule, data_kwargs, callbacks)`` of a config: classes, or
    factories where ``$name`` templates take search-space values (each must be a name of the
    space)."""

    def check_templates(section: str, kwargs: Any) -> None:
        missing = sorted(_templates(kwargs) - names)
        if missing:
            raise ValueError(
                f"config `{section}.kwargs` refers to {['$' + m for m in missing]} which are "
                f"not in the search space {sorted(names)}"
            )

    model_cls = resolve_class(cfg["model"].get("class", "TimmClassifier"), "model")
    model_kwargs = dict(cfg["model"].get("kwargs") or {})
    check_templates("model", model_kwargs)
    module: Any = model_cls
    if _templates(model_kwargs):
        module, model_kwargs = _factory(model_cls, model_kwargs, match_names=True), {}

    datamodule: Any = None
    data_kwargs: dict[str, Any] = {}
    if "data" in cfg:
        data_cls = resolve_class(cfg["data"].get("class", "DigitsDataModule"), "data")
        data_kwargs = dict(cfg["data"].get("kwargs") or {})
        check_templates("data", data_kwargs)
        datamodule = data_cls
        if _templates(data_kwargs):
            datamodule, data_kwargs = _factory(data_cls, data_kwargs, match_names=True), {}

    callbacks = []
    for i, item in enumerate(cfg.get("callbacks") or []):
        cls = resolve_class(item.get("class"), f"callbacks[{i}]")
        kwargs = dict(item.get("kwargs") or {})
        check_templates(f"callbacks[{i}]", kwargs)
        callbacks.append(_factory(cls, kwargs, match_names=False))
    return module, model_kwargs, datamodule, data_kwargs, callbacks


def tuner_from_config(cfg: Mapping[str, Any], **overrides: Any) -> Tuner:
    """Build the :class:`Tuner` a config describes; ``overrides`` replace top-level keys.

    Every name a template refers to must be in the search space, and every class must exist,
    before anything is created on disk.

    Example:
        >>> cfg = load_config(bundled_config())
        >>> tuner = tuner_from_config(cfg, storage="memory", study_name="doc")
        >>> tuner.study_name, type(tuner.pruner).__name__
        ('doc', 'HyperbandPruner')
    """
    unknown = sorted(set(overrides) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown overrides {unknown}; accepted keys: {sorted(CONFIG_KEYS)}")
    cfg = check_config({**cfg, **{k: v for k, v in overrides.items() if v is not None}})
    space = cfg["search_space"]
    if not isinstance(space, Mapping):
        raise TypeError(f"config `search_space` must be a mapping, but got {space!r}")
    module, model_kwargs, datamodule, data_kwargs, callbacks = _sources(cfg, set(space))
    sampler, sampler_kwargs = _named(cfg, "sampler", "tpe")
    pruner, pruner_kwargs = _named(cfg, "pruner", "auto")
    options = {k: cfg[k] for k in _TUNER_OPTIONS if k in cfg}
    options["preflight"] = cfg.get("preflight", True)
    if not options.get("heartbeat_interval", HEARTBEAT_INTERVAL):  # null or 0: crash recovery off
        options["heartbeat_interval"] = None
        options.pop("grace_period", None)
    return Tuner(
        module,
        space,
        datamodule=datamodule,
        module_kwargs=model_kwargs or None,
        datamodule_kwargs=data_kwargs or None,
        callbacks=callbacks or None,
        sampler=sampler,
        sampler_kwargs=sampler_kwargs,
        pruner=pruner,
        pruner_kwargs=pruner_kwargs,
        trainer_kwargs=cfg.get("trainer"),
        **options,
    )


def run_settings(cfg: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """``n_trials``, ``timeout``, ``test_best`` and ``plots`` of a config (after overrides).

    Example:
        >>> run_settings({"n_trials": 5}, timeout=60)
        {'n_trials': 5, 'timeout': 60, 'test_best': False, 'plots': True}
    """
    merged = {**cfg, **{k: v for k, v in overrides.items() if v is not None}}
    n_trials = merged.get("n_trials")
    if merged.get("strategy") == "pbt" and n_trials is None:  # every member segment
        from lightning_tune.tuner.pbt.options import PBTConfig

        config = PBTConfig.coerce(merged.get("pbt"))
        every = (merged.get("trainer") or {}).get("check_val_every_n_epoch", 1)
        n_trials = config.population * config.rounds(merged.get("max_epochs", 10), every)
    return {
        "n_trials": n_trials,
        "timeout": merged.get("timeout"),
        "test_best": bool(merged.get("test_best", False)),
        "plots": bool(merged.get("plots", True)),
    }
