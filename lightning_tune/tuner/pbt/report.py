"""The PBT report: the segments table, the final table, the best member's hyperparameter
schedule and the population's lineage, all read from the study."""

from __future__ import annotations

import math
import pathlib
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from lightning_tune.tuner.pbt.population import ATTR, Segment

__all__ = ["best_lineage", "final_table", "save_pbt_report", "segments_frame"]


def _segments(study: optuna.Study) -> list[Segment]:
    trials = study.get_trials(deepcopy=False)
    return [Segment.from_trial(t) for t in trials if ATTR in t.user_attrs]


def _maximize(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


def segments_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per segment trial: member, round, trial, state, value, donor, changes, params.

    Example:
        >>> segments_frame(optuna.create_study()).empty
        True
    """
    rows = []
    for s in _segments(study):
        changes = s.info.get("changes") or {}
        rows.append(
            {
                "member": s.member,
                "round": s.round,
                "trial": s.number,
                "state": s.state.name,
                "value": s.value,
                "donor": s.info.get("donor"),
                "donor_trial": s.info.get("donor_trial"),
                "changes": "; ".join(f"{k}: {c['how']}" for k, c in changes.items()),
                **{f"params_{k}": v for k, v in s.params.items()},
            }
        )
    return pd.DataFrame(rows)


def _final(study: optuna.Study) -> dict[int, Segment]:
    """Each member's last COMPLETE segment."""
    out: dict[int, Segment] = {}
    for s in _segments(study):
        if s.state == TrialState.COMPLETE and (
            s.member not in out or s.round > out[s.member].round
        ):
            out[s.member] = s
    return out


def _best_final(study: optuna.Study) -> Segment | None:
    final = [s for s in _final(study).values() if s.value is not None]
    if not final:
        return None
    best = max(final, key=lambda s: (s.round, -s.value if not _maximize(study) else s.value))
    return best


def best_lineage(study: optuna.Study) -> list[Segment]:
    """The segments behind the best member's final weights, round 0 first (following exploits
    to the donor's segment).

    Example:
        >>> best_lineage(optuna.create_study())
        []
    """
    best = _best_final(study)
    if best is None:
        return []
    by_number = {s.number: s for s in _segments(study)}
    done = {(s.member, s.round): s for s in by_number.values() if s.state == TrialState.COMPLETE}
    chain = [best]
    while chain[-1].round > 0:
        s = chain[-1]
        donor = s.info.get("donor_trial")
        previous = by_number.get(donor) if donor is not None else done.get((s.member, s.round - 1))
        if previous is None:
            break
        chain.append(previous)
    return chain[::-1]


def final_table(study: optuna.Study, monitor: str = "value") -> str:
    """The members at the end, best first: final value, rounds, exploits, hyperparameters.

    Example:
        >>> print(final_table(optuna.create_study()))
        no finished PBT segment yet
    """
    final = _final(study)
    if not final:
        return "no finished PBT segment yet"
    exploits = {m: 0 for m in final}
    for s in _segments(study):
        if (
            s.member in exploits
            and s.info.get("donor") is not None
            and s.state == TrialState.COMPLETE
        ):
            exploits[s.member] += 1
    sign = -1.0 if _maximize(study) else 1.0
    order = sorted(
        final.values(),
        key=lambda s: (-s.round, sign * (s.value if s.value is not None else math.inf)),
    )
    names = sorted({k for s in order for k in s.params})
    header = ["member", "rounds", monitor, "exploited", *names]
    rows = [
        [
            str(s.member),
            str(s.round + 1),
            f"{s.value:.4g}" if s.value is not None else "-",
            str(exploits[s.member]),
        ]
        + [
            f"{s.params.get(k):.4g}" if isinstance(s.params.get(k), float) else str(s.params.get(k))
            for k in names
        ]
        for s in order
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    return "\n".join(lines)


def _plot_schedule(study: optuna.Study, monitor: str) -> Any:
    import matplotlib.pyplot as plt

    chain = best_lineage(study)
    names = sorted({k for s in chain for k, v in s.params.items() if isinstance(v, (int, float))})
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(7, 1.8 * (len(names) + 1)), sharex=True)
    axes = list(axes) if len(names) else [axes]
    for ax, name in zip(axes, names):
        xs, ys = [], []
        for s in chain:
            start, end = s.info["epochs"]
            xs += [start, end]
            ys += [s.params[name]] * 2
        ax.plot(xs, ys, drawstyle="steps-post")
        ax.set_ylabel(name)
    ax = axes[-1]
    ax.plot([s.info["epochs"][1] for s in chain], [s.value for s in chain], marker="o")
    for s in chain:
        if s.info.get("donor") is not None:
            ax.annotate(f"from {s.info['donor']}", (s.info["epochs"][0], s.value), fontsize=7)
    ax.set_ylabel(monitor)
    ax.set_xlabel("epoch")
    member = chain[-1].member if chain else "-"
    fig.suptitle(f"best member {member}: hyperparameter schedule")
    fig.tight_layout()
    return fig


def _plot_lineage(study: optuna.Study, monitor: str) -> Any:
    import matplotlib.pyplot as plt

    segments = [s for s in _segments(study) if s.state == TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(7, 4))
    by_number = {s.number: s for s in segments}
    for s in segments:
        donor = by_number.get(s.info.get("donor_trial"))
        if donor is not None:
            ax.annotate(
                "",
                (s.round, s.member),
                (donor.round, donor.member),
                arrowprops={"arrowstyle": "->", "color": "tab:red", "alpha": 0.7},
            )
        elif s.round > 0:
            ax.plot([s.round - 1, s.round], [s.member, s.member], color="0.7", zorder=0)
    values = [s.value for s in segments]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    points = ax.scatter(
        [s.round for s in segments],
        [s.member for s in segments],
        c=[v if v is not None and math.isfinite(v) else max(finite, default=0) for v in values],
        cmap="viridis_r" if not _maximize(study) else "viridis",
        zorder=2,
    )
    fig.colorbar(points, ax=ax, label=monitor)
    ax.set_xlabel("round")
    ax.set_ylabel("member")
    ax.set_title("population lineage (red arrows: exploit, donor -> member)")
    fig.tight_layout()
    return fig


def save_pbt_report(
    study: optuna.Study,
    directory: str | pathlib.Path,
    monitor: str = "value",
    *,
    plots: bool = True,
) -> dict[str, pathlib.Path]:
    """Write ``pbt_segments.csv``, ``pbt_final.txt`` and (with ``plots``) ``pbt_schedule.png``
    and ``pbt_lineage.png`` to ``directory``; return their paths by name.

    Example:
        >>> import tempfile
        >>> files = save_pbt_report(optuna.create_study(), tempfile.mkdtemp(), plots=False)
        >>> sorted(files)
        ['pbt_final', 'pbt_segments']
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "pbt_segments": directory / "pbt_segments.csv",
        "pbt_final": directory / "pbt_final.txt",
    }
    segments_frame(study).to_csv(files["pbt_segments"], index=False)
    files["pbt_final"].write_text(final_table(study, monitor) + "\n")
    if plots and best_lineage(study):
        import matplotlib.pyplot as plt

        for name, plot in (("pbt_schedule", _plot_schedule), ("pbt_lineage", _plot_lineage)):
            fig = plot(study, monitor)
            files[name] = directory / f"{name}.png"
            fig.savefig(files[name], dpi=100)
            plt.close(fig)
    return files
