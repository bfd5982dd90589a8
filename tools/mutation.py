"""Mutation testing of lightning_tune's core logic: do the tests notice a planted bug?

Each mutant changes one operator or constant inside one function (``<`` -> ``<=``, ``+`` -> ``-``,
``and`` -> ``or``, ``min`` -> ``max``, ``n`` -> ``n + 1``, ``True`` -> ``False``, a key string ...).
The mutant is killed when a test that runs the function fails. The score is
``killed / (total - equivalent)``; equivalent mutants (same behaviour, no test can fail) are
listed in ``EQUIVALENT`` below, each with its reason, and the survivors are written to the report.

How it runs (a small self-written mutator rather than mutmut or cosmic-ray; see
docs/benchmarks/mutation.md for why): the parent process imports torch, Lightning, timm and the
test modules once (15-20 s on a busy machine); every mutant then runs in a forked child that
swaps the mutated function's code object in place (so every reference to the function, in any
module, sees the mutant) and calls ``pytest.main`` on only the tests that executed that
function in a first, recorded run of the module's tests (doctests included), fastest first,
stopping at the first failure. Nothing is written to the source files.

Usage::

    nice -n 19 python tools/mutation.py                      # every module, 2 jobs
    nice -n 19 python tools/mutation.py --module schedules   # one module (repeatable)
    python tools/mutation.py --list                          # count the mutants, run nothing
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import gc
import json
import os
import pathlib
import re
import signal
import sys
import time
from collections import defaultdict
from typing import Any

import pytest
from mutants import Mutant, _codes, _Collector, _compile, _live_functions

ROOT = pathlib.Path(__file__).resolve().parents[1]

# No test reaches the model hub (this machine has none), but a mutant that turns a local load
# into ``pretrained=True`` would wait ~47 s for the name lookup to fail; offline it fails at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    module: str
    tests: tuple[str, ...]
    functions: frozenset[str] | None = None  # qualnames to mutate; None: every function

    @property
    def test_files(self) -> tuple[str, ...]:
        """``tests`` and, beside each, its ``*_edges.py`` file of boundary tests if there is one."""
        edges = [t.replace(".py", "_edges.py") for t in self.tests]
        return self.tests + tuple(e for e in edges if (ROOT / e).exists())

    @property
    def path(self) -> pathlib.Path:
        return ROOT / (self.module.replace(".", "/") + ".py")


_LR = "tests/callbacks/test_lr_schedule.py"
_FREEZE = "tests/callbacks/test_freezing.py"
TARGETS = [
    Target("schedules", "lightning_tune.schedules", ("tests/test_schedules.py", _LR)),
    Target("lr_schedule", "lightning_tune.callbacks.lr_schedule", (_LR, "tests/test_schedules.py")),
    Target(
        "early_stopping",
        "lightning_tune.callbacks.early_stopping",
        ("tests/callbacks/test_early_stopping.py",),
    ),
    Target(
        "gradient_clipping",
        "lightning_tune.callbacks.gradient_clipping",
        ("tests/callbacks/test_gradient_clipping.py",),
    ),
    Target(
        "label_smoothing",
        "lightning_tune.callbacks.label_smoothing",
        ("tests/callbacks/test_label_smoothing.py",),
    ),
    Target(
        "lr_settings",
        "lightning_tune.callbacks._lr_settings",
        (
            _LR,
            "tests/callbacks/test_lr_schedule_settings_edges.py",
            "tests/callbacks/test_freezing_steps.py",
        ),
    ),
    Target(
        "freezing",
        "lightning_tune.callbacks.freezing",
        (_FREEZE, "tests/callbacks/test_freezing_steps.py", _LR),
    ),
    Target(
        "freezing_plan",
        "lightning_tune.callbacks._freezing_plan",
        (
            _FREEZE,
            "tests/callbacks/test_freezing_plan_edges.py",
            "tests/callbacks/test_freezing_steps.py",
            _LR,
        ),
    ),
    Target(
        "freezing_groups",
        "lightning_tune.callbacks._freezing_groups",
        (
            _FREEZE,
            "tests/callbacks/test_freezing_groups_edges.py",
            "tests/test_models.py",
            "tests/test_timm_utils.py",
        ),
    ),
    Target(
        "milestones",
        "lightning_tune.callbacks._milestones",
        (
            "tests/callbacks/test_milestones_edges.py",
            _FREEZE,
            "tests/callbacks/test_freezing_steps.py",
            _LR,
        ),
    ),
    Target("resume", "lightning_tune.callbacks._resume", ("tests/callbacks/test_resume.py",)),
    Target("pruning", "lightning_tune.tuner.pruning", ("tests/tuner/test_pruning.py",)),
    Target(
        "tuner_objective",
        "lightning_tune.tuner.trials",
        ("tests/tuner/test_tuner.py",),
        frozenset(
            {
                "TrialRunning.objective",
                "TrialRunning._run_trial",
                "TrialRunning._stop_if_pruned",
                "TrialRunning._trial_value",
            }
        ),
    ),
    Target(
        "storage_masking",
        "lightning_tune.tuner.storage",
        ("tests/tuner/test_storage.py",),
        frozenset({"mask_url", "describe_storage", "_password", "_rdb"}),
    ),
    Target(
        "weights", "lightning_tune.weights", ("tests/test_weights.py", "tests/test_timm_utils.py")
    ),
    Target(
        "timm_loading",
        "lightning_tune.timm_utils",
        ("tests/test_timm_utils.py", "tests/test_weights.py"),
        frozenset({"create_model", "_load_local", "_input_conv_adapted", "_head_prefixes"}),
    ),
]

# String constants (keys, names, choices) are mutated only with --strings: in these modules
# most are parts of messages, and the run must fit in 30 minutes on 2 cores.
STRINGS = False

# "<target>:<function>: <before> -> <after>": why the mutant cannot change behaviour.
EQUIVALENT: dict[str, str] = {
    "storage_masking:mask_url: 1 -> 2": "maxsplit of userinfo.split(':', 1): only [0] is used",
    "storage_masking:_rdb: 1 -> 2": "maxsplit of str(err).split(marker, 1): only [0] is used",
    "schedules:warmup_factor: step >= warmup_steps -> step > warmup_steps": (
        "at step == warmup_steps every mode gives exactly 1.0 (linear a + (1 - a) * 1.0, "
        "cos(pi) == -1.0, a ** 0.0)"
    ),
}


# More verdicts, one per line, in tools/mutation_verdicts.txt:
#   EQUIVALENT <key> => <why no test can tell the mutant apart>
#   CLOSED <key> => <the test written since that kills it>
#   REMOVED <key> => <where the mutated check lives now and the test that covers it there>
# A "[L<line>]" in the text ties the verdict to the mutant on that line (of the recorded run's
# commit) when one key stands for two mutants (the same constant twice in one function).
VERDICTS = ROOT / "tools" / "mutation_verdicts.txt"
REMOVED: dict[str, str] = {}


def _load_verdicts(path: pathlib.Path) -> None:
    tables = {"EQUIVALENT": EQUIVALENT, "CLOSED": CLOSED, "REMOVED": REMOVED}
    for text in path.read_text().splitlines() if path.exists() else []:
        if not text.strip() or text.startswith("#"):
            continue
        kind, rest = text.split(" ", 1)
        key, value = rest.rsplit(" => ", 1)
        line = re.search(r"\s*\[(L\d+)\]\s*", value)
        if line:
            key, value = f"{line[1]} {key}", (value[: line.start()] + " " + value[line.end() :])
        tables[kind][key] = value.strip()


def verdict(table: dict[str, str], mutant: Mutant) -> str | None:
    """The entry of ``table`` for ``mutant``: by its line first, then by its key."""
    return table.get(f"L{mutant.line} {mutant.key}", table.get(mutant.key))


def collect(target: Target) -> tuple[ast.Module, list[Mutant]]:
    tree = ast.parse(target.path.read_text(), str(target.path))
    collector = _Collector(target, STRINGS)
    collector.visit(tree)
    return tree, collector.mutants


# Survivors of a recorded run closed afterwards by a new test (each checked by applying the
# mutant by hand): "<key>": "<test>". The next full run counts them as killed by itself.
CLOSED: dict[str, str] = {
    "schedules:_in_range: low <= value <= high -> low <= value < high": (
        "tests/test_schedules.py::test_both_ends_of_a_factor_range_are_accepted"
    ),
    "storage_masking:_rdb: True -> False": (
        "tests/tuner/test_storage.py::test_a_connection_the_server_dropped_is_replaced_not_an_error"
    ),
    "schedules:warmup_factor: 1.0 - start_factor -> 1.0 + start_factor": (
        "tests/test_schedules.py::test_a_cosine_warmup_from_a_start_factor"
    ),
    "schedules:Cosine.__post_init__: 1.0 -> 2.0": (
        "tests/test_schedules.py::test_factors_outside_0_1_are_refused"
    ),
    "schedules:Cyclic.__post_init__: 0 < _number('gamma', self.gamma) <= 1 -> "
    "0 <= _number('gamma', self.gamma) <= 1": (
        "tests/test_schedules.py::test_a_cyclic_gamma_outside_0_1_is_refused"
    ),
    "pruning:OptunaPruning.load_state_dict: 0 -> 1": (
        "tests/tuner/test_pruning.py::test_a_state_without_keys_loads_as_a_fresh_callback"
    ),
}


# --------------------------------------------------------------------------- running
class _Recorder:
    """pytest plugin: which tests execute which functions of one file, and how long they take."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.hits: dict[str, set[str]] = defaultdict(set)  # qualname -> node ids
        self.durations: dict[str, float] = {}
        self.failed: list[str] = []
        # A module- or session-scoped fixture runs once, inside the first test that asks for
        # it; what it executes belongs to every test that uses it (they assert on its result).
        self._fixture: str | None = None
        self.fixture_hits: dict[str, set[str]] = defaultdict(set)  # fixture -> qualnames
        self.users: dict[str, list[str]] = {}  # node id -> fixture names

    def _profile(self, nodeid: str) -> Any:
        path, hits, recorder = self.path, self.hits, self

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code.co_filename == path:
                hits[frame.f_code.co_qualname].add(nodeid)
                if recorder._fixture is not None:
                    recorder.fixture_hits[recorder._fixture].add(frame.f_code.co_qualname)

        return profile

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Any:
        previous = self._fixture
        if fixturedef.scope != "function":
            self._fixture = fixturedef.argname
        try:
            return (yield)
        finally:
            self._fixture = previous

    def shared_hits(self) -> dict[str, set[str]]:
        """``hits`` plus, for every test, what the shared fixtures it uses executed."""
        hits = defaultdict(set, {k: set(v) for k, v in self.hits.items()})
        for nodeid, fixtures in self.users.items():
            for name in fixtures:
                for qualname in self.fixture_hits.get(name, ()):
                    hits[qualname].add(nodeid)
        return hits

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:
        self.users[item.nodeid] = list(getattr(item, "fixturenames", ()))
        sys.setprofile(self._profile(item.nodeid))
        self._start = time.perf_counter()

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        sys.setprofile(None)
        self.durations[nodeid] = time.perf_counter() - self._start

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed:
            self.failed.append(report.nodeid)


