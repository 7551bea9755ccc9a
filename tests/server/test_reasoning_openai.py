"""OpenAI reasoning end to end: Chat Completions (`reasoning_content` / `reasoning` from
compatible servers) and the Responses API, through real gunicorn, the real SDK and the fake."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, reasoning_of, text_of, types

pytestmark = pytest.mark.timeout(60)



@pytest.fixture(scope="module")
def responses(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    """Sluice speaking the Responses API to OpenAI."""
    with Gunicorn(sluice_env(upstream, SLUICE_PROVIDER="openai", SLUICE_OPENAI_API="responses")) as server:
        yield server


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_chat_reasoning_fields_become_reasoning_events(sluice: Gunicorn, fresh: FakeUpstream, field: str) -> None:
    # A compatible server that thinks unasked (reasoning is off): still never text.
    events = open_stream(f"{sluice.url}/stream", params={
        "prompt": f"x [fake tokens=3 think=4 think_as={field} cached=2]", "provider": "openai"}).rest()
    kinds = types(events)
    assert kinds[-2:] == ["done", "[DONE]"]
    assert reasoning_of(events) == "r0 r1 r2 r3 " and text_of(events) == "t0 t1 t2 "
    assert kinds.index("reasoning") < kinds.index("text")
    usage = events[-2].json["usage"]
    assert usage["reasoning_tokens"] == 4 and usage["cache_read_input_tokens"] == 2
    assert "cache_creation_input_tokens" not in usage


def test_chat_reasoning_effort_is_asked_for(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    open_stream(f"{sluice.url}/stream", method="POST",
                json={"prompt": "x [fake tokens=2 think=1]", "provider": "openai", "reasoning": "high"}).rest()
    assert fresh.last_request.json["reasoning_effort"] == "high"


def test_chat_reasoning_in_every_tool_round(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    prompt = 'what is 6*7 [fake tool=calculate args={"expression":"6*7"} tokens=2 think=2]'
    events = open_stream(f"{sluice.url}/stream", method="POST",
                         json={"prompt": prompt, "provider": "openai", "tools": ["calculate"],
                               "reasoning": "low"}).rest()
    kinds = types(events)
    assert kinds[-2:] == ["done", "[DONE]"]
    call = kinds.index("tool_call")
    assert kinds[:call].count("reasoning") == 2 and kinds[call:].count("reasoning") == 2
    assert text_of(events) == "result: 42 t0 t1 "
    assert events[-2].json["usage"]["reasoning_tokens"] == 4


def test_chat_refusal_is_text_with_stop_reason_refusal(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    events = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake tokens=2 stop=refusal]",
                                                         "provider": "openai"}).rest()
    assert text_of(events) == "t0 t1 " and events[-2].json["stop_reason"] == "refusal"


def test_responses_reasoning_summary_and_items_back_in_the_tool_round(responses: Gunicorn,
                                                                       fresh: FakeUpstream) -> None:
    prompt = 'what is 6*7 [fake tool=calculate args={"expression":"6*7"} tokens=2 think=3]'
    events = open_stream(f"{responses.url}/stream", method="POST",
                         json={"prompt": prompt, "tools": ["calculate"], "reasoning": "medium"}).rest()
    kinds = types(events)
    assert kinds[-2:] == ["done", "[DONE]"], events[-2].data
    call = kinds.index("tool_call")
    assert "reasoning" in kinds[:call] and "reasoning" in kinds[call:]
    assert reasoning_of(events) == "r0 r1 r2 " * 2
    assert text_of(events) == "result: 42 t0 t1 "
    first, second = fresh.requests[0].json, fresh.requests[1].json
    assert first["reasoning"] == {"effort": "medium", "summary": "auto"}
    # The reasoning item (encrypted content included) goes back exactly as it came.
    sent_back = [item for item in second["input"] if item.get("type") == "reasoning"]
    assert len(sent_back) == 1 and sent_back[0]["encrypted_content"].startswith("gAAAA")
    assert sent_back[0]["encrypted_content"] not in json.dumps([e.json for e in events[:-1]])
    assert events[-2].json["usage"]["reasoning_tokens"] == 6


def test_responses_drop_is_continued_with_a_user_turn(responses: Gunicorn, fresh: FakeUpstream) -> None:
    events = open_stream(f"{responses.url}/stream", params={"prompt": "x [fake tokens=6 drop_after=3]"}).rest()
    assert types(events).count("notice") == 1 and text_of(events) == "t0 t1 t2 "
    last = fresh.last_request.json["input"]
    assert last[-2] == {"role": "assistant", "content": "t0 t1 t2"} and last[-1]["role"] == "user"
