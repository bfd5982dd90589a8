"""The mutants of tools/mutation.py: one operator or constant changed inside one function.

Found with an AST walk of a module's functions (not their decorators, defaults, annotations,
docstrings, messages); each mutant can be applied to the tree and undone, and the mutated
function's code object is swapped into the live function object in place.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import types
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

_SWAP = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
    ast.And: ast.Or, ast.Or: ast.And,
}  # fmt: skip
_QUIET_CALLS = {"warn", "rank_zero_warn", "rank_zero_info", "print", "debug", "info", "warning"}


@dataclasses.dataclass
class Mutant:
    target: str
    function: str  # qualname of the outermost function holding the change
    line: int
    before: str
    after: str
    apply: Any = dataclasses.field(repr=False)  # () -> undo callable
    status: str = "pending"
    seconds: float = 0.0
    reason: str = ""

    @property
    def key(self) -> str:
        return f"{self.target}:{self.function}: {self.before} -> {self.after}"


def _setter(obj: Any, field: str, value: Any, index: int | None = None) -> Any:
    def apply() -> Any:
        if index is None:
            old = getattr(obj, field)
            setattr(obj, field, value)
            return lambda: setattr(obj, field, old)
        seq = getattr(obj, field)
        old = seq[index]
        seq[index] = value
        return lambda: seq.__setitem__(index, old)

    return apply


def _src(node: ast.AST) -> str:
    return ast.unparse(node).replace("\n", " ")[:80]


def _swap_node(node: ast.AST, new_op: ast.AST, field: str, index: int | None) -> ast.AST:
    clone = ast.parse(ast.unparse(node), mode="eval").body if isinstance(node, ast.expr) else node
    if index is None:
        setattr(clone, field, new_op)
    else:
        getattr(clone, field)[index] = new_op
    return clone


class _Collector(ast.NodeVisitor):
    """Finds the mutation points inside the functions of one module."""

    def __init__(self, target: Any, strings: bool = False) -> None:
        self.target = target  # a mutation.Target: .name, .functions
        self.strings = strings
        self.scope: list[str] = []
        self.outer: str | None = None
        self.mutants: list[Mutant] = []

    def _add(self, node: ast.AST, apply: Any, after: str, before: str | None = None) -> None:
        if self.outer is None:
            return
        functions = self.target.functions
        if functions is not None and self.outer not in functions:
            return
        self.mutants.append(
            Mutant(self.target.name, self.outer, node.lineno, before or _src(node), after, apply)
        )

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        qualname = ".".join([*self.scope, node.name])
        outer_set = self.outer is None
        if outer_set:
            self.outer = qualname
        self.scope += [node.name, "<locals>"]
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        for statement in body:  # not the decorators, defaults or annotations
            self.visit(statement)
        del self.scope[-2:]
        if outer_set:
            self.outer = None

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        for statement in node.body:
            self.visit(statement)
        self.scope.pop()

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        self.generic_visit(node)

    # Message text is not behaviour a mutant should be judged by: no mutants inside raise,
    # assert, warnings and f-strings.
    def visit_Raise(self, node: ast.Raise) -> None:
        return

    def visit_Assert(self, node: ast.Assert) -> None:
        return

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _QUIET_CALLS:
            return
        if isinstance(func, ast.Name) and func.id in ("min", "max"):
            other = ast.Name("max" if func.id == "min" else "min", ast.Load())
            after = _src(ast.Call(other, node.args, node.keywords))
            self._add(node, _setter(node, "func", other), after)
        self.generic_visit(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.body)

    def _op(self, node: ast.AST, field: str) -> None:
        ops = getattr(node, field)
        for index, op in enumerate(ops if isinstance(ops, list) else [ops]):
            new = _SWAP.get(type(op))
            if new is None:
                continue
            i = index if isinstance(ops, list) else None
            after = _src(_swap_node(node, new(), field, i)) if isinstance(node, ast.expr) else ""
            if isinstance(node, ast.AugAssign):
                after = f"{_src(node.target)} {type(new()).__name__}= ..."
            self._add(node, _setter(node, field, new(), i), after)

    def visit_Compare(self, node: ast.Compare) -> None:
        self._op(node, "ops")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        self._op(node, "op")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self._op(node, "op")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._op(node, "op")
        self.visit(node.value)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):  # "not x" -> "not not x", i.e. bool(x)
            inner = ast.UnaryOp(ast.Not(), node.operand)
            self._add(node, _setter(node, "operand", inner), _src(node.operand))
        elif isinstance(node.op, ast.USub):  # "-x" -> "+x"
            self._add(node, _setter(node, "op", ast.UAdd()), "+" + _src(node.operand))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            new: Any = not value
        elif isinstance(value, int | float):
            new = value + 1
        elif isinstance(value, str) and value and self.strings:
            new = f"XX{value}XX"
        else:
            return
        self._add(node, _setter(node, "value", new), repr(new))


def _compile(tree: ast.Module, path: pathlib.Path) -> types.CodeType:
    return compile(ast.fix_missing_locations(tree), str(path), "exec")


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield const
            yield from _codes(const)


def _live_functions(module: types.ModuleType) -> dict[str, list[types.FunctionType]]:
    """Every function object defined in ``module``, by qualname (a property setter shares it)."""
    found: dict[str, list[types.FunctionType]] = defaultdict(list)
    seen: set[int] = set()

    def add(obj: Any) -> None:
        for attr in ("__func__", "fget", "fset", "fdel", "__wrapped__"):
            inner = getattr(obj, attr, None)
            if inner is not None:
                add(inner)
        own = isinstance(obj, types.FunctionType) and obj.__module__ == module.__name__
        if own and id(obj) not in seen:
            seen.add(id(obj))
            found[obj.__code__.co_qualname].append(obj)

    def walk(namespace: dict[str, Any], owner: str) -> None:
        for value in list(namespace.values()):
            if isinstance(value, type) and value.__module__ == module.__name__:
                if value.__qualname__.startswith(owner) and id(value) not in seen:
                    seen.add(id(value))
                    walk(dict(vars(value)), value.__qualname__ + ".")
            else:
                add(value)

    walk(dict(vars(module)), "")
    return found
