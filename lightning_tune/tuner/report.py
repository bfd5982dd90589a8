"""Sweep reports: a terminal table, a CSV of trials and plots saved as PNG files."""

from __future__ import annotations

import math
import pathlib
import warnings
from collections import Counter
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "format_trial_line",
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


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, epochs, seconds, reason and the params.

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        >>> list(trials_frame(study).columns)[:4]
        ['number', 'state', 'value', 'epochs']
    """
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        row: dict[str, Any] = {
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value if trial.state == TrialState.COMPLETE else None,
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
    trial: FrozenTrial, *, monitor: str = "value", max_epochs: int | None = None
) -> str:
    """One line per finished trial: number, state, value, epochs run, time and params.

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_int("x", 3, 3), n_trials=1)
        >>> format_trial_line(study.trials[0])  # doctest: +ELLIPSIS
        'trial    0 COMPLETE value=3 epochs=? ...s x=3'
    """
    value = trial.value if trial.value is not None else float("nan")
    epochs = trial.user_attrs.get("epochs", "?")
    if max_epochs is not None:
        epochs = f"{epochs}/{max_epochs}"
    seconds = trial.duration.total_seconds() if trial.duration is not None else float("nan")
    params = " ".join(f"{k}={_fmt(v)}" for k, v in trial_params(trial).items())
    line = (
        f"trial {trial.number:4d} {trial.state.name:8s} {monitor}={_fmt(value)} "
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
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        lines.append("No completed trial yet.")
        return "\n".join(lines)
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
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    return "\n".join(lines)


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
