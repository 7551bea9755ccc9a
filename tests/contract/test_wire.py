"""The SSE wire format: headers, ids, the event types and their fields, heartbeats, the tool
loop, JSON mode, upstream errors as `error` events (CONTRACT "SSE wire format", "Built-in tools")."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
import requests

from tests.conftest import sluice_env
from tests.contract.conftest import (
    ID_CHARS,
    check_well_formed,
    create,
    expected,
    get_stream,
    kinds,
    of,
    post_stream,
    rest_within,
    status_of,
    terminal,
    text,
    wait_until,
)
from tests.fake_upstream import FakeUpstream
from tests.support.listening import close_listener
from tests.support.servers import Gunicorn, free_port
from tests.support.sse import open_stream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def srv(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    with Gunicorn(sluice_env(upstream, SLUICE_HEARTBEAT_SECONDS="1", SLUICE_MAX_STREAMS_PER_CLIENT="50",
                             SLUICE_MAX_RESPONSES_PER_CLIENT="50")) as server:
        yield server


# -- headers and framing ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sse_response_headers(srv: Gunicorn, fresh: FakeUpstream, method: str) -> None:
    prompt = "hi [fake tokens=3]"
    headers = {"Accept-Encoding": "gzip, deflate, br"}
    if method == "GET":
        stream = open_stream(srv.url + "/stream", params={"prompt": prompt}, headers=headers)
    else:
        stream = post_stream(srv, {"prompt": prompt}, headers=headers)
    h = stream.response.headers
    assert stream.response.status_code == 200
    assert h["Content-Type"].replace(" ", "").lower() == "text/event-stream;charset=utf-8", h
    assert "no-cache" in h.get("Cache-Control", ""), h
    assert h.get("X-Accel-Buffering") == "no", h
    assert "Content-Length" not in h, h
    assert "Content-Encoding" not in h, h
    for hop in ("Keep-Alive", "Proxy-Connection", "Upgrade", "TE", "Trailer"):
        assert hop not in h, h
    stream.rest()
    assert stream.parser.retry == 3000


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_ids_count_from_one_with_no_gap_and_done_comes_last(srv: Gunicorn, fresh: FakeUpstream, method: str) -> None:
    prompt = "hi [fake tokens=12]"
    stream = get_stream(srv, prompt=prompt) if method == "GET" else post_stream(srv, {"prompt": prompt})
    events = check_well_formed(stream.rest())
    sid = stream.stream_id
    assert len(sid) >= 22 and ID_CHARS.match(sid), sid
    start = events[0].json
    assert start["stream_id"] == sid and start["provider"] == "anthropic"
    assert isinstance(start["model"], str) and start["model"]
    assert isinstance(start["cancel_url"], str) and "/cancel" in start["cancel_url"]
    assert text(events) == expected(12)
    assert events[-1].data == "[DONE]"


def test_server_made_ids_are_unique(srv: Gunicorn, fresh: FakeUpstream) -> None:
    ids = {create(srv, {"prompt": "x [fake tokens=1]"})["stream_id"] for _ in range(5)}
    assert len(ids) == 5
    for sid in ids:
        assert len(sid) >= 22 and ID_CHARS.match(sid)


def test_done_carries_stop_reason_usage_and_metrics(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "one two three [fake tokens=7]"}).rest())
    done = terminal(events)
    assert done["type"] == "done" and done["stop_reason"] == "end_turn"
    usage = done["usage"]
    assert usage["output_tokens"] == 7
    assert isinstance(usage["input_tokens"], int) and usage["input_tokens"] > 0
    # Breakdown fields only where the provider reports them: a plain answer has none.
    for key in ("cache_read_input_tokens", "cache_creation_input_tokens", "reasoning_tokens"):
        assert key not in usage, usage
    metrics = done["metrics"]
    assert isinstance(metrics["ttft_ms"], (int, float)) and metrics["ttft_ms"] >= 0
    assert isinstance(metrics["duration_ms"], (int, float)) and metrics["duration_ms"] >= metrics["ttft_ms"]


@pytest.mark.parametrize(
    ("provider", "directive", "body", "reason"),
    [
        ("anthropic", "tokens=20", {"max_tokens": 5}, "max_tokens"),
        ("openai", "tokens=20", {"max_tokens": 5}, "max_tokens"),
        ("anthropic", "stop=stop_sequence", {}, "stop_sequence"),
        ("openai", "stop=content_filter", {}, "content_filter"),
        ("anthropic", "stop=refusal", {}, "refusal"),
    ],
)
def test_stop_reasons(
    srv: Gunicorn, fresh: FakeUpstream, provider: str, directive: str, body: dict, reason: str
) -> None:
    events = check_well_formed(
        post_stream(srv, {"prompt": f"x [fake {directive}]", "provider": provider, **body}).rest()
    )
    done = terminal(events)
    assert done["type"] == "done" and done["stop_reason"] == reason, done
    if reason == "max_tokens":
        assert text(events) == expected(5)


def test_openai_refusal_arrives_as_text_with_stop_reason_refusal(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(
        post_stream(
            srv, {"prompt": "x [fake stop=refusal say=I%20cannot%20help%20with%20that.]", "provider": "openai"}
        ).rest()
    )
    done = terminal(events)
    assert done["type"] == "done" and done["stop_reason"] == "refusal", done
    assert text(events) == "I cannot help with that."


def test_openai_provider_streams_the_same_way(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=6]", "provider": "openai"}).rest())
    assert events[0].json["provider"] == "openai"
    assert text(events) == expected(6)
    done = terminal(events)
    assert done["stop_reason"] == "end_turn" and done["usage"]["output_tokens"] == 6


def test_demo_provider_needs_no_key(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "hello", "provider": "demo"}).rest())
    assert events[0].json["provider"] == "demo"
    assert terminal(events)["type"] == "done" and text(events)
    assert fresh.request_count == 0


def test_a_heartbeat_ping_is_sent_while_the_model_is_silent(srv: Gunicorn, fresh: FakeUpstream) -> None:
    """SLUICE_HEARTBEAT_SECONDS=1: a `: ping` comment line arrives while nothing else is sent."""
    resp = requests.post(srv.url + "/stream", json={"prompt": "x [fake stall_after=1]"}, stream=True, timeout=15)
    raw = b""
    chunks = resp.iter_content(chunk_size=None)
    for chunk in chunks:
        raw += chunk
        if re.search(rb"(^|\n): ping\n", raw):
            break
    assert re.search(rb"(^|\n): ping\n", raw), raw
    sid = re.search(rb"id: ([A-Za-z0-9_-]+):1\n", raw)
    assert sid, raw
    assert requests.post(srv.url + "/cancel", json={"stream_id": sid.group(1).decode()}, timeout=10).status_code == 200
    for chunk in chunks:
        raw += chunk
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-200:]
    assert b'"type":"cancelled"' in raw.replace(b" ", b"")


# -- built-in tools --------------------------------------------------------------------------------


def test_calculate_tool_round(srv: Gunicorn, fresh: FakeUpstream) -> None:
    body = {"prompt": 'x [fake tool=calculate args={"expression":"6*7"} tokens=2]', "tools": ["calculate"]}
    events = check_well_formed(post_stream(srv, body).rest())
    calls, results = of(events, "tool_call"), of(events, "tool_result")
    assert len(calls) == 1 and len(results) == 1, kinds(events)
    call, result = calls[0], results[0]
    assert call["name"] == "calculate" and call["arguments"] == {"expression": "6*7"} and call["id"]
    assert result["id"] == call["id"] and result["name"] == "calculate"
    assert result["content"].strip() == "42" and result["is_error"] is False
    assert kinds(events).index("tool_call") < kinds(events).index("tool_result")
    assert text(events) == "result: 42 " + expected(2)
    assert terminal(events)["stop_reason"] == "end_turn"
    assert fresh.request_count == 2  # the model was called again with the result


def test_calculate_tool_round_over_openai(srv: Gunicorn, fresh: FakeUpstream) -> None:
    body = {
        "prompt": 'x [fake tool=calculate args={"expression":"2**10"} tokens=1]',
        "tools": ["calculate"],
        "provider": "openai",
    }
    events = check_well_formed(post_stream(srv, body).rest())
    assert of(events, "tool_result")[0]["content"].strip() == "1024"
    assert terminal(events)["type"] == "done"


@pytest.mark.parametrize("expr", ["__import__('os').system('true')", "open('/etc/passwd')", "a+1", "1/0", "2**"])
def test_calculate_refuses_anything_else_as_an_error_result(srv: Gunicorn, fresh: FakeUpstream, expr: str) -> None:
    args = json.dumps({"expression": expr}, separators=(",", ":"))  # a directive has no spaces
    body = {"prompt": f"x [fake tool=calculate args={args} tokens=1]", "tools": ["calculate"]}
    events = check_well_formed(post_stream(srv, body).rest())
    result = of(events, "tool_result")[0]
    assert result["is_error"] is True, result
    assert terminal(events)["type"] == "done"


def test_get_time_in_a_timezone(srv: Gunicorn, fresh: FakeUpstream) -> None:
    body = {"prompt": 'x [fake tool=get_time args={"timezone":"Asia/Tokyo"} tokens=1]', "tools": ["get_time"]}
    events = check_well_formed(post_stream(srv, body).rest())
    result = of(events, "tool_result")[0]
    assert result["is_error"] is False
    when = datetime.fromisoformat(result["content"].strip())
    assert when.utcoffset() == timedelta(hours=9)


def test_get_time_defaults_to_utc(srv: Gunicorn, fresh: FakeUpstream) -> None:
    body = {"prompt": "x [fake tool=get_time tokens=1]", "tools": ["get_time"]}
    events = check_well_formed(post_stream(srv, body).rest())
    when = datetime.fromisoformat(of(events, "tool_result")[0]["content"].strip().replace("Z", "+00:00"))
    assert when.utcoffset() == timedelta(0)


def test_tools_are_only_offered_when_named(srv: Gunicorn, fresh: FakeUpstream) -> None:
    check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=1]"}).rest())
    assert not fresh.last_request.json.get("tools")


# -- JSON mode -------------------------------------------------------------------------------------


def test_json_mode_sends_growing_values_and_one_complete_object(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(
        post_stream(srv, {"prompt": "x [fake json=1 tokens=5]", "response_format": "json"}).rest()
    )
    values = of(events, "json")
    assert values, kinds(events)
    complete = [v for v in values if v["complete"] is True]
    assert len(complete) == 1 and values[-1]["complete"] is True
    assert complete[0]["value"] == {"answer": "t0 t1 t2 t3 t4", "n": 5}
    assert terminal(events)["type"] == "done"


def test_json_events_only_with_json_mode(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake json=1 tokens=5]"}).rest())
    assert not of(events, "json")


# -- upstream errors as terminal `error` events -----------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "status", "etype", "retryable"),
    [
        ("anthropic", 401, "authentication", False),
        ("anthropic", 403, "permission", False),
        ("anthropic", 404, "not_found", False),
        ("anthropic", 400, "invalid_request", False),
        ("openai", 401, "authentication", False),
        ("openai", 404, "not_found", False),
    ],
)
def test_an_upstream_refusal_is_an_error_event(
    srv: Gunicorn, fresh: FakeUpstream, provider: str, status: int, etype: str, retryable: bool
) -> None:
    stream = post_stream(srv, {"prompt": f"x [fake status={status}]", "provider": provider})
    assert stream.response.status_code == 200
    events = check_well_formed(stream.rest())
    err = terminal(events)
    assert err["type"] == "error", err
    assert err["error"]["type"] == etype and err["error"]["retryable"] is retryable
    assert err["error"]["status"] == status and err["error"]["message"]
    assert "sk-ant-test-upstream-key" not in json.dumps(err)


def test_an_overloaded_upstream_is_a_retryable_error(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake status=529]"}, timeout=60).rest())
    err = terminal(events)
    assert err["type"] == "error" and err["error"]["type"] == "overloaded", err
    assert err["error"]["retryable"] is True


def test_a_transient_529_before_the_first_token_is_retried(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake status=529 times=1 tokens=3]"}, timeout=60).rest())
    assert terminal(events)["type"] == "done", [e.data for e in events]
    assert text(events) == expected(3)
    assert fresh.request_count >= 2


def test_a_mid_stream_upstream_error_is_one_error_event_after_the_text(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=10 error_after=3]"}, timeout=60).rest())
    err = terminal(events)
    assert err["type"] == "error" and err["error"]["type"] in ("overloaded", "upstream"), err
    assert text(events).startswith(expected(3))


def test_a_drop_mid_answer_gives_a_notice_and_one_terminal(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=10 drop_after=3]"}, timeout=60).rest())
    notices = of(events, "notice")
    assert notices and isinstance(notices[0]["code"], str) and notices[0]["message"], kinds(events)
    assert text(events).startswith(expected(3))


# -- POST /streams, status, several tabs ------------------------------------------------------------


def test_post_streams_then_attach_and_status(srv: Gunicorn, fresh: FakeUpstream) -> None:
    resp = requests.post(srv.url + "/streams", json={"prompt": "x [fake tokens=30 pace=0.03]"}, timeout=10)
    assert resp.status_code == 201
    made = resp.json()
    sid = made["stream_id"]
    assert len(sid) >= 22 and ID_CHARS.match(sid)
    for key in ("events_url", "cancel_url", "status_url"):
        assert isinstance(made[key], str), made
    assert sid in made["events_url"] and sid in made["status_url"]
    tab1 = open_stream(requests.compat.urljoin(srv.url, made["events_url"]))
    tab2 = open_stream(requests.compat.urljoin(srv.url, made["events_url"]))
    tab1.until("text")
    st = requests.get(requests.compat.urljoin(srv.url, made["status_url"]), timeout=10).json()
    assert st["stream_id"] == sid and st["state"] == "running"
    for key in ("provider", "model", "created_at", "events", "usage", "stop_reason"):
        assert key in st, st
    a, b = check_well_formed(tab1.rest(), sid), check_well_formed(tab2.rest(), sid)
    assert [e.data for e in a] == [e.data for e in b]
    assert text(a) == expected(30)
    st = status_of(srv, sid).json()
    assert st["state"] == "done" and st["stop_reason"] == "end_turn"
    assert st["usage"]["output_tokens"] == 30 and st["events"] == len(a) - 1 or st["events"] == len(a)
    assert fresh.request_count == 1  # two tabs, one generation


def test_post_streams_runs_without_anyone_attached(srv: Gunicorn, fresh: FakeUpstream) -> None:
    sid = create(srv, {"prompt": "x [fake tokens=4]"})["stream_id"]
    wait_until(lambda: status_of(srv, sid).json()["state"] == "done", timeout=15)
    events = check_well_formed(open_stream(f"{srv.url}/streams/{sid}/events").rest(), sid)
    assert text(events) == expected(4)


def test_client_chosen_stream_id(srv: Gunicorn, fresh: FakeUpstream) -> None:
    for sid in ("a" * 16, "Client_chosen-ID-" + "9" * 47):
        events = check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=1]", "stream_id": sid}).rest(), sid)
        assert events[0].json["stream_id"] == sid
    events = check_well_formed(get_stream(srv, prompt="x [fake tokens=1]", stream_id="b" * 20).rest(), "b" * 20)


def test_the_upstream_sends_no_headers_first_token_timeout(upstream: FakeUpstream) -> None:
    """Issue 9: an upstream that accepts and never answers ends with `error` type `timeout`."""
    hole = socket.create_server(("127.0.0.1", 0))
    hole.listen(16)
    port = hole.getsockname()[1]
    env = sluice_env(
        upstream,
        ANTHROPIC_BASE_URL=f"http://127.0.0.1:{port}",
        OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
        SLUICE_FIRST_TOKEN_TIMEOUT="1",
    )
    accepted: list[socket.socket] = []
    import threading

    def accept() -> None:
        while True:
            try:
                conn, _ = hole.accept()
            except OSError:
                return
            accepted.append(conn)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        with Gunicorn(env) as server:
            for provider in ("anthropic", "openai"):
                stream = post_stream(server, {"prompt": "hi", "provider": provider}, timeout=30)
                events = check_well_formed(rest_within(stream, 12))
                err = terminal(events)
                assert err["type"] == "error" and err["error"]["type"] == "timeout", err
            assert accepted
    finally:
        close_listener(hole, acceptor)
        for c in accepted:
            c.close()


def test_the_fallback_provider_takes_over_before_the_first_token(
    start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream
) -> None:
    """SLUICE_FALLBACK_PROVIDER: Anthropic refuses connections (nobody listens), OpenAI answers."""
    server = start_sluice(ANTHROPIC_BASE_URL=f"http://127.0.0.1:{free_port()}", SLUICE_FALLBACK_PROVIDER="openai")
    stream = post_stream(server, {"prompt": "x [fake tokens=3]"}, timeout=30)
    events = check_well_formed(rest_within(stream, 20))
    assert terminal(events)["type"] == "done", [e.data for e in events]
    assert text(events) == expected(3)
    assert fresh.last_request.path.startswith("/v1/")
