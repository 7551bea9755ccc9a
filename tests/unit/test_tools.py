"""The built-in tools: right answers, and error results (never exceptions) for anything else."""

from __future__ import annotations

from datetime import datetime

import pytest

from app.tools import run_tool


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


def test_get_time() -> None:
    content, is_error = run_tool("get_time", {"timezone": "Europe/Paris"})
    assert not is_error and datetime.fromisoformat(content).utcoffset() is not None
    assert run_tool("get_time", {})[0].endswith("+00:00")
    assert run_tool("get_time", {"timezone": "Mars/Olympus"})[1] is True
    assert run_tool("nope", {})[1] is True
