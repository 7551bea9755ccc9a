"""Reasoning, the usage breakdown and mid-stream recovery under real gunicorn: the demo model
(which reasons when asked) and the wire-level fake through the real SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, reasoning_of, text_of, types

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    with Gunicorn(sluice_env(upstream, SLUICE_DEMO_TOKENS_PER_SECOND="2000")) as server:
        yield server



def test_demo_reasons_before_it_answers_when_asked(server: Gunicorn) -> None:
    stream = open_stream(f"{server.url}/stream", method="POST",
                         json={"prompt": "why is the sky blue", "provider": "demo", "reasoning": "medium"})
    events = stream.rest()
    kinds = types(events)
    assert kinds[0] == "start" and kinds[-2:] == ["done", "[DONE]"]
    first_text = kinds.index("text")
    assert kinds.count("reasoning") > 3 and kinds.index("reasoning") < first_text
    assert "reasoning" not in kinds[first_text:]
    assert "why is the sky blue" in reasoning_of(events)
    assert reasoning_of(events) not in text_of(events)
    usage = events[-2].json["usage"]
    assert usage["reasoning_tokens"] == kinds.count("reasoning") and usage["output_tokens"] > usage["reasoning_tokens"]
    status = requests.get(f"{server.url}/streams/{stream.stream_id}", timeout=5).json()
    assert status["usage"]["reasoning_tokens"] == usage["reasoning_tokens"]


def test_reasoning_is_off_by_default_and_on_from_the_query(server: Gunicorn) -> None:
    events = open_stream(f"{server.url}/stream", params={"prompt": "hello", "provider": "demo"}).rest()
    assert "reasoning" not in types(events) and "reasoning_tokens" not in events[-2].json["usage"]
    events = open_stream(f"{server.url}/stream", params={"prompt": "hello", "provider": "demo",
                                                         "reasoning": "low"}).rest()
    assert "reasoning" in types(events)


@pytest.mark.parametrize("bad", ["extreme", "", 3, True, ["low"]])
def test_a_bad_reasoning_effort_is_400_naming_the_field(server: Gunicorn, fresh: FakeUpstream, bad: object) -> None:
    # In a JSON body an empty string is not a choice (as an empty provider is not): 400.
    resp = requests.post(f"{server.url}/stream", json={"prompt": "x [fake]", "reasoning": bad}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "reasoning"
    assert fresh.request_count == 0


def test_demo_reasons_in_every_tool_round(server: Gunicorn) -> None:
    events = open_stream(f"{server.url}/stream", method="POST",
                         json={"prompt": "what is 6*7", "provider": "demo", "tools": ["calculate"],
                               "reasoning": "low"}).rest()
    kinds = types(events)
    # The demo, like Anthropic's API, refuses a tool round whose thinking block did not come back.
    assert kinds[-2:] == ["done", "[DONE]"], events[-2].data
    call = kinds.index("tool_call")
    assert "reasoning" in kinds[:call] and "reasoning" in kinds[call:]
    assert "42" in text_of(events)


def test_metrics_and_the_log_line_carry_the_breakdown(server: Gunicorn) -> None:
    stream = open_stream(f"{server.url}/stream", params={"prompt": "hello", "provider": "demo", "reasoning": "high"})
    events = stream.rest()
    reasoned = events[-2].json["usage"]["reasoning_tokens"]
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert 'sluice_tokens_total{kind="reasoning_tokens",provider="demo"}' in metrics
    assert 'sluice_tokens_total{kind="output_tokens",provider="demo"}' in metrics
    lines = [json.loads(line) for line in server.log().splitlines() if stream.stream_id in line]
    assert [line["reasoning_tokens"] for line in lines if line.get("event") == "generation_end"] == [reasoned]


# -- recovery through the real SDKs -----------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_drop_is_continued_without_repeating_text(server: Gunicorn, fresh: FakeUpstream, provider: str) -> None:
    # The fake answers every call from its first token, as a model asked to continue may: what
    # the client already has is not sent again (the continuation drops at the same place).
    events = open_stream(f"{server.url}/stream",
                         params={"prompt": "x [fake tokens=6 drop_after=3]", "provider": provider}).rest()
    assert types(events).count("notice") == 1
    assert text_of(events) == "t0 t1 t2 "
    assert fresh.request_count == 2
    sent = fresh.last_request.json["messages"]
    if provider == "anthropic":
        assert sent[-1] == {"role": "assistant", "content": "t0 t1 t2"}  # prefill first
    else:
        assert sent[-2]["role"] == "assistant" and sent[-1]["role"] == "user"
        assert "t0 t1 t2" in sent[-1]["content"]
    assert "cut off" not in text_of(events)
