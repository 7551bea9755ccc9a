"""Built-in server-side tools a request may name in `tools`. They need no network.

`calculate` evaluates arithmetic by walking the AST of the expression: only numbers and
`+ - * / ** % ( )` are accepted, so no name, call or attribute can ever be reached.
"""

from __future__ import annotations

import ast
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
MAX_EXPRESSION = 200
MAX_EXPONENT = 1000


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        # A huge power would hold the worker's CPU (and every other stream on it) for minutes.
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or abs(left) > 10**6):
            raise ToolFailed("exponent too large")
        return _BINARY[type(node.op)](left, right)  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))  # type: ignore[no-any-return]
    raise ToolFailed("only numbers and + - * / ** % ( ) are allowed")


def calculate(args: dict[str, Any]) -> str:
    """Evaluate an arithmetic expression."""
    expr = args.get("expression")
    if not isinstance(expr, str) or not expr.strip():
        raise ToolFailed("expression must be a non-empty string such as '6 * 7'")
    if len(expr) > MAX_EXPRESSION:
        raise ToolFailed(f"expression must be at most {MAX_EXPRESSION} characters")
    try:
        value = _eval(ast.parse(expr.strip(), mode="eval").body)
    except SyntaxError:
        raise ToolFailed(f"cannot parse {expr!r}") from None
    except ZeroDivisionError:
        raise ToolFailed("division by zero") from None
    except OverflowError:
        raise ToolFailed("the result is too large") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    return str(value)


TOOLS: dict[str, Tool] = {
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


def run_tool(name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
    """Run a built-in tool: (content, is_error). Never raises for a tool's own failure."""
    tool = TOOLS.get(name)
    if tool is None:
        return f"unknown tool {name!r}", True
    try:
        return tool.run(arguments), False
    except ToolFailed as exc:
        return str(exc), True
