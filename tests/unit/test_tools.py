"""The built-in tools: right answers, and error results (never exceptions) for anything else."""

from __future__ import annotations

from datetime import datetime

import pytest

from app.toolbox import BUILTIN
from app.tools import MAX_DEPTH, MAX_DIGITS, MAX_EXPRESSION

run_tool = BUILTIN.run


@pytest.mark.parametrize(("expression", "value"), [
    ("6 * 7", "42"), ("(2 + 3) * 7", "35"), ("7 / 2", "3.5"), ("2 ** 10", "1024"), ("-3 + 10 % 4", "-1"),
    ("0.1 + 0.2", "0.30000000000000004"), ("10 / 4 * 2", "5"),
])
def test_calculate(expression: str, value: str) -> None:
    assert run_tool("calculate", {"expression": expression}) == (value, False)


@pytest.mark.parametrize("expression", [
    "__import__('os').system('true')", "open('/etc/passwd')", "x + 1", "2 ** 100000", "1 / 0", "", "6 *",
    "[1, 2]", "True + 1", "1" * 300,
])
def test_calculate_refuses_anything_else(expression: str) -> None:
    content, is_error = run_tool("calculate", {"expression": expression})
    assert is_error and content


@pytest.mark.parametrize(("expression", "says"), [
    # Python refuses to turn an int of more than 4300 digits into text: that ValueError used to
    # escape the tool and end the whole generation with `internal` (issue 9).
    ("999999 ** 999", "digits"),
    ("9**999 * 9**999 * 9**999 * 9**999 * 9**999", "digits"),
    ("(10 ** 999) ** 999", "digits"),
    ("2 ** 1001", "exponent"),
    ("2 ** 4000", "exponent"),
    ("10 ** 1001 / 3", "exponent"),
    ("2.5 ** 1000", "too large"),
    ("1e308 * 10", "too large"),
    ("1e308 * 10 - 1e308 * 10", "too large"),
    ("(-8) ** 0.5", "real"),
    ("1j * 2", "only numbers"),
    ("\x00", "parse"),
    ("-" * 100 + "1", "nested"),
    ("(1+" * 40 + "1" + ")" * 40, "nested"),
    ("0 ** -1", "division by zero"),
])
def test_calculate_bounds_are_error_results(expression: str, says: str) -> None:
    content, is_error = run_tool("calculate", {"expression": expression})
    assert is_error, content
    assert says in content


def test_calculate_limits_hold_at_the_edge() -> None:
    assert run_tool("calculate", {"expression": "9 ** 999"})[1] is False  # 954 digits
    assert len(run_tool("calculate", {"expression": "10 ** 999"})[0]) == MAX_DIGITS
    assert run_tool("calculate", {"expression": "1 + " * 10 + "1"}) == ("11", False)
    nested = "(1+" * MAX_DEPTH + "1" + ")" * MAX_DEPTH
    assert run_tool("calculate", {"expression": nested}) == (str(MAX_DEPTH + 1), False)
    assert run_tool("calculate", {"expression": "1" * MAX_EXPRESSION})[1] is False


def test_any_tool_failure_is_an_error_result(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import tools

    def broken(args: dict[str, object]) -> str:
        raise RuntimeError("bug in a tool")

    monkeypatch.setitem(BUILTIN.tools, "get_time", tools.Tool(tools.BUILTIN_TOOLS["get_time"].spec, broken))  # type: ignore[index]
    content, is_error = run_tool("get_time", {})
    assert is_error and "bug in a tool" not in content


def test_get_time() -> None:
    content, is_error = run_tool("get_time", {"timezone": "Europe/Paris"})
    assert not is_error and datetime.fromisoformat(content).utcoffset() is not None
    assert run_tool("get_time", {})[0].endswith("+00:00")
    assert run_tool("get_time", {"timezone": "Mars/Olympus"})[1] is True
    assert run_tool("nope", {})[1] is True
