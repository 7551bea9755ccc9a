"""Streaming under a real `gunicorn -k gevent`, through the real SDKs, against the fake upstream."""

from __future__ import annotations

import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, text_of, types
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(60)


def expected_text(n: int) -> str:
    return "".join(f"t{i} " for i in range(n))


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_get_stream_relays_text_usage_and_stop_reason(sluice: Gunicorn, fresh: FakeUpstream, provider: str) -> None:
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "say it [fake tokens=8]", "provider": provider})
    assert stream.response.status_code == 200
    headers = stream.response.headers
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Accel-Buffering"] == "no"
    assert "Content-Length" not in headers and "Content-Encoding" not in headers
    events = stream.rest()
    assert types(events) == ["start"] + ["text"] * 8 + ["done", "[DONE]"]
    assert stream.parser.retry == 3000
    start, done = events[0].json, events[-2].json
    assert start["provider"] == provider and start["cancel_url"] == "/cancel"
    assert len(start["stream_id"]) >= 22
    # ids are <stream_id>:<seq>, seq from 1 with no gaps
    assert [e.id for e in events] == [f"{start['stream_id']}:{i}" for i in range(1, len(events) + 1)]
    assert text_of(events) == expected_text(8)
    assert done["stop_reason"] == "end_turn"
    assert done["usage"] == {"input_tokens": 4, "output_tokens": 8}  # words, as the fake counts
    assert done["metrics"]["ttft_ms"] >= 0 and done["metrics"]["duration_ms"] >= done["metrics"]["ttft_ms"]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_post_stream_multi_turn_reaches_upstream(sluice: Gunicorn, fresh: FakeUpstream, provider: str) -> None:
    body = {
        "provider": provider,
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second [fake tokens=3]"},
        ],
        "system": "be brief",
        "max_tokens": 100,
        "temperature": 0.5,
    }
    events = open_stream(f"{sluice.url}/stream", method="POST", json=body).rest()
    assert text_of(events) == expected_text(3)
    sent = fresh.last_request.json
    texts = json.dumps(sent["messages"])
    assert "first question" in texts and "first answer" in texts and "second" in texts
    assert sent["temperature"] == 0.5
    assert "be brief" in json.dumps(sent)


def test_events_arrive_spread_over_time(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    t0 = time.monotonic()
    stream = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake tokens=10 pace=0.1]"})
    events = stream.rest()
    texts = [e for e in events if e.type == "text"]
    assert len(texts) == 10
    assert events[0].at - t0 < 0.5, "the start event must arrive at once"
    gaps = [b.at - a.at for a, b in itertools.pairwise(texts)]
    # Paced 100 ms apart upstream: a buffered stream would deliver them together at the end.
    assert sum(1 for g in gaps if g > 0.05) >= 7, gaps
    assert texts[-1].at - texts[0].at > 0.6


