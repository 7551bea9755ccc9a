"""Properties of the `calculate` tool (hypothesis): whatever the model sends, a result or an
error result comes back (never an exception, which would end the generation), small and fast."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.toolbox import BUILTIN
from app.tools import MAX_DIGITS

run_tool = BUILTIN.run

pytestmark = pytest.mark.timeout(120)

NUMBERS = st.integers(min_value=-(10**12), max_value=10**12).map(str) | st.floats(allow_nan=False).map(repr) | \
    st.sampled_from(["999999", "1e308", "0", "0.0", "9" * 60, "1_000", "0x10", "1j", "True"])
OPERATORS = st.sampled_from(["+", "-", "*", "/", "**", "%", "//", "<<", "&"])
EXPRESSIONS = st.recursive(
    NUMBERS,
    lambda inner: st.builds(lambda a, op, b: f"({a} {op} {b})", inner, OPERATORS, inner)
    | st.builds(lambda op, a: f"{op}{a}", st.sampled_from(["-", "+", "~"]), inner),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(EXPRESSIONS | st.text(max_size=220))
def test_calculate_always_answers_small_and_fast(expression: str) -> None:
    started = time.monotonic()
    content, is_error = run_tool("calculate", {"expression": expression})
    assert time.monotonic() - started < 2.0, expression  # loose: catches a runaway power, not a target
    assert isinstance(content, str) and content
    if not is_error:
        assert len(content) <= MAX_DIGITS + 30, expression  # sign, decimals, exponent
