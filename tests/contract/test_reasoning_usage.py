"""Providers as they are in 2026 (issue 14): `reasoning` events never mixed into `text`, usage with
cache and reasoning breakdowns only where reported, stop reasons, the Responses API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import sluice_env
from tests.contract.conftest import (
    check_well_formed,
    expected,
    kinds,
    of,
    post_stream,
    reasoning,
    terminal,
    text,
)
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def srv(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    with Gunicorn(sluice_env(upstream, SLUICE_MAX_STREAMS_PER_CLIENT="50",
                             SLUICE_MAX_RESPONSES_PER_CLIENT="50")) as server:
        yield server


def run(srv: Gunicorn, **body: object) -> list:  # type: ignore[type-arg]
    events = check_well_formed(post_stream(srv, body, timeout=30).rest())
    return events


# -- reasoning -------------------------------------------------------------------------------------


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_anthropic_thinking_streams_as_reasoning_before_the_answer(
    srv: Gunicorn, fresh: FakeUpstream, effort: str
) -> None:
    events = run(srv, prompt="x [fake think=3 tokens=4]", reasoning=effort, max_tokens=200)
    assert terminal(events)["type"] == "done", [e.data for e in events]
    assert reasoning(events) == "r0 r1 r2 "
    assert text(events) == expected(4)
    order = kinds(events)
    assert order.index("reasoning") < order.index("text")
    sent = fresh.last_request.json
    assert sent.get("thinking", {}).get("type") in ("enabled", "adaptive"), sent.get("thinking")
    budget = sent["thinking"].get("budget_tokens")
    if budget is not None:
        # "max_tokens bounds the answer: with reasoning on, Sluice adds the thinking budget".
        assert sent["max_tokens"] == 200 + budget, (sent["max_tokens"], budget)


def test_reasoning_off_by_default_asks_for_no_thinking(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = run(srv, prompt="x [fake think=3 tokens=2]")
    assert not of(events, "reasoning") and text(events) == expected(2)
    assert fresh.last_request.json.get("thinking", {"type": "disabled"}).get("type") == "disabled"


def test_redacted_thinking_is_not_sent(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = run(srv, prompt="x [fake think=2 redacted=1 tokens=2]", reasoning="low")
    assert terminal(events)["type"] == "done", [e.data for e in events]
    assert reasoning(events) == "r0 r1 "
    assert text(events) == expected(2)


def test_thinking_in_every_tool_round(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = run(
        srv,
        prompt='x [fake think=2 tool=calculate args={"expression":"6*7"} tokens=2]',
        reasoning="medium",
        tools=["calculate"],
    )
    assert terminal(events)["type"] == "done", [e.data for e in events]
    order = kinds(events)
    call = order.index("tool_call")
    assert "reasoning" in order[:call] and "reasoning" in order[call:], order
    assert of(events, "tool_result")[0]["content"].strip() == "42"
    assert "r0" not in text(events)


def test_reasoning_on_get_stream(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(
        open_stream(srv.url + "/stream", params={"prompt": "x [fake think=2 tokens=1]", "reasoning": "low"}).rest()
    )
    assert reasoning(events) == "r0 r1 "


@pytest.mark.parametrize("think_as", ["reasoning_content", "reasoning"])
def test_unasked_reasoning_from_an_openai_compatible_server_is_never_text(
    srv: Gunicorn, fresh: FakeUpstream, think_as: str
) -> None:
    events = run(srv, prompt=f"x [fake think=3 think_as={think_as} tokens=3]", provider="openai")
    assert terminal(events)["type"] == "done", [e.data for e in events]
    assert reasoning(events) == "r0 r1 r2 "
    assert text(events) == expected(3)


def test_openai_reasoning_effort_is_sent(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = run(srv, prompt="x [fake think=2 tokens=2]", provider="openai", reasoning="high")
    assert terminal(events)["type"] == "done"
    assert fresh.last_request.json.get("reasoning_effort") == "high"
    usage = terminal(events)["usage"]
    assert usage["reasoning_tokens"] == 2 and usage["output_tokens"] >= usage["reasoning_tokens"] + 2


# -- usage breakdown -------------------------------------------------------------------------------


def test_anthropic_cache_usage_is_reported_and_counted_in_input(srv: Gunicorn, fresh: FakeUpstream) -> None:
    plain = terminal(run(srv, prompt="a b c [fake tokens=2 cache_read=0 cache_write=0]"))["usage"]
    cached = terminal(run(srv, prompt="a b c [fake tokens=2 cache_read=40 cache_write=7]"))["usage"]
    assert cached["cache_read_input_tokens"] == 40 and cached["cache_creation_input_tokens"] == 7, cached
    assert cached["input_tokens"] == plain["input_tokens"] + 47, (plain, cached)
    for key in ("cache_read_input_tokens", "cache_creation_input_tokens", "reasoning_tokens"):
        assert key not in plain, plain


def test_the_log_line_carries_the_usage_breakdown(srv: Gunicorn, fresh: FakeUpstream) -> None:
    from tests.contract.conftest import log_lines, wait_until

    events = run(srv, prompt="a b [fake tokens=2 cache_read=11 cache_write=4]")
    sid = events[0].json["stream_id"]
    line = wait_until(lambda: [ln for ln in log_lines(srv) if ln.get("stream_id") == sid], timeout=5)[0]
    assert line.get("cache_read_input_tokens") == 11 and line.get("cache_creation_input_tokens") == 4, line
    assert line["input_tokens"] == terminal(events)["usage"]["input_tokens"]


def test_openai_cached_tokens_are_reported(srv: Gunicorn, fresh: FakeUpstream) -> None:
    usage = terminal(run(srv, prompt="a b c d e [fake tokens=2 cached=3]", provider="openai"))["usage"]
    assert usage["cache_read_input_tokens"] == 3, usage
    assert usage["input_tokens"] >= 3


def test_the_status_route_reports_the_same_usage(srv: Gunicorn, fresh: FakeUpstream) -> None:
    import requests

    events = run(srv, prompt="a b [fake tokens=2 cache_read=5]")
    sid = events[0].json["stream_id"]
    st = requests.get(f"{srv.url}/streams/{sid}", timeout=10).json()
    assert st["usage"] == terminal(events)["usage"] and st["stop_reason"] == "end_turn"


# -- the Responses API -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def responses(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    env = sluice_env(
        upstream, SLUICE_PROVIDER="openai", SLUICE_OPENAI_API="responses", SLUICE_MAX_STREAMS_PER_CLIENT="50",
        SLUICE_MAX_RESPONSES_PER_CLIENT="50"
    )
    with Gunicorn(env) as server:
        yield server


def test_responses_api_streams_text(responses: Gunicorn, fresh: FakeUpstream) -> None:
    events = run(responses, prompt="x [fake tokens=5]")
    assert events[0].json["provider"] == "openai"
    assert text(events) == expected(5)
    done = terminal(events)
    assert done["type"] == "done" and done["stop_reason"] == "end_turn" and done["usage"]["output_tokens"] == 5
    assert fresh.last_request.path.endswith("/responses")


def test_responses_api_reasoning_summary_and_tool_loop(responses: Gunicorn, fresh: FakeUpstream) -> None:
    events = run(
        responses,
        prompt='x [fake think=2 tool=calculate args={"expression":"3*3"} tokens=1]',
        tools=["calculate"],
        reasoning="low",
    )
    assert terminal(events)["type"] == "done", [e.data for e in events]
    assert "r0" in reasoning(events) and "r0" not in text(events)
    assert of(events, "tool_result")[0]["content"].strip() == "9"
    asked = fresh.requests[0].json.get("reasoning") or {}
    assert asked.get("effort") == "low" and asked.get("summary"), asked  # summaries requested


@pytest.mark.parametrize(
    ("directive", "body", "reason"),
    [
        ("tokens=20", {"max_tokens": 4}, "max_tokens"),
        ("stop=content_filter", {}, "content_filter"),
        ("stop=refusal say=No.", {}, "refusal"),
    ],
)
def test_responses_api_stop_reasons(
    responses: Gunicorn, fresh: FakeUpstream, directive: str, body: dict, reason: str
) -> None:
    events = run(responses, prompt=f"x [fake {directive}]", **body)
    assert terminal(events)["stop_reason"] == reason, [e.data for e in events]


def test_responses_api_failure_is_an_error_event(responses: Gunicorn, fresh: FakeUpstream) -> None:
    events = run(responses, prompt="x [fake tokens=10 error_after=2 error_as=failed]")
    assert terminal(events)["type"] == "error"
    assert text(events).startswith(expected(2))


def test_responses_api_cancel_closes_the_upstream(responses: Gunicorn, fresh: FakeUpstream) -> None:
    import requests

    stream = post_stream(responses, {"prompt": "x [fake tokens=50 stall_after=2]"})
    stream.until("text")
    assert fresh.wait_open(1, 5)
    assert requests.post(responses.url + "/cancel", json={"stream_id": stream.stream_id}, timeout=10).status_code == 200
    assert terminal(stream.rest())["type"] == "cancelled"
    assert fresh.wait_closed(3)
