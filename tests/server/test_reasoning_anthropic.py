"""Anthropic end to end: extended thinking in tool rounds, cache usage, refusal, and recovery
from a drop when the model refuses prefill -- real gunicorn, the real SDK, the wire-level fake."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, reasoning_of, text_of, types

pytestmark = pytest.mark.timeout(60)



@pytest.fixture
def server(start_sluice) -> Gunicorn:  # type: ignore[no-untyped-def]
    """A fresh server per test: what a worker learnt about prefill must not leak between tests."""
    return start_sluice()


@pytest.fixture(scope="module")
def shared(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    with Gunicorn(sluice_env(upstream)) as server:
        yield server


def test_thinking_streams_in_every_tool_round_and_goes_back_signed(shared: Gunicorn, fresh: FakeUpstream) -> None:
    prompt = 'what is 6*7 [fake tool=calculate args={"expression":"6*7"} tokens=2 think=2 redacted=1]'
    events = open_stream(f"{shared.url}/stream", method="POST",
                         json={"prompt": prompt, "tools": ["calculate"], "reasoning": "low"}).rest()
    kinds = types(events)
    # The fake, like the API, answers 400 to a tool round whose thinking did not come back intact.
    assert kinds[-2:] == ["done", "[DONE]"], events[-2].data
    call = kinds.index("tool_call")
    assert reasoning_of(events) == "r0 r1 " * 2
    assert "reasoning" in kinds[:call] and "reasoning" in kinds[call:]
    assert text_of(events) == "result: 42 t0 t1 "
    first, second = fresh.requests[0].json, fresh.requests[1].json
    assert first["thinking"]["type"] == "enabled" and first["max_tokens"] > first["thinking"]["budget_tokens"]
    turn = second["messages"][1]
    assert turn["role"] == "assistant"
    assert [b["type"] for b in turn["content"]] == ["thinking", "redacted_thinking", "tool_use"]
    assert turn["content"][0]["thinking"] == "r0 r1 " and turn["content"][0]["signature"]
    # Redacted thinking is never sent to the client.
    assert all(turn["content"][1]["data"] not in e.data for e in events)
    assert events[-2].json["usage"]["reasoning_tokens"] == 4


def test_cache_tokens_are_part_of_input_and_reported_apart(shared: Gunicorn, fresh: FakeUpstream) -> None:
    prompt = "x [fake tokens=2 cache_read=50 cache_write=7]"
    events = open_stream(f"{shared.url}/stream", params={"prompt": prompt}).rest()
    usage = events[-2].json["usage"]
    assert usage["cache_read_input_tokens"] == 50 and usage["cache_creation_input_tokens"] == 7
    assert usage["input_tokens"] >= 57 + 2  # the prompt's own words on top
    assert "reasoning_tokens" not in usage


def test_refusal_is_its_own_stop_reason(shared: Gunicorn, fresh: FakeUpstream) -> None:
    events = open_stream(f"{shared.url}/stream", params={"prompt": "x [fake tokens=2 stop=refusal]"}).rest()
    assert events[-2].json["stop_reason"] == "refusal"


def test_a_drop_on_a_model_that_refuses_prefill_is_continued_by_a_user_turn(
    server: Gunicorn, fresh: FakeUpstream
) -> None:
    # The cut answer carries a directive of its own: the continuation request quotes it in its
    # user turn, so the fake answers that one (two tokens, no drop) -- the rest of the answer.
    said = "Intro [fake tokens=2] and"
    prompt = f"x [fake say={quote(said)}%20more%20text drop_after=5 prefill=reject]"
    events = open_stream(f"{server.url}/stream", params={"prompt": prompt}).rest()
    kinds = types(events)
    assert kinds.count("notice") == 1 and kinds[-2:] == ["done", "[DONE]"], events[-2].data
    assert text_of(events) == said + "t0 t1 "
    assert "cut off" not in text_of(events)
    sent = [r.json["messages"] for r in fresh.requests]
    assert len(sent) == 3
    assert sent[1][-1] == {"role": "assistant", "content": said}  # prefill first: the 400
    assert sent[2][-2] == {"role": "assistant", "content": said} and sent[2][-1]["role"] == "user"
    # The worker remembers: the next recovery on this model asks with a user turn at once.
    fresh.reset()
    events = open_stream(f"{server.url}/stream", params={"prompt": prompt}).rest()
    assert types(events)[-2:] == ["done", "[DONE]"] and fresh.request_count == 2
    assert fresh.requests[1].json["messages"][-1]["role"] == "user"


def test_with_thinking_on_a_drop_is_never_continued_by_prefill(server: Gunicorn, fresh: FakeUpstream) -> None:
    said = "Intro [fake tokens=2] and"
    prompt = f"x [fake say={quote(said)}%20more drop_after=5]"
    events = open_stream(f"{server.url}/stream", method="POST", json={"prompt": prompt, "reasoning": "low"}).rest()
    assert types(events)[-2:] == ["done", "[DONE]"], events[-2].data
    assert text_of(events) == said + "t0 t1 "
    assert fresh.request_count == 2 and fresh.last_request.json["messages"][-1]["role"] == "user"
