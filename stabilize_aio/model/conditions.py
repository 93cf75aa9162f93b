"""Conditions: a small, safe expression language for ``enabled=`` and split conditions.

What an expression may hold: literals (numbers, strings, ``true``/``false``/``null``
and Python's ``True``/``False``/``None``, lists and tuples of literals), names
(looked up in the stage's context), dotted and subscript access into mappings
(``customer.tier``, ``scores["fast"]``, ``items[0]``), comparisons (``== != < <= >
>=``, ``in``, ``not in``, chained), ``and``/``or``/``not`` and unary minus. Nothing
else: no calls, no attribute of anything but a mapping, no comprehensions, so an
expression cannot run code or reach outside its context.

It is checked when the workflow is built (:func:`parse` raises
:class:`~stabilize_aio.DefinitionError` naming the stage), and evaluated against a
context when the engine needs its value. Evaluation never guesses: a name that is
missing, a key that is absent, a comparison of values that cannot be ordered, or
``and``/``or``/``not`` over something that is not a boolean raise
:class:`ConditionError` saying which, and the engine fails the stage with it
(never silently true or false).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

from .._errors import DefinitionError

#: Names that read as literals (JSON's spelling beside Python's).
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_SYMBOL = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in"}
_MAX_LENGTH = 2_000


class ConditionError(DefinitionError):
    """An expression that does not parse, or that cannot be evaluated against a context (it names the stage)."""


class Condition:
    """A parsed expression: :meth:`evaluate` gives its boolean value in a context."""

    __slots__ = ("_tree", "names", "source", "stage")

    def __init__(self, source: str, tree: ast.expr, stage: str | None) -> None:
        self.source = source
        self.stage = stage
        self._tree = tree
        #: The top-level names the expression reads from its context (literals excluded).
        self.names: frozenset[str] = frozenset(
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _LITERALS
        )

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """The expression's value in ``context``.

        Raises:
            ConditionError: a missing name or key, a bad comparison, or a value that is not a boolean.
        """
        value = self._eval(self._tree, context)
        if not isinstance(value, bool):
            raise self._error(f"is {type(value).__name__} {value!r}, not true or false")
        return value

    # evaluation ------------------------------------------------------------------
    def _eval(self, node: ast.expr, ctx: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in _LITERALS:
                return _LITERALS[node.id]
            if node.id not in ctx:
                raise self._error(f"names {node.id!r}, which is not in the context (it has: {_keys(ctx)})")
            return ctx[node.id]
        if isinstance(node, ast.Attribute):
            return self._item(self._eval(node.value, ctx), node.attr, ast.unparse(node))
        if isinstance(node, ast.Subscript):
            return self._item(self._eval(node.value, ctx), self._eval(node.slice, ctx), ast.unparse(node))
        if isinstance(node, ast.List | ast.Tuple):
            return [self._eval(e, ctx) for e in node.elts]
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, ctx)
            if isinstance(node.op, ast.Not):
                return not self._boolean(operand, "not")
            if isinstance(operand, bool) or not isinstance(operand, int | float):
                raise self._error(f"negates {operand!r}, which is not a number")
            return -operand
        if isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            for value_node in node.values:  # short-circuit, as written
                value = self._boolean(self._eval(value_node, ctx), word)
                if value is (word == "or"):
                    return value
            return word == "and"
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, ctx)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self._eval(right_node, ctx)
                try:
                    holds = _COMPARE[type(op)](left, right)
                except TypeError:
                    symbol = _SYMBOL.get(type(op), "not in")
                    raise self._error(f"compares {left!r} {symbol} {right!r}, which cannot be compared") from None
                if not holds:
                    return False
                left = right
            return True
        raise self._error(f"holds {type(node).__name__}, which is not allowed")  # parse() refuses these

    def _item(self, container: Any, key: Any, path: str) -> Any:
        if isinstance(container, Mapping):
            if key not in container:
                raise self._error(f"reads {path}, but {key!r} is not there (it has: {_keys(container)})")
            return container[key]
        if isinstance(container, list | tuple) and isinstance(key, int) and not isinstance(key, bool):
            if not -len(container) <= key < len(container):
                raise self._error(f"reads {path}, but the list has {len(container)} items")
            return container[key]
        raise self._error(f"reads {path} from {type(container).__name__} {container!r}, which has no such part")

    def _boolean(self, value: Any, word: str) -> bool:
        if not isinstance(value, bool):
            raise self._error(f"applies {word!r} to {type(value).__name__} {value!r}, not true or false")
        return value

    def _error(self, what: str) -> ConditionError:
        where = f"stage {self.stage!r}: " if self.stage is not None else ""
        return ConditionError(f"{where}condition {self.source!r} {what}", stage=self.stage)


def parse(source: str, *, stage: str | None = None, what: str = "condition") -> Condition:
    """Parse an expression of the condition language.

    Raises:
        ConditionError: it does not parse, or holds something the language does not allow (named).
    """
    where = f"stage {stage!r}: " if stage is not None else ""
    if not isinstance(source, str) or not source.strip():
        raise ConditionError(f"{where}{what} must be a non-empty expression, got {source!r}", stage=stage)
    if len(source) > _MAX_LENGTH:
        raise ConditionError(f"{where}{what} is longer than {_MAX_LENGTH} characters", stage=stage)
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ConditionError(f"{where}{what} {source!r} does not parse: {exc.msg}", stage=stage) from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ConditionError(
                f"{where}{what} {source!r} holds {_describe(node)}, which conditions do not allow "
                "(literals, names, a.b and a[k], comparisons, in, and/or/not, unary minus)",
                stage=stage,
            )
        if isinstance(node, ast.Constant) and not isinstance(node.value, str | int | float | bool | type(None)):
            raise ConditionError(f"{where}{what} {source!r} holds the literal {node.value!r}", stage=stage)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ConditionError(f"{where}{what} {source!r} reads {node.attr!r}: no name starting with _", stage=stage)
    return Condition(source, tree, stage)


_ALLOWED = (
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.List,
    ast.Tuple,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.Compare,
    *_COMPARE,
)


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return "a call"
    return f"{type(node).__name__} ({ast.unparse(node)})" if isinstance(node, ast.expr) else type(node).__name__


def _keys(mapping: Mapping[Any, Any]) -> str:
    keys = sorted(map(str, mapping))
    shown = ", ".join(keys[:12])
    return (shown + ", …") if len(keys) > 12 else (shown or "nothing")
