"""SLUICE_OPENAI_API=responses end to end: gunicorn -k gevent, the real SDK, the fake's Responses wire."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, text_of, types

pytestmark = pytest.mark.timeout(60)


def test_tool_round_over_the_responses_api(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_PROVIDER="openai", SLUICE_OPENAI_API="responses")
    prompt = 'what is 6*7 [fake tool=calculate args={"expression":"6*7"} tokens=2 think=2 cache_read=1]'
    events = open_stream(f"{server.url}/stream", params={"prompt": prompt, "tools": "calculate"}).rest()
    kinds = [k for k in types(events) if k != "reasoning"]
    assert kinds == ["start", "tool_call", "tool_result", "text", "text", "text", "done", "[DONE]"]
    assert events[0].json["provider"] == "openai"
    call = next(e.json for e in events if e.type == "tool_call")
    assert call["name"] == "calculate" and call["arguments"] == {"expression": "6*7"}
    # Reasoning is never answer text.
    assert text_of(events) == "result: 42 t0 t1 "
    done = events[-2].json
    assert done["stop_reason"] == "end_turn" and done["usage"]["output_tokens"] > 0

    assert [r.path for r in fresh.requests] == ["/v1/responses", "/v1/responses"]
    second = fresh.requests[1].json["input"]
    output = next(i for i in second if i.get("type") == "function_call_output")
    assert output == {"type": "function_call_output", "call_id": call["id"], "output": "42"}
    assert any(i.get("type") == "function_call" and i["call_id"] == call["id"] for i in second)


def test_cancel_timeout_and_resume_over_the_responses_api(
    start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream
) -> None:
    server = start_sluice(SLUICE_PROVIDER="openai", SLUICE_OPENAI_API="responses", SLUICE_IDLE_TIMEOUT="1")
    # Cancel while the upstream is silent: the upstream connection is closed.
    stream = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=9 stall_after=2]"})
    stream.until(lambda e: e.type == "text" and e.json["content"] == "t1 ")
    resp = requests.post(f"{server.url}/cancel", json={"stream_id": stream.stream_id}, timeout=5)
    assert resp.json()["status"] == "cancelled"
    assert types(stream.rest())[-2:] == ["cancelled", "[DONE]"]
    assert fresh.wait_closed(2)

    # A silent upstream past SLUICE_IDLE_TIMEOUT: a timeout error, and the upstream is closed.
    events = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=9 stall_after=3]"}).rest()
    assert types(events)[-2:] == ["error", "[DONE]"] and events[-2].json["error"]["type"] == "timeout"
    assert fresh.wait_closed(2)

    # A reconnect with Last-Event-ID resumes the same generation: no second upstream call.
    fresh.reset()
    stream = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=20 pace=0.05]"})
    stream.until(lambda e: e.type == "text" and e.json["content"] == "t4 ")
    last = stream.events[-1].id
    stream.close()
    resumed = open_stream(f"{server.url}/stream", params={"prompt": "x"}, headers={"Last-Event-ID": last}).rest()
    assert text_of(stream.events + resumed) == "".join(f"t{i} " for i in range(20))
    assert fresh.request_count == 1


def test_the_default_is_chat_completions(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_PROVIDER="openai")
    events = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=2]"}).rest()
    assert text_of(events) == "t0 t1 " and fresh.last_request.path == "/v1/chat/completions"


def test_a_bad_value_stops_the_server_with_a_sentence() -> None:
    from app.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="SLUICE_OPENAI_API must be chat or responses"):
        Settings.from_env({"SLUICE_OPENAI_API": "completions"})
    assert Settings.from_env({"SLUICE_OPENAI_API": "Responses"}).openai_api == "responses"
    assert Settings.from_env({}).openai_api == "chat" and not Settings.from_env({}).openai_think_tags
    assert Settings.from_env({"SLUICE_OPENAI_THINK_TAGS": "1"}).openai_think_tags


def test_the_pool_builds_the_configured_openai_api() -> None:
    from app.config import Settings
    from app.providers import ProviderPool
    from app.providers.openai import OpenAIProvider
    from app.providers.openai_responses import OpenAIResponsesProvider

    chat = ProviderPool(Settings.from_env({"SLUICE_OPENAI_THINK_TAGS": "1"}))("openai")
    assert isinstance(chat, OpenAIProvider) and chat._think_tags
    responses = ProviderPool(Settings.from_env({"SLUICE_OPENAI_API": "responses"}))("openai")
    assert isinstance(responses, OpenAIResponsesProvider) and responses.name == "openai"
