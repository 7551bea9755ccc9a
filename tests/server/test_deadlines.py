"""Sluice's own deadlines reach the generation as themselves (issue 9), whichever upstream call
they interrupt: an `error` of type `timeout`, never `connection`, and the upstream is closed.

The SDKs turn any `Exception` raised while they send a request into `APIConnectionError`; an
upstream that accepts the connection and sends no headers (a model still loading) is where a
deadline that is an `Exception` got swallowed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import Event, open_stream, types

pytestmark = pytest.mark.timeout(60)

CALC = 'x [fake tool=calculate args={"expression":"1+1"} tokens=2 '


def timeout_error(events: list[Event], says: str) -> dict[str, object]:
    assert types(events)[-2:] == ["error", "[DONE]"], types(events)
    error = events[-2].json["error"]
    assert error["type"] == "timeout", error
    assert error["retryable"] is True and says in error["message"], error
    return error  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def short_first_token(upstream: FakeUpstream) -> Gunicorn:  # type: ignore[misc]
    from tests.conftest import sluice_env

    with Gunicorn(sluice_env(upstream, SLUICE_FIRST_TOKEN_TIMEOUT="1", SLUICE_IDLE_TIMEOUT="1")) as server:
        yield server


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_first_token_timeout_before_any_header(short_first_token: Gunicorn, fresh: FakeUpstream,
                                               provider: str) -> None:
    events = open_stream(f"{short_first_token.url}/stream",
                         params={"prompt": "x [fake hang=1]", "provider": provider}).rest()
    assert types(events) == ["start", "error", "[DONE]"]
    timeout_error(events, "first token")
    assert fresh.wait_closed(5), "the timed-out upstream call must be closed"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_first_token_timeout_in_a_tool_round(short_first_token: Gunicorn, fresh: FakeUpstream, provider: str) -> None:
    events = open_stream(f"{short_first_token.url}/stream",
                         params={"prompt": CALC + "hang=2]", "provider": provider, "tools": "calculate"}).rest()
    assert types(events) == ["start", "tool_call", "tool_result", "error", "[DONE]"]
    timeout_error(events, "first token")
    assert fresh.request_count == 2 and fresh.wait_closed(5)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_idle_timeout(short_first_token: Gunicorn, fresh: FakeUpstream, provider: str) -> None:
    events = open_stream(f"{short_first_token.url}/stream",
                         params={"prompt": "x [fake tokens=5 stall_after=2]", "provider": provider}).rest()
    assert types(events)[:3] == ["start", "text", "text"]
    timeout_error(events, "silent")
    assert fresh.wait_closed(5)


@pytest.mark.parametrize(("provider", "prompt", "tools"), [
    ("anthropic", "x [fake hang=1]", ""),
    ("openai", "x [fake hang=1]", ""),
    ("anthropic", CALC + "hang=2]", "calculate"),
    ("openai", CALC + "hang=2]", "calculate"),
])
def test_max_duration_while_the_upstream_sends_no_headers(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream,
                                                          provider: str, prompt: str, tools: str) -> None:
    server = start_sluice(SLUICE_MAX_DURATION="1.5", SLUICE_FIRST_TOKEN_TIMEOUT="30")
    events = open_stream(f"{server.url}/stream", params={"prompt": prompt, "provider": provider,
                                                         "tools": tools}).rest()
    timeout_error(events, "too long")
    assert fresh.wait_closed(5)
    assert "Traceback" not in server.log()