def test_fifty_concurrent_streams_on_one_worker(start_sluice, fresh: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    server = start_sluice(SLUICE_MAX_STREAMS_PER_CLIENT="100", SLUICE_MAX_RESPONSES_PER_CLIENT="100")

    def one(i: int) -> tuple[list[str], str]:
        events = open_stream(f"{server.url}/stream", params={"prompt": f"n{i} [fake tokens=20 pace=0.02]"},
                             timeout=30).rest()
        return types(events), text_of(events)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    for kinds, text in results:
        assert kinds[-2:] == ["done", "[DONE]"]
        assert text == expected_text(20)
    assert fresh.request_count == 50


BAD_INPUTS = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "messages"),
    ({}, "prompt"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 999999}, "max_tokens"),
    ({"prompt": "x", "max_tokens": "ten"}, "max_tokens"),
    ({"prompt": "x", "temperature": 3}, "temperature"),
    ({"prompt": "x", "provider": "nope"}, "provider"),
    ({"prompt": "x", "tools": ["rm_rf"]}, "tools"),
    ({"prompt": "x", "response_format": "xml"}, "response_format"),
    ({"prompt": "x", "chunking": "paragraph"}, "chunking"),
    ({"prompt": "x", "stream_id": "short"}, "stream_id"),
    ({"prompt": "x", "stream_id": "has spaces in it, oh no"}, "stream_id"),
    ({"prompt": "x", "surprise": 1}, "surprise"),
    ({"messages": [{"role": "system", "content": "y"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages"),
    ({"messages": []}, "messages"),
]


@pytest.mark.parametrize(("body", "field"), BAD_INPUTS)
def test_bad_input_is_400_and_makes_no_upstream_call(
    sluice: Gunicorn, fresh: FakeUpstream, body: dict[str, object], field: str
) -> None:
    for method in ("POST /stream", "POST /streams"):
        verb, path = method.split()
        resp = requests.request(verb, sluice.url + path, json=body, timeout=5)
        assert resp.status_code == 400, (method, body, resp.text)
        assert resp.headers["Content-Type"].startswith("application/json")
        error = resp.json()["error"]
        assert error["type"] == "invalid_request" and error["field"] == field and error["message"]
    assert fresh.request_count == 0


def test_get_with_bad_query_is_400(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    for params in ({"prompt": "x", "max_tokens": "-1"}, {}, {"prompt": "x", "bogus": "1"},
                   {"prompt": "x", "temperature": "warm"}):
        resp = requests.get(f"{sluice.url}/stream", params=params, timeout=5)
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request"
    resp = requests.get(f"{sluice.url}/stream?prompt=a&prompt=b", timeout=5)
    assert resp.status_code == 400
    assert fresh.request_count == 0


def test_model_outside_allow_list(start_sluice, fresh: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    server = start_sluice(SLUICE_ALLOWED_MODELS="claude-haiku-4-5")
    resp = requests.get(f"{server.url}/stream", params={"prompt": "x", "model": "claude-opus-9"}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "model"
    ok = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=2]", "model": "claude-haiku-4-5"})
    assert types(ok.rest())[-2:] == ["done", "[DONE]"]
    assert fresh.request_count == 1


def test_body_errors_415_413_405_404(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    resp = requests.post(f"{sluice.url}/stream", data="prompt=x", timeout=5,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 415 and resp.json()["error"]["type"] == "invalid_request"
    resp = requests.post(f"{sluice.url}/stream", data=b"{not json", headers={"Content-Type": "application/json"},
                         timeout=5)
    assert resp.status_code == 400
    big = json.dumps({"prompt": "x" * (2 * 1024 * 1024)})
    resp = requests.post(f"{sluice.url}/stream", data=big, headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 413 and resp.json()["error"]["message"]
    assert requests.delete(f"{sluice.url}/stream", timeout=5).status_code == 405
    assert requests.get(f"{sluice.url}/streams/" + "A" * 22, timeout=5).status_code == 404
    assert fresh.request_count == 0


def test_url_too_long_is_414(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    resp = requests.get(f"{sluice.url}/stream", params={"prompt": "x" * 10000}, timeout=5)
    assert resp.status_code == 414
    assert fresh.request_count == 0


ERRORS = [
    # (directive, provider, type, retryable, status)
    ("status=401", "anthropic", "authentication", False, 401),
    ("status=403", "anthropic", "permission", False, 403),
    ("status=404", "anthropic", "not_found", False, 404),
    ("status=429", "anthropic", "rate_limit", True, 429),
    ("status=529", "anthropic", "overloaded", True, 529),
    ("status=500", "anthropic", "upstream", True, 500),
    ("status=401", "openai", "authentication", False, 401),
    ("status=429", "openai", "rate_limit", True, 429),
    ("status=503", "openai", "overloaded", True, 503),
]


@pytest.mark.parametrize(("directive", "provider", "etype", "retryable", "status"), ERRORS)
def test_upstream_http_errors_become_one_error_event(
    sluice: Gunicorn, fresh: FakeUpstream, directive: str, provider: str, etype: str, retryable: bool, status: int
) -> None:
    events = open_stream(f"{sluice.url}/stream",
                         params={"prompt": f"x [fake {directive}]", "provider": provider}).rest()
    assert types(events) == ["start", "error", "[DONE]"]
    error = events[1].json["error"]
    assert (error["type"], error["retryable"], error["status"]) == (etype, retryable, status)
    assert "Traceback" not in events[1].data and "sk-ant" not in events[1].data


def test_midstream_overloaded_event_and_dropped_connection(start_sluice, fresh: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    server = start_sluice(SLUICE_MIDSTREAM_RECOVERY="0")
    events = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=10 error_after=3]"}).rest()
    assert types(events) == ["start", "text", "text", "text", "error", "[DONE]"]
    assert events[4].json["error"]["type"] == "overloaded" and events[4].json["error"]["retryable"] is True
    events = open_stream(f"{server.url}/stream",
                         params={"prompt": "x [fake tokens=10 drop_after=4]", "provider": "openai"}).rest()
    assert types(events)[-2:] == ["error", "[DONE]"]
    assert events[-2].json["error"]["type"] == "connection"
    assert server.log().count("Traceback") == 0


def test_connection_refused_is_a_connection_error(start_sluice, fresh: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    from tests.support.servers import free_port

    server = start_sluice(ANTHROPIC_BASE_URL=f"http://127.0.0.1:{free_port()}")
    events = open_stream(f"{server.url}/stream", params={"prompt": "x"}).rest()
    assert types(events) == ["start", "error", "[DONE]"]
    assert events[1].json["error"]["type"] == "connection"


def test_midstream_drop_is_continued_once_with_a_notice(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    events = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake tokens=6 drop_after=3]"}).rest()
    kinds = types(events)
    assert "notice" in kinds and kinds[-2:] == ["error", "[DONE]"] or kinds[-2:] == ["done", "[DONE]"]
    notice = next(e.json for e in events if e.type == "notice")
    assert notice["code"] == "upstream_reconnected"
    assert fresh.request_count == 2
    # The continuation carries what was already said, as the assistant's turn.
    assert "t0 t1 t2" in json.dumps(fresh.last_request.json["messages"])


def test_builtin_tools_round_trip(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    prompt = 'what is 6*7 [fake tool=calculate args={"expression":"6*7"} tokens=2]'
    events = open_stream(f"{sluice.url}/stream", params={"prompt": prompt, "tools": "calculate,get_time"}).rest()
    kinds = types(events)
    assert kinds[:3] == ["start", "tool_call", "tool_result"] and kinds[-2:] == ["done", "[DONE]"]
    call, result = events[1].json, events[2].json
    assert call["name"] == "calculate" and call["arguments"] == {"expression": "6*7"}
    assert result == {"type": "tool_result", "id": call["id"], "name": "calculate", "content": "42",
                      "is_error": False}
    assert text_of(events).startswith("result: 42")
    assert fresh.request_count == 2
    assert {t["name"] for t in fresh.requests[0].json["tools"]} == {"calculate", "get_time"}


def test_json_response_format(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    events = open_stream(f"{sluice.url}/stream", method="POST",
                         json={"prompt": "x [fake json=1 tokens=4]", "response_format": "json"}).rest()
    js = [e.json for e in events if e.type == "json"]
    assert js and js[-1]["complete"] is True and sum(1 for j in js if j["complete"]) == 1
    assert js[-1]["value"] == {"answer": "t0 t1 t2 t3", "n": 4}
    assert all(isinstance(j["value"], dict) for j in js)
    assert types(events)[-2:] == ["done", "[DONE]"]


@pytest.mark.parametrize(("chunking", "check"), [
    ("word", lambda parts: all(p.endswith(" ") for p in parts)),
    ("sentence", lambda parts: len(parts) <= 3),
])
def test_chunking(sluice: Gunicorn, fresh: FakeUpstream, chunking: str, check) -> None:  # type: ignore[no-untyped-def]
    events = open_stream(f"{sluice.url}/stream", params={"prompt": "x [fake tokens=9]", "chunking": chunking}).rest()
    parts = [e.json["content"] for e in events if e.type == "text"]
    assert "".join(parts) == expected_text(9) and check(parts)


def test_demo_provider_is_the_default_without_keys(start_sluice) -> None:  # type: ignore[no-untyped-def]
    server = start_sluice(SLUICE_PROVIDER="", ANTHROPIC_API_KEY="", ANTHROPIC_BASE_URL="", OPENAI_API_KEY="",
                          OPENAI_BASE_URL="", SLUICE_DEMO_TOKENS_PER_SECOND="500")
    events = open_stream(f"{server.url}/stream", params={"prompt": "hello"}).rest()
    assert events[0].json["provider"] == "demo"
    assert "hello" in text_of(events) and types(events)[-2:] == ["done", "[DONE]"]
    resp = requests.get(f"{server.url}/stream", params={"prompt": "x", "provider": "anthropic"}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "provider"


def test_fallback_provider_takes_over_before_the_first_token(start_sluice, fresh: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    server = start_sluice(SLUICE_FALLBACK_PROVIDER="demo", SLUICE_DEMO_TOKENS_PER_SECOND="1000")
    events = open_stream(f"{server.url}/stream", params={"prompt": "hello [fake status=529]"}).rest()
    kinds = types(events)
    assert kinds[:2] == ["start", "notice"] and kinds[-2:] == ["done", "[DONE]"]
    assert events[1].json["code"] == "fallback"
    assert "hello" in text_of(events)
    assert fresh.request_count == 3  # the fallback takes over once the provider's 2 retries are spent
    # After the first token there is no fallback: the error stands.
    events = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=5 error_after=2]"}).rest()
    assert types(events)[-2:] == ["error", "[DONE]"] and "notice" not in types(events)


def test_coalescing_merges_close_deltas(start_sluice, fresh: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    server = start_sluice(SLUICE_COALESCE_MS="150")
    events = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=30 pace=0.01]"}).rest()
    texts = [e for e in events if e.type == "text"]
    assert text_of(events) == expected_text(30)
    assert 1 < len(texts) <= 6, len(texts)


def test_one_json_log_line_per_generation_without_content(start_sluice, fresh: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import UPSTREAM_KEY

    server = start_sluice()
    secret_prompt = "my-secret-prompt-words [fake tokens=3]"
    stream = open_stream(f"{server.url}/stream", params={"prompt": secret_prompt})
    stream.rest()
    cancelled = open_stream(f"{server.url}/stream", params={"prompt": "y [fake stall_after=1]"})
    cancelled.until("text")
    requests.post(f"{server.url}/cancel", json={"stream_id": cancelled.stream_id}, timeout=5)
    cancelled.rest()

    def by_id() -> dict[str, dict[str, object]]:
        lines = [json.loads(line) for line in server.log().splitlines()
                 if line.startswith("{") and "generation" in line]
        return {line["stream_id"]: line for line in lines if "stream_id" in line and "outcome" in line}

    # Each generation's line is written as it ends: wait for both, never a fixed sleep.
    assert wait_for(lambda: {stream.stream_id, cancelled.stream_id} <= set(by_id()), 5)
    log = server.log()
    ended = by_id()
    done, stopped = ended[stream.stream_id], ended[cancelled.stream_id]
    assert done["outcome"] == "done" and done["output_tokens"] == 3 and done["provider"] == "anthropic"
    assert {"model", "ttft_ms", "input_tokens", "duration_ms"} <= set(done)
    assert stopped["outcome"] == "cancelled" and stopped["reason"] == "user"
    assert "my-secret-prompt-words" not in log and "t0 t1" not in log
    assert UPSTREAM_KEY not in log


def test_log_content_when_turned_on(start_sluice, fresh: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    server = start_sluice(SLUICE_LOG_CONTENT="1")
    open_stream(f"{server.url}/stream", params={"prompt": "visible-words [fake tokens=2]"}).rest()
    assert wait_for(lambda: "visible-words" in server.log() and "t0 t1" in server.log(), 5)


def test_head_answers_as_get_would_and_starts_nothing(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    stream_id = "head0123456789abcdef"
    resp = requests.head(f"{sluice.url}/stream", params={"prompt": "x", "stream_id": stream_id}, timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert "Content-Length" not in resp.headers  # a GET's body has no length: HEAD must not claim 0
    # The checks a GET gets: bad input is 400, a Last-Event-ID of nothing known is 204.
    def head(params: dict[str, str], headers: dict[str, str] | None = None) -> int:
        return requests.head(f"{sluice.url}/stream", params=params, headers=headers, timeout=5).status_code

    assert head({}) == 400
    assert head({"prompt": "x", "max_tokens": "0"}) == 400
    assert head({"prompt": "x"}, {"Last-Event-ID": "xx"}) == 204
    assert requests.get(f"{sluice.url}/streams/{stream_id}", timeout=5).status_code == 404
    assert fresh.request_count == 0


def test_unknown_or_malformed_stream_paths_are_404(sluice: Gunicorn) -> None:
    for path in ("/streams/" + "A" * 22, "/streams/" + "A" * 22 + "/events", "/streams/nope", "/streams/nope/events"):
        resp = requests.get(sluice.url + path, timeout=5)
        assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found", path


@pytest.mark.parametrize(("prompt", "tool", "check"), [
    ("What is 6*7?", "calculate", lambda content: content == "42"),
    ("What time is it in Europe/Paris?", "get_time", lambda content: "T" in content and content[-6] in "+-"),
])
def test_demo_model_uses_the_builtin_tools(start_sluice, prompt: str, tool: str, check) -> None:  # type: ignore[no-untyped-def]
    server = start_sluice(SLUICE_PROVIDER="demo", SLUICE_DEMO_TOKENS_PER_SECOND="1000")
    events = open_stream(f"{server.url}/stream", params={"prompt": prompt, "tools": "calculate,get_time"}).rest()
    assert types(events)[:3] == ["start", "tool_call", "tool_result"] and types(events)[-2:] == ["done", "[DONE]"]
    result = events[2].json
    assert events[1].json["name"] == result["name"] == tool and result["is_error"] is False
    assert check(result["content"]), result
    assert result["content"] in text_of(events)