_PYTEST = ["-q", "-p", "no:randomly", "-p", "no:cacheprovider", "--no-header", "-W", "ignore"]


def _quiet_child(log: pathlib.Path | None) -> None:
    os.setpgrp()
    fd = os.open(log or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def _start_record(target: Target, workdir: pathlib.Path) -> int:
    """Run the target's tests once (in a child), recording coverage per function and times;
    the child writes ``<workdir>/<name>.record.json``. Returns its pid."""
    out = workdir / f"{target.name}.record.json"
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            _quiet_child(workdir / f"{target.name}.record.log")
            import pytest

            recorder = _Recorder(str(target.path))
            args = [*_PYTEST, "-p", "no:randomly", *target.test_files, str(target.path)]
            code = pytest.main(args, plugins=[recorder])
            out.write_text(
                json.dumps(
                    {
                        "exit": int(code),
                        "hits": {k: sorted(v) for k, v in recorder.shared_hits().items()},
                        "durations": recorder.durations,
                        "failed": recorder.failed,
                    }
                )
            )
        finally:
            os._exit(int(code))
    return pid


def _tests_for(mutant: Mutant, recorded: dict[str, Any]) -> list[str]:
    nodeids: set[str] = set()
    for qualname, ids in recorded["hits"].items():
        if qualname == mutant.function or qualname.startswith(mutant.function + ".<locals>."):
            nodeids.update(ids)
    nodeids -= set(recorded["failed"])
    return sorted(nodeids, key=lambda n: recorded["durations"].get(n, 0.0))


def _start(mutant: Mutant, tree: ast.Module, target: Target, tests: list[str]) -> int:
    undo = mutant.apply()
    try:
        code = _compile(tree, target.path)
    finally:
        undo()
    pid = os.fork()
    if pid != 0:
        return pid
    status = 4
    try:
        _quiet_child(None)
        module = sys.modules[target.module]
        live = _live_functions(module).get(mutant.function, [])
        new = [c for c in _codes(code) if c.co_qualname == mutant.function]
        if not live or not new:
            os._exit(97)
        for function in live:
            # a property's getter and setter share a qualname: pair them by first line
            same = [c for c in new if c.co_firstlineno == function.__code__.co_firstlineno]
            function.__code__ = (same or new)[0] if len(new) > 1 else new[0]
        import pytest

        status = int(pytest.main([*_PYTEST, "-x", "-p", "no:randomly", *tests]))
    except BaseException:
        status = 98
    finally:
        os._exit(status)


@dataclasses.dataclass
class _Job:
    """A forked child: a target's recorded run (``mutant`` None) or one mutant's tests."""

    target: Target
    mutant: Mutant | None
    started: float
    limit: float = float("inf")


def run(
    targets: list[Target], jobs: int, workdir: pathlib.Path, progress: Any = None
) -> list[Mutant]:
    """Every target's recorded run, then its mutants, ``jobs`` children at a time.

    One queue for the whole run: a target's mutants start as soon as its own recorded run is
    done (not after every target's), and the next target's mutants fill a core while the last
    ones of the previous target still run, so neither core waits for the other.
    """
    import pytest

    # import torch, Lightning, timm and the test modules once, before forking
    everything = sorted({t for target in targets for t in target.test_files})
    code = pytest.main([*_PYTEST, "--collect-only", *everything])
    if code not in (0, 5):
        raise SystemExit(f"collecting the tests failed (exit {code})")
    for target in targets:
        __import__(target.module)
    # Everything imported so far stays out of the children's garbage collections: pytest runs
    # gc.collect() twice per session, which over torch's, Lightning's and timm's objects took
    # 0.9 of a trivial mutant's 1.1 s.
    gc.freeze()
    plans = {target.name: collect(target) for target in targets}
    results = [m for target in targets for m in plans[target.name][1]]
    left = {target.name: len(plans[target.name][1]) for target in targets}
    records: dict[str, tuple[dict[str, Any], float]] = {}
    to_record = list(targets)  # first: they hold up their mutants
    ready: list[tuple[Target, Mutant]] = []
    running: dict[int, _Job] = {}

    def finished(target: Target, mutant: Mutant | None, seconds: float) -> None:
        if mutant is not None:
            left[target.name] -= 1
            print(
                f"  {mutant.status:>18} {seconds:5.1f} s  L{mutant.line} {mutant.key}", flush=True
            )
            if progress is not None:  # the report so far, readable while it runs
                progress(results)
        if left[target.name] == 0 and target.name in records:
            mutants = plans[target.name][1]
            baseline = records[target.name][1]
            print(
                f"[{target.name}] {len(mutants)} mutants, baseline {baseline:.0f} s: "
                f"{_score(mutants)}",
                flush=True,
            )

    def start_next() -> None:
        if to_record:
            target = to_record.pop(0)
            running[_start_record(target, workdir)] = _Job(target, None, time.monotonic())
            return
        target, mutant = ready.pop(0)
        recorded = records[target.name][0]
        tests = _tests_for(mutant, recorded)
        reason = verdict(EQUIVALENT, mutant)
        if reason is not None or not tests:
            if reason is not None:
                mutant.status, mutant.reason = "equivalent", reason
            else:
                mutant.status = "not run by any test"
            finished(target, mutant, 0.0)
            return
        limit = 20 + 4 * sum(recorded["durations"].get(t, 1.0) for t in tests)
        tree = plans[target.name][0]
        running[_start(mutant, tree, target, tests)] = _Job(target, mutant, time.monotonic(), limit)

    while to_record or ready or running:
        while len(running) < jobs and (to_record or ready):
            start_next()
        if not running:
            continue
        time.sleep(0.05)
        for pid, job in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            elapsed = time.monotonic() - job.started
            if done == 0 and elapsed > job.limit:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                assert job.mutant is not None  # a recorded run has no limit
                job.mutant.status = "killed (timeout)"
            elif done == 0:
                continue
            elif job.mutant is None:
                out = workdir / f"{job.target.name}.record.json"
                recorded = json.loads(out.read_text())
                records[job.target.name] = (recorded, elapsed)
                if recorded["failed"]:
                    print(f"[{job.target.name}] failing before mutation: {recorded['failed']}")
                ready += [(job.target, m) for m in plans[job.target.name][1]]
            else:
                code = os.waitstatus_to_exitcode(status)
                job.mutant.status = {0: "survived", 1: "killed"}.get(code, f"error (exit {code})")
            del running[pid]
            if job.mutant is not None:
                job.mutant.seconds = elapsed
            finished(job.target, job.mutant, elapsed)
    return results


def _score(mutants: list[Mutant]) -> str:
    killed = sum(m.status.startswith("killed") for m in mutants)
    equivalent = sum(m.status == "equivalent" for m in mutants)
    errors = sum(m.status.startswith("error") for m in mutants)
    pending = sum(m.status == "pending" for m in mutants)
    total = len(mutants) - equivalent - errors - pending
    score = 100.0 * killed / total if total else 100.0
    text = f"{killed}/{total} killed ({score:.1f} %), {equivalent} equivalent, {errors} errors"
    return text + (f", {pending} not run yet" if pending else "")


_HEADER = """# Mutation testing of the core logic

Written by `tools/mutation.py` (do not edit by hand; rerun it). A mutant is one planted bug:
one operator or constant changed inside one function (`<` -> `<=`, `+` -> `-`, `and` -> `or`,
`not x` -> `x`, `min` -> `max`, `n` -> `n + 1`, `True` -> `False`). It is *killed* when a test
that runs that function fails; score = killed / (total - equivalent). Messages (inside `raise`,
`assert`, warnings, f-strings), annotations, defaults, docstrings and module-level code are not
mutated; string constants only with `--strings`.

Why a small self-written mutator instead of `mutmut` or `cosmic-ray`: importing torch,
Lightning and timm costs 15-20 s per process on the shared 2-core machine, so a tool that
starts a test process per mutant (cosmic-ray) cannot run ~1200 mutants in 30 minutes; mutmut 3
forks too but rewrites every function of a file into trampolines and mutates whole files,
while two targets here are parts of modules (the tuner's trial objective, the storage's URL
masking), and its copy of the project in `mutants/` would shadow the editable install the
tests import. Here the parent imports everything once; each mutant runs in a forked child that
swaps the mutated function's code object in place and runs only the tests (doctests included)
that executed that function in a recorded run, fastest first, stopping at the first failure.
The parent freezes its objects out of the garbage collector before forking (`gc.freeze()`),
so the two collections pytest runs per session cost a child milliseconds, not a second. One
queue keeps both cores busy: a module's mutants start as soon as its own recorded run is
done, and the next module's fill a core while the last of the previous one still run. The
children run with `HF_HUB_OFFLINE=1`: a mutant that sends a local load to the model hub fails
at once instead of after a 47 s name lookup. No file is changed.

Run it before changing core logic (the machine is shared: keep it niced):

    nice -n 19 python tools/mutation.py                      # all modules, 2 jobs
    nice -n 19 python tools/mutation.py --module schedules   # one module (repeatable)
    python tools/mutation.py --list                          # the mutants, without running

Timing note: measured on a shared machine; wall times vary several-fold with the other load.
"""


def write_report(results: list[Mutant], seconds: float, path: pathlib.Path, command: str) -> None:
    survived = [m for m in results if not m.status.startswith(("killed", "equivalent", "pending"))]
    # Survivors closed since by a new test (or whose code is gone, the check covered elsewhere).
    after = [
        dataclasses.replace(m, status="killed") if m in survived and _since(m) != ")" else m
        for m in results
    ]
    by_target: dict[str, list[tuple[Mutant, Mutant]]] = defaultdict(list)
    for mutant, later in zip(results, after):
        by_target[mutant.target].append((mutant, later))
    lines = [
        _HEADER,
        "## Result",
        "",
        "| module | mutants | score of the run | with the survivors closed since |",
        "|---|---|---|---|",
        *(
            f"| {name} | {len(pairs)} | {_score([m for m, _ in pairs])} | "
            f"{_score([a for _, a in pairs])} |"
            for name, pairs in by_target.items()
        ),
        f"| **all** | {len(results)} | **{_score(results)}** | **{_score(after)}** |",
        "",
        f"Wall time: {seconds / 60:.1f} min (`{command}`)."
        if seconds
        else "Assembled with `--from-log` from the per-mutant output of several runs.",
        "",
        "## Survivors",
        "",
    ]
    survivors = survived
    lines += [
        f"- `{m.target}` `{m.function}` line {m.line}: `{m.before}` -> `{m.after}` ({m.status}"
        + _since(m)
        for m in survivors
    ] or ["None."]
    closed = [m for m in survivors if _since(m) != ")"]
    if closed:
        lines += ["", f"With the {len(closed)} closed survivors: {_score(after)}."]
    lines += ["", "## Equivalent mutants", ""]
    lines += [f"- `{m.key}`: {m.reason}" for m in results if m.status == "equivalent"] or ["None."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _since(mutant: Mutant) -> str:
    closed, removed = verdict(CLOSED, mutant), verdict(REMOVED, mutant)
    if closed:
        return f"; closed since by `{closed}`)"
    if removed:
        return f"; the code is gone, the check now: {removed})"
    return ")"


_LOG_LINE = re.compile(
    r"^\s+(?P<status>killed \(timeout\)|killed|survived|not run by any test|equivalent"
    r"|error \(exit -?\d+\))"
    r"\s+(?P<seconds>[\d.]+) s\s+(?:L(?P<line>\d+) )?(?P<key>\S+:\S+: .+ -> .*)$"
)


def from_logs(paths: list[str]) -> list[Mutant]:
    """The mutants of earlier runs' output (the per-mutant lines), with EQUIVALENT applied."""
    results: list[Mutant] = []
    for path in paths:
        for text in pathlib.Path(path).read_text().splitlines():
            match = _LOG_LINE.match(text)
            if not match:
                continue
            key = match["key"]
            target, rest = key.split(":", 1)
            function, rest = rest.split(": ", 1)
            before, after = rest.split(" -> ", 1)
            mutant = Mutant(target, function, int(match["line"] or 0), before, after, None)
            mutant.status, mutant.seconds = match["status"], float(match["seconds"])
            reason = verdict(EQUIVALENT, mutant)
            if reason is not None and not mutant.status.startswith("killed"):
                mutant.status, mutant.reason = "equivalent", reason
            results.append(mutant)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=[t.name for t in TARGETS])
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--list", action="store_true", help="count the mutants, run nothing")
    parser.add_argument("--strings", action="store_true", help="also mutate string constants")
    parser.add_argument(
        "--from-log", nargs="+", metavar="LOG", help="only rewrite the report from runs' output"
    )
    parser.add_argument(
        "--report", default=str(ROOT / "docs/benchmarks/mutation.md"), help="output"
    )
    args = parser.parse_args(argv)
    _load_verdicts(VERDICTS)
    targets = [t for t in TARGETS if not args.module or t.name in args.module]
    if args.module:  # in the order asked for
        targets.sort(key=lambda t: args.module.index(t.name))
    global STRINGS
    STRINGS = args.strings
    if args.from_log:
        results = from_logs(args.from_log)
        command = "python tools/mutation.py (several runs, see below)"
        write_report(results, 0.0, pathlib.Path(args.report), command)
        print(f"all: {_score(results)} -> {args.report}")
        return 0
    if args.list:
        for target in targets:
            _, mutants = collect(target)
            print(f"{target.name}: {len(mutants)} mutants")
            for m in mutants:
                print(f"  {m.line}: {m.key}")
        return 0
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    workdir = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"mutation-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    command = "python tools/mutation.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def report(results: list[Mutant]) -> None:
        seconds = time.perf_counter() - start
        write_report(results, seconds, pathlib.Path(args.report), command.strip())

    results = run(targets, args.jobs, workdir, report)
    report(results)
    seconds = time.perf_counter() - start
    print(f"all: {_score(results)} in {seconds / 60:.1f} min -> {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
