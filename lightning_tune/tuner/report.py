"""Sweep reports: a terminal table, a CSV of trials and plots saved as PNG files."""

from __future__ import annotations

import math
import pathlib
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "format_trial_line",
    "format_values",
    "objective_names",
    "pareto_frame",
    "pareto_front",
    "pareto_lines",
    "plot_learning_curves",
    "save_report",
    "summary_table",
    "trial_params",
    "trials_frame",
]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's hyperparameters, fixed values included when the tuner recorded them.

    Example:
        >>> study = optuna.create_study()
        >>> study.enqueue_trial({"lr": 0.1})
        >>> study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1.0), n_trials=1)
        >>> trial_params(study.trials[0])
        {'lr': 0.1}
    """
    params = trial.user_attrs.get("params")
    return dict(params) if isinstance(params, dict) else dict(trial.params)


def objective_names(study: optuna.Study) -> list[str]:
    """The monitored metric of each objective (as the tuner recorded them), else ``value``,
    ``value_1``, ...

    Example:
        >>> objective_names(optuna.create_study(directions=["minimize", "maximize"]))
        ['value_0', 'value_1']
    """
    n = len(study.directions)
    names = study.user_attrs.get("monitors")
    if isinstance(names, list) and len(names) == n:
        return [str(m) for m in names]
    return ["value"] if n == 1 else [f"value_{i}" for i in range(n)]


def _value_columns(
    trial: FrozenTrial, names: list[str], complete: bool, front: set[int]
) -> dict[str, Any]:
    if len(names) == 1:
        return {"value": trial.value if complete else None}
    values = trial.values if complete and trial.values else [None] * len(names)
    columns = {f"value_{n}": v for n, v in zip(names, values)}
    columns["pareto"] = trial.number in front
    return columns


def format_values(trial: FrozenTrial, names: Sequence[str]) -> str:
    """``"val_loss=0.31 params_m=1.2"``: the trial's values named by their metrics.

    Example:
        >>> study = optuna.create_study(directions=["minimize", "minimize"])
        >>> study.optimize(lambda t: (0.5, 2.0), n_trials=1)
        >>> format_values(study.trials[0], ["val_loss", "params_m"])
        'val_loss=0.5 params_m=2'
    """
    values = trial.values or [float("nan")] * len(names)
    return " ".join(f"{n}={_fmt(float(v))}" for n, v in zip(names, values))


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, epochs, seconds, reason and the params.

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        >>> list(trials_frame(study).columns)[:4]
        ['number', 'state', 'value', 'epochs']
    """
    rows = []
    names = objective_names(study)
    front = {t.number for t in study.best_trials} if len(names) > 1 else set()
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        complete = trial.state == TrialState.COMPLETE
        row: dict[str, Any] = {
            "number": trial.number,
            "state": trial.state.name,
            **_value_columns(trial, names, complete, front),
            "epochs": attrs.get("epochs"),
            "seconds": (trial.duration.total_seconds() if trial.duration is not None else None),
            "last_step": trial.last_step,
            "reason": attrs.get("prune_reason") or attrs.get("fail_reason"),
            "checkpoint": attrs.get("checkpoint"),
        }
        for key, value in trial_params(trial).items():
            row[f"params_{key}"] = value
        rows.append(row)
    columns = ["number", "state", "value", "epochs", "seconds", "last_step", "reason", "checkpoint"]
    return pd.DataFrame(rows, columns=None if rows else columns)


def format_trial_line(
    trial: FrozenTrial, *, monitor: str | Sequence[str] = "value", max_epochs: int | None = None
) -> str:
    """One line per finished trial: number, state, value, epochs run, time and params.

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_int("x", 3, 3), n_trials=1)
        >>> format_trial_line(study.trials[0])  # doctest: +ELLIPSIS
        'trial    0 COMPLETE value=3 epochs=? ...s x=3'
    """
    names = [monitor] if isinstance(monitor, str) else list(monitor)
    epochs = trial.user_attrs.get("epochs", "?")
    if max_epochs is not None:
        epochs = f"{epochs}/{max_epochs}"
    seconds = trial.duration.total_seconds() if trial.duration is not None else float("nan")
    params = " ".join(f"{k}={_fmt(v)}" for k, v in trial_params(trial).items())
    line = (
        f"trial {trial.number:4d} {trial.state.name:8s} {format_values(trial, names)} "
        f"epochs={epochs} {seconds:.1f}s {params}"
    )
    reason = trial.user_attrs.get("fail_reason")
    if reason is None and "diagnosis" in trial.user_attrs:  # pruned by a finding: say which
        reason = trial.user_attrs.get("prune_reason")
    return f"{line} ({reason})" if reason else line


