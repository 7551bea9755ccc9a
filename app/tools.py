"""Built-in server-side tools a request may name in `tools`. They need no network.

`calculate` evaluates arithmetic by walking the AST of the expression: only numbers and
`+ - * / ** % ( )` are accepted, so no name, call or attribute can ever be reached.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.providers.base import ToolSpec


class ToolFailed(Exception):
    """A tool could not produce a result; its message goes back to the model as an error."""


@dataclass(frozen=True)
class Tool:
    """A tool's description for the model and the function that runs it."""

    spec: ToolSpec
    run: Callable[[dict[str, Any]], str]


def get_time(args: dict[str, Any]) -> str:
    """The current time in an IANA timezone (default UTC), ISO 8601."""
    name = args.get("timezone") or "UTC"
    if not isinstance(name, str):
        raise ToolFailed("timezone must be a string such as 'Europe/Paris'")
    try:
        tz = UTC if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolFailed(f"unknown timezone {name!r}") from None
    return datetime.now(tz).isoformat(timespec="seconds")


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}

# Bounds on the work one call may do (docs/api.md). A tool runs in the generation's greenlet:
# a huge power would hold the worker's CPU, and every other stream on it, for minutes.
MAX_EXPRESSION = 200  # characters
MAX_DEPTH = 32  # nesting of operators (parentheses alone add none)
MAX_EXPONENT = 1000  # |exponent| of **
MAX_DIGITS = 1000  # digits of any whole number on the way (Python cannot print more than 4300)
_LIMIT = 10**MAX_DIGITS
_MAX_BITS = _LIMIT.bit_length()


def _checked(value: float | int) -> float | int:
    if isinstance(value, complex):  # (-8) ** 0.5
        raise ToolFailed("the result is not a real number")
    if isinstance(value, int) and abs(value) >= _LIMIT:
        raise ToolFailed(f"the result has more than {MAX_DIGITS} digits")
    if isinstance(value, float) and not math.isfinite(value):  # 1e308 * 10 is inf, not an error
        raise ToolFailed("the result is too large")
    return value


def _power(left: float | int, right: float | int) -> float | int:
    if abs(right) > MAX_EXPONENT:
        raise ToolFailed(f"the exponent must be at most {MAX_EXPONENT}")
    # A lower bound on the result's size, known before the work is done.
    if isinstance(left, int) and isinstance(right, int) and right * (abs(left).bit_length() - 1) > _MAX_BITS:
        raise ToolFailed(f"the result would have more than {MAX_DIGITS} digits")
    return left**right


def _eval(node: ast.AST, depth: int = 0) -> float | int:
    if depth > MAX_DEPTH:
        raise ToolFailed(f"the expression is nested more than {MAX_DEPTH} deep")
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return _checked(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_eval(node.operand, depth + 1)))
    raise ToolFailed("only numbers and + - * / ** % ( ) are allowed")


def calculate(args: dict[str, Any]) -> str:
    """Evaluate an arithmetic expression (within the bounds above)."""
    expr = args.get("expression")
    if not isinstance(expr, str) or not expr.strip():
        raise ToolFailed("expression must be a non-empty string such as '6 * 7'")
    if len(expr) > MAX_EXPRESSION:
        raise ToolFailed(f"expression must be at most {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolFailed(f"cannot parse {expr!r}") from None
    try:
        value = _eval(tree.body)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        return str(value)
    except ZeroDivisionError:
        raise ToolFailed("division by zero") from None
    except OverflowError:
        raise ToolFailed("the result is too large") from None


# Built-in tools only: every tool a request may name (these and SLUICE_TOOLS) is
# `Settings.tools` (app.toolbox.Toolbox).
BUILTIN_TOOLS: dict[str, Tool] = {
    "get_time": Tool(
        ToolSpec(
            "get_time",
            "Get the current date and time in a timezone.",
            {
                "type": "object",
                "properties": {"timezone": {"type": "string", "description": "IANA name, e.g. Europe/Paris"}},
            },
        ),
        get_time,
    ),
    "calculate": Tool(
        ToolSpec(
            "calculate",
            "Evaluate an arithmetic expression with + - * / ** % and parentheses.",
            {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "e.g. (2 + 3) * 7"}},
                "required": ["expression"],
            },
        ),
        calculate,
    ),
}

