"""The multi grader's ``calculate_output``: arithmetic over sub-grader scores, parsed with
``ast`` and evaluated node by node. Only numbers, the sub-graders' names, + - * / ** and
unary minus, comparisons, and min/max/abs/sqrt/log/exp/floor/ceil/round are allowed; no
attribute, subscript, call of anything else, or ``eval``.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any


class FormulaError(ValueError):
    pass


_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type, Callable[[float, float], bool]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "floor": math.floor,
    "ceil": math.ceil,
    "round": round,
}
MAX_LENGTH = 1000


def parse(formula: str, names: set[str]) -> ast.Expression:
    """Parse and check ``formula`` against the allowed grammar and the known ``names``."""
    if not isinstance(formula, str) or not formula.strip() or len(formula) > MAX_LENGTH:
        raise FormulaError("calculate_output must be a non-empty formula of at most 1000 chars")
    try:
        tree = ast.parse(formula.strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"calculate_output is not a valid formula: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names and node.id not in _FUNCTIONS:
            raise FormulaError(
                f"calculate_output uses '{node.id}', which is not a sub-grader "
                f"(known: {', '.join(sorted(names))})"
            )
        allowed = (
            ast.Expression,
            ast.BinOp,
            ast.UnaryOp,
            ast.USub,
            ast.UAdd,
            ast.Constant,
            ast.Name,
            ast.Load,
            ast.Call,
            ast.Compare,
            *_BINARY,
            *_COMPARE,
        )
        if not isinstance(node, allowed):
            raise FormulaError(
                f"calculate_output may not use {type(node).__name__}: only arithmetic over "
                "sub-grader names and min/max/abs/sqrt/log/exp/floor/ceil/round"
            )
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
            raise FormulaError("calculate_output may only contain numbers and names")
        if isinstance(node, ast.Call) and (
            not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords
        ):
            raise FormulaError(
                "calculate_output may call min/max/abs/sqrt/log/exp/floor/ceil/round"
            )
    return tree


def evaluate(formula: str, scores: Mapping[str, float]) -> float:
    tree = parse(formula, set(scores))

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            assert isinstance(node.value, int | float)
            return float(node.value)
        if isinstance(node, ast.Name):
            return float(scores[node.id])
        if isinstance(node, ast.UnaryOp):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise FormulaError("calculate_output: exponent too large")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            left = walk(node.left)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = walk(comparator)
                if not _COMPARE[type(op)](left, right):
                    return 0.0
                left = right
            return 1.0
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return float(_FUNCTIONS[node.func.id](*(walk(a) for a in node.args)))
        raise FormulaError(f"unsupported expression {type(node).__name__}")

    try:
        return float(walk(tree))
    except (ZeroDivisionError, ValueError, OverflowError, TypeError) as exc:
        if isinstance(exc, FormulaError):
            raise
        raise FormulaError(f"calculate_output could not be evaluated: {exc}") from None
