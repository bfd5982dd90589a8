"""Structure report for lightning_tune: import cycles, module and function sizes, complexity.

    python tools/check_structure.py            # print the report, exit 1 if a limit is broken
    python tools/check_structure.py --markdown # the same as a Markdown table for the docs

Code lines are counted without docstrings, comments and blank lines. The limits are the ones
the project holds itself to: no import cycle inside the package, no module over 400 code lines,
no function over 60 code lines, no function of cyclomatic complexity rank E or F (radon), no
block of six or more code lines repeated inside the package. The repeated-block check compares
code lines with their indentation stripped; it leaves out imports, decorators and the headers of
``def``/``class`` statements (a Lightning hook's signature is fixed by Lightning's API, so every
callback that implements ``on_train_batch_end`` repeats it).
"""

from __future__ import annotations

import argparse
import ast
import io
import pathlib
import sys
import tokenize
from collections.abc import Iterator

PACKAGE = "lightning_tune"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
BAD_RANKS = ("E", "F")
MIN_REPEATED_LINES = 6


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            value = first.value if isinstance(first, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source: str) -> set[int]:
    """Line numbers that hold code (not blank, comment-only or docstring lines)."""
    tree = ast.parse(source)
    skip = _docstring_lines(tree)
    lines: set[int] = set()
    ignored = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in ignored or tok.type == tokenize.ENDMARKER:
            continue
        for line in range(tok.start[0], tok.end[0] + 1):
            if line not in skip:
                lines.add(line)
    return lines


def modules(root: pathlib.Path) -> Iterator[tuple[str, pathlib.Path]]:
    for path in sorted((root / PACKAGE).rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _resolve(name: str, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return name
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def import_graph(root: pathlib.Path) -> dict[str, set[str]]:
    """Edges module -> modules of the package it imports (at any depth of the file)."""
    known = dict(modules(root))
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body
            for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue  # imports for type hints only are no run-time dependency
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, name, is_package)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith(PACKAGE):
                    graph[name].add(target)
    return graph


def _is_parent_package(a: str, b: str) -> bool:
    return b.startswith(a + ".") or a.startswith(b + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), ignoring the edges
    between a package's ``__init__`` and its own submodules (re-exports are not a cycle)."""
    edges = {a: {b for b in bs if not _is_parent_package(a, b)} for a, bs in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def functions(path: pathlib.Path) -> Iterator[tuple[str, int]]:
    source = path.read_text()
    lines = code_lines(source)
    tree = ast.parse(source)

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                span = set(range(child.lineno, child.end_lineno + 1))
                yield f"{prefix}{child.name}", len(span & lines)
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")

    yield from walk(tree, "")


def _not_compared(tree: ast.AST) -> set[int]:
    """Imports, decorators and def/class headers: lines the repeated-block check skips."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            lines.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:
                lines.update(range(decorator.lineno, decorator.end_lineno + 1))
            lines.update(range(node.lineno, node.body[0].lineno))
    return lines


def repeated_blocks(
    root: pathlib.Path, size: int = MIN_REPEATED_LINES
) -> list[tuple[str, str, str]]:
    """Runs of ``size`` code lines that stand in two places: ``(first, second, first line)``."""
    seen: dict[tuple[str, ...], str] = {}
    found: list[tuple[str, str, str]] = []
    for name, path in modules(root):
        source = path.read_text()
        text = source.splitlines()
        keep = sorted(code_lines(source) - _not_compared(ast.parse(source)))
        rows = [(number, text[number - 1].strip()) for number in keep]
        reported_until = -1
        for start in range(len(rows) - size + 1):
            window = tuple(line for _, line in rows[start : start + size])
            where = f"{name}:{rows[start][0]}"
            if window not in seen:
                seen[window] = where
            elif start > reported_until:
                found.append((seen[window], where, window[0]))
                reported_until = start + size - 1
    return found


def complexity(path: pathlib.Path) -> Iterator[tuple[str, int, str]]:
    from radon.complexity import cc_rank, cc_visit

    for block in cc_visit(path.read_text()):
        name = (
            f"{block.classname}.{block.name}" if getattr(block, "classname", None) else block.name
        )
        yield name, block.complexity, cc_rank(block.complexity)


def report(root: pathlib.Path) -> tuple[list[str], bool]:
    out: list[str] = []
    ok = True
    found = cycles(import_graph(root))
    out.append(f"import cycles: {len(found)}")
    for component in found:
        out.append("  cycle: " + " <-> ".join(component))
        ok = False
    big_modules = []
    long_functions = []
    bad_complexity = []
    for name, path in modules(root):
        n = len(code_lines(path.read_text()))
        if n > MAX_MODULE_LINES:
            big_modules.append((n, name))
        for function, length in functions(path):
            if length > MAX_FUNCTION_LINES:
                long_functions.append((length, f"{name}:{function}"))
        for function, value, rank in complexity(path):
            if rank in BAD_RANKS:
                bad_complexity.append((value, f"{name}:{function}", rank))
    out.append(f"modules over {MAX_MODULE_LINES} code lines: {len(big_modules)}")
    out += [f"  {n:4d}  {name}" for n, name in sorted(big_modules, reverse=True)]
    out.append(f"functions over {MAX_FUNCTION_LINES} code lines: {len(long_functions)}")
    out += [f"  {n:4d}  {name}" for n, name in sorted(long_functions, reverse=True)]
    out.append(f"functions of complexity rank {'/'.join(BAD_RANKS)}: {len(bad_complexity)}")
    out += [f"  {v:4d} ({r})  {name}" for v, name, r in sorted(bad_complexity, reverse=True)]
    repeats = repeated_blocks(root)
    out.append(f"blocks of {MIN_REPEATED_LINES}+ code lines repeated: {len(repeats)}")
    out += [f"  {first} ~ {second}: {line}" for first, second, line in repeats]
    ok = ok and not big_modules and not long_functions and not bad_complexity and not repeats
    return out, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path(__file__).parents[1])
    args = parser.parse_args(argv)
    lines, ok = report(args.root)
    print("\n".join(lines))
    print("structure: OK" if ok else "structure: limits broken")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