def summary_table(study: optuna.Study, *, monitor: str = "value", top: int = 10) -> str:
    """A text table: counts by state, then the ``top`` completed trials, best first.

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        >>> print(summary_table(study, top=1).splitlines()[0])
        Study 'no-name-...': 3 trials (3 complete, 0 pruned, 0 failed)
    """
    trials = study.get_trials(deepcopy=False)
    counts = {
        s: sum(t.state == s for t in trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    name = study.study_name
    if name.startswith("no-name-"):
        name = "no-name-..."
    lines = [
        f"Study {name!r}: {len(trials)} trials ({counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed)"
    ]
    diagnosed = Counter(t.user_attrs["diagnosis"] for t in trials if "diagnosis" in t.user_attrs)
    if diagnosed:
        codes = ", ".join(f"{code} x{n}" for code, n in diagnosed.most_common())
        lines.append(f"Pruned by diagnostics: {sum(diagnosed.values())} ({codes})")
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not complete:
        lines.append("No completed trial yet.")
        return "\n".join(lines)
    if len(study.directions) > 1:
        return "\n".join(lines + pareto_lines(study, len(complete), top))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete.sort(key=lambda t: t.value, reverse=reverse)  # type: ignore[arg-type, return-value]
    names = sorted({k for t in complete[:top] for k in trial_params(t)})
    header = ["rank", "trial", monitor, "epochs", *names]
    table = [header]
    for rank, trial in enumerate(complete[:top], 1):
        params = trial_params(trial)
        table.append(
            [
                str(rank),
                str(trial.number),
                _fmt(trial.value),
                str(trial.user_attrs.get("epochs", "")),
                *(_fmt(params.get(n, "")) for n in names),
            ]
        )
    return "\n".join(lines + _aligned(table))


def _aligned(table: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table]


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal trials, ordered by the first objective (best first).

    Example:
        >>> study = optuna.create_study(directions=["minimize", "minimize"])
        >>> for a in (2, 0, 1):
        ...     study.enqueue_trial({"a": a})
        >>> study.optimize(lambda t: (t.suggest_int("a", 0, 2), 2 - t.params["a"]), n_trials=3)
        >>> [t.params["a"] for t in pareto_front(study)]
        [0, 1, 2]
    """
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(study.best_trials, key=lambda t: (sign * t.values[0], t.number))


def pareto_lines(study: optuna.Study, n_complete: int, top: int = 10) -> list[str]:
    """The Pareto front as text lines: a count, then up to ``top`` rows of values and params."""
    front = pareto_front(study)
    names = objective_names(study)
    params = sorted({k for t in front[:top] for k in trial_params(t)})
    table = [["trial", *names, "epochs", *params]]
    for trial in front[:top]:
        values = trial_params(trial)
        table.append(
            [
                str(trial.number),
                *(_fmt(float(v)) for v in trial.values),
                str(trial.user_attrs.get("epochs", "")),
                *(_fmt(values.get(n, "")) for n in params),
            ]
        )
    head = f"Pareto front: {len(front)} of {n_complete} completed trials ({', '.join(names)})"
    return [head, *_aligned(table)]


def pareto_frame(study: optuna.Study) -> pd.DataFrame:
    """The Pareto front as a DataFrame: trial number, one column per metric, the params.

    Example:
        >>> study = optuna.create_study(directions=["minimize", "maximize"])
        >>> study.optimize(lambda t: (1.0, 2.0), n_trials=1)
        >>> list(pareto_frame(study).columns)
        ['trial', 'value_0', 'value_1']
    """
    names = objective_names(study)
    rows = [
        {"trial": t.number, **dict(zip(names, t.values)), **trial_params(t)}
        for t in pareto_front(study)
    ]
    return pd.DataFrame(rows, columns=None if rows else ["trial", *names])


def plot_learning_curves(study: optuna.Study, *, monitor: str = "value") -> Any:
    """Intermediate values of every trial: completed solid, pruned dashed (x at the stop), failed red.

    Returns the matplotlib ``Axes``.

    Example:
        >>> study = optuna.create_study()
        >>> def objective(trial):
        ...     x = trial.suggest_float("x", 0, 1)
        ...     for step in range(3):
        ...         trial.report(x / (step + 1), step)
        ...     return x
        >>> study.optimize(objective, n_trials=2)
        >>> len(plot_learning_curves(study, monitor="val_loss").get_lines())
        2
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {
        TrialState.COMPLETE: {"linestyle": "-", "alpha": 0.9},
        TrialState.PRUNED: {"linestyle": "--", "alpha": 0.6, "color": "0.5"},
        TrialState.FAIL: {"linestyle": ":", "alpha": 0.8, "color": "tab:red"},
    }
    seen: set[TrialState] = set()
    for trial in study.get_trials(deepcopy=False):
        values = trial.intermediate_values
        if trial.state not in styles or not values:
            continue
        steps = sorted(values)
        ys = [values[s] for s in steps]
        label = trial.state.name.lower() if trial.state not in seen else None
        seen.add(trial.state)
        (line,) = ax.plot(steps, ys, label=label, **styles[trial.state])
        if trial.state == TrialState.PRUNED:
            ax.plot(steps[-1], ys[-1], marker="x", color=line.get_color())
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("validation step (epoch)")
    ax.set_ylabel(monitor)
    ax.set_title("Learning curves (pruned trials dashed)")
    if seen:
        ax.legend()
    finite = [
        v
        for t in study.get_trials(deepcopy=False)
        for v in t.intermediate_values.values()
        if math.isfinite(v)
    ]
    if finite and max(finite) > 20 * max(min(finite), 1e-12) and min(finite) > 0:
        ax.set_yscale("log")
    fig.tight_layout()
    return ax


def _save_pareto(study: optuna.Study, out: pathlib.Path, plots: bool) -> dict[str, pathlib.Path]:
    """Several objectives: the front as ``pareto_front.csv`` and ``pareto_front.png``."""
    written = {"pareto_front_table": out / "pareto_front.csv"}
    pareto_frame(study).to_csv(written["pareto_front_table"], index=False)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not plots or not complete or len(study.directions) > 3:
        return written
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = ovm.plot_pareto_front(study, target_names=objective_names(study))
    fig = ax.figure
    fig.set_size_inches(7, 5)
    fig.tight_layout()
    fig.savefig(out / "pareto_front.png", dpi=100)
    plt.close(fig)
    written["pareto_front"] = out / "pareto_front.png"
    return written


def save_report(
    study: optuna.Study,
    directory: str | pathlib.Path,
    *,
    monitor: str = "value",
    plots: bool = True,
) -> dict[str, pathlib.Path]:
    """Write ``trials.csv``, ``summary.txt`` and PNG plots into ``directory``.

    Plots (Optuna's ``visualization.matplotlib`` plus our learning curves): optimization
    history, learning curves, parameter importances and parallel coordinates. A plot that needs
    more trials than there are (importances need two completed trials whose params vary) is
    skipped. Returns the written files by name.

    Example:
        >>> import tempfile
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        >>> sorted(save_report(study, tempfile.mkdtemp(), plots=False))
        ['summary', 'trials']
    """
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, pathlib.Path] = {}
    trials_frame(study).to_csv(out / "trials.csv", index=False)
    written["trials"] = out / "trials.csv"
    (out / "summary.txt").write_text(summary_table(study, monitor=monitor) + "\n")
    written["summary"] = out / "summary.txt"
    if len(study.directions) > 1:
        written.update(_save_pareto(study, out, plots))
        return written
    if not plots:
        return written
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    makers: dict[str, Any] = {
        "learning_curves": lambda: plot_learning_curves(study, monitor=monitor)
    }
    if complete:
        makers["optimization_history"] = lambda: ovm.plot_optimization_history(
            study, target_name=monitor
        )
        makers["parallel_coordinate"] = lambda: ovm.plot_parallel_coordinate(
            study, target_name=monitor
        )
    if len(complete) >= 2:
        makers["param_importances"] = lambda: ovm.plot_param_importances(study, target_name=monitor)
    for name, make in makers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = make()
            except (ValueError, RuntimeError, ZeroDivisionError):
                # e.g. importances when no parameter varies among completed trials
                plt.close("all")
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(max(fig.get_size_inches()[0], 7), max(fig.get_size_inches()[1], 4.5))
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written[name] = path
    return written
