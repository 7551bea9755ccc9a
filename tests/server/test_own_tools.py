"""The operator's own tools (SLUICE_TOOLS) end to end: gunicorn -k gevent, both providers, the fake upstream.

The tools are plain functions in tests/support/own_tools.py; the worker imports them at start.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.server import RecordedRequest
from tests.support.own_tools import LOOKUP_ORDER_SCHEMA as LOOKUP_SCHEMA
from tests.support.servers import Gunicorn
from tests.support.sse import Event, open_stream, text_of, types

pytestmark = pytest.mark.timeout(120)

OWN = "tests.support.own_tools"
PROVIDERS = ["anthropic", "openai"]
LOOKUP_DESCRIPTION = "Look up one of the customer's orders by its number."


def _env(upstream: FakeUpstream, **env: str) -> dict[str, str]:
    return sluice_env(upstream, **{"SLUICE_TOOLS": OWN, "SLUICE_TOOL_TIMEOUT": "10",
                                   "SLUICE_MAX_STREAMS_PER_CLIENT": "100", "SLUICE_MAX_RESPONSES_PER_CLIENT": "200",
                                   **env})


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    with Gunicorn(_env(upstream)) as gunicorn:
        yield gunicorn


def _ask(server: Gunicorn, provider: str, tool: str, args: dict[str, Any], *extra: str, tools: str = "") -> list[Event]:
    directive = f"[fake tool={tool} args={json.dumps(args, separators=(',', ':'))} tokens=2 {' '.join(extra)}]"
    params = {"prompt": f"please {directive}", "provider": provider, "tools": tools or tool}
    return open_stream(f"{server.url}/stream", params=params, timeout=30).rest()


def _of(events: list[Event], kind: str) -> list[dict[str, Any]]:
    return [e.json for e in events if e.data != "[DONE]" and e.json["type"] == kind]


def _sent_results(request: RecordedRequest) -> list[tuple[str, bool]]:
    """The tool results a request carried to the model: (content, is_error)."""
    body = request.json
    if "messages" in body and request.path.endswith("/messages"):  # Anthropic
        blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
        return [(b["content"], b["is_error"]) for b in blocks if b["type"] == "tool_result"]
    if "messages" in body:  # Chat Completions: an error result reads "Error: ..."
        contents = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        return [(c.removeprefix("Error: "), c.startswith("Error: ")) for c in contents]
    outputs = [i["output"] for i in body["input"] if i.get("type") == "function_call_output"]
    return [(o.removeprefix("Error: "), o.startswith("Error: ")) for o in outputs]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_receives_the_schema_made_from_the_hints(server: Gunicorn, fresh: FakeUpstream,
                                                               provider: str) -> None:
    _ask(server, provider, "lookup_order", {"order_id": "AB123456"}, tools="lookup_order,calculate")
    tools = fresh.requests[0].json["tools"]
    if provider == "anthropic":
        assert tools[0] == {"name": "lookup_order", "description": LOOKUP_DESCRIPTION, "input_schema": LOOKUP_SCHEMA}
    else:
        assert tools[0] == {"type": "function", "function": {"name": "lookup_order", "description": LOOKUP_DESCRIPTION,
                                                             "parameters": LOOKUP_SCHEMA}}
    assert len(tools) == 2


def test_the_responses_api_receives_it_in_its_own_form(start_sluice: Any, fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_TOOLS=OWN, SLUICE_OPENAI_API="responses")
    events = _ask(server, "openai", "lookup_order", {"order_id": "AB123456", "detail": "items"})
    assert fresh.requests[0].json["tools"] == [{"type": "function", "name": "lookup_order",
                                                "description": LOOKUP_DESCRIPTION, "parameters": LOOKUP_SCHEMA}]
    assert _of(events, "tool_result")[0]["content"] == '{"order_id":"AB123456","items":"2 items"}'
    assert _sent_results(fresh.requests[1]) == [('{"order_id":"AB123456","items":"2 items"}', False)]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_valid_call_returns_the_value_as_json(server: Gunicorn, fresh: FakeUpstream, provider: str) -> None:
    events = _ask(server, provider, "add_item", {"item": {"sku": "ab", "quantity": 2}})
    assert types(events)[:3] == ["start", "tool_call", "tool_result"] and types(events)[-2:] == ["done", "[DONE]"]
    call, result = _of(events, "tool_call")[0], _of(events, "tool_result")[0]
    assert result == {"type": "tool_result", "id": call["id"], "name": "add_item",
                      "content": '{"sku":"AB","quantity":3}', "is_error": False}
    assert _sent_results(fresh.requests[1]) == [('{"sku":"AB","quantity":3}', False)]
    assert text_of(events).startswith('result: {"sku":"AB","quantity":3}')


@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_arguments_go_back_as_an_error_result_and_the_function_is_not_called(
    server: Gunicorn, fresh: FakeUpstream, provider: str
) -> None:
    events = _ask(server, provider, "lookup_order", {"order_id": "12", "detail": "price"})
    result = _of(events, "tool_result")[0]
    assert result["is_error"] is True
    assert result["content"] == ("invalid arguments for lookup_order: order_id: String should match pattern "
                                 "'^[A-Z]{2}\\d{6}$'; detail: Input should be 'status' or 'items'")
    assert _sent_results(fresh.requests[1]) == [(result["content"], True)]
    assert types(events)[-2:] == ["done", "[DONE]"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_exception_is_a_short_error_result_and_the_traceback_stays_in_the_log(
    server: Gunicorn, fresh: FakeUpstream, provider: str
) -> None:
    events = _ask(server, provider, "explode", {"reason": provider})
    result = _of(events, "tool_result")[0]
    assert (result["content"], result["is_error"]) == ("the tool explode failed (RuntimeError)", True)
    assert _sent_results(fresh.requests[1]) == [("the tool explode failed (RuntimeError)", True)]
    assert all("hunter2" not in e.data for e in events)
    assert all("hunter2" not in json.dumps(r.json) for r in fresh.requests)
    log = server.log()
    assert f"hunter2 rejected ({provider})" in log and "Traceback" in log


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_tool_past_its_timeout_is_an_error_result(start_sluice: Any, fresh: FakeUpstream, provider: str) -> None:
    server = start_sluice(SLUICE_TOOLS=f"{OWN}:pause", SLUICE_TOOL_TIMEOUT="1")
    began = time.monotonic()
    events = _ask(server, provider, "pause", {"seconds": 60})
    assert time.monotonic() - began < 30  # not the 60 s the function asked for
    result = _of(events, "tool_result")[0]
    assert (result["content"], result["is_error"]) == ("the tool pause did not answer within 1 s", True)
    assert _sent_results(fresh.requests[1]) == [("the tool pause did not answer within 1 s", True)]
    assert types(events)[-2:] == ["done", "[DONE]"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_parallel_calls_run_side_by_side(server: Gunicorn, fresh: FakeUpstream, provider: str) -> None:
    # `meet` answers only once the other call is running too: one after the other, the first
    # would wait for the second forever (and fail after 10 s).
    key = f"parallel-{provider}-{time.monotonic_ns()}"
    events = _ask(server, provider, "meet", {"key": key}, "calls=2")
    calls, results = _of(events, "tool_call"), _of(events, "tool_result")
    assert len(calls) == 2 and [r["id"] for r in results] == [c["id"] for c in calls]
    assert [(r["content"], r["is_error"]) for r in results] == [(f"met {key}", False)] * 2
    assert _sent_results(fresh.requests[1]) == [(f"met {key}", False)] * 2


class _Silent:
    """A TCP server on 127.0.0.1 that accepts one connection and sends `line` when told to."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(30)
        self.conn: socket.socket | None = None

    def accept(self) -> socket.socket:
        self.conn, _ = self.sock.accept()
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.sock.close()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancel_stops_a_running_tool_and_its_result_never_reaches_the_model(
    server: Gunicorn, fresh: FakeUpstream, provider: str
) -> None:
    peer = _Silent()
    try:
        stream = _stream(server, provider, "read_line", {"port": peer.port})
        call = stream.until("tool_call").json
        conn = peer.accept()  # the tool is running: connected, waiting for a line
        resp = requests.post(f"{server.url}/cancel", json={"stream_id": stream.stream_id}, timeout=5)
        assert resp.json()["status"] == "cancelled"
        began = time.monotonic()
        conn.settimeout(5)
        assert conn.recv(1) == b"", "the tool's connection must be closed by the cancel"
        assert time.monotonic() - began < 5  # far below SLUICE_TOOL_TIMEOUT (10 s)
        rest = stream.rest()
        assert types(rest)[-2:] == ["cancelled", "[DONE]"] and call["name"] == "read_line"
        assert "tool_result" not in types(rest)
        assert fresh.request_count == 1  # the generation has ended: nothing more can go to the model
    finally:
        peer.close()


def _stream(server: Gunicorn, provider: str, tool: str, args: dict[str, Any]) -> Any:
    directive = f"[fake tool={tool} args={json.dumps(args, separators=(',', ':'))} tokens=2]"
    return open_stream(f"{server.url}/stream", params={"prompt": directive, "provider": provider, "tools": tool},
                       timeout=30)


def _relay(server: Gunicorn, gaps: list[float], errors: list[str]) -> None:
    """One plain stream (20 tokens, 50 ms apart); its longest silence between events goes to `gaps`."""
    try:
        stream = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=20 pace=0.05]"}, timeout=30)
        last, longest = time.monotonic(), 0.0
        for _ in stream:
            now = time.monotonic()
            longest, last = max(longest, now - last), now
        if types(stream.events)[-2:] != ["done", "[DONE]"]:
            errors.append(repr(types(stream.events)))
        gaps.append(longest)
    except Exception as exc:  # reported by the test, not lost in a thread
        errors.append(repr(exc))


def _others(server: Gunicorn, n: int = 50) -> tuple[list[threading.Thread], list[float], list[str]]:
    gaps: list[float] = []
    errors: list[str] = []
    threads = [threading.Thread(target=_relay, args=(server, gaps, errors), daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    return threads, gaps, errors


def test_a_tool_waiting_on_a_socket_does_not_hold_other_streams(server: Gunicorn, fresh: FakeUpstream) -> None:
    # The tool's line is sent only once 50 other streams on the same worker have finished: had
    # the tool blocked the event loop, none of them could.
    peer = _Silent()
    try:
        stream = _stream(server, "anthropic", "read_line", {"port": peer.port})
        stream.until("tool_call")
        conn = peer.accept()
        threads, gaps, errors = _others(server)
        for thread in threads:
            thread.join(60)
        assert not errors and len(gaps) == 50
        conn.sendall(b"parcel delivered\n")
        result = stream.until("tool_result").json
        assert (result["content"], result["is_error"]) == ("parcel delivered", False)
        assert types(stream.rest())[-2:] == ["done", "[DONE]"]
        # Loose (a shared machine): a relay held by the tool would have stalled until its line came.
        assert max(gaps) < 5, sorted(gaps)[-5:]
    finally:
        peer.close()


def test_a_sleeping_tool_leaves_the_relay_latency_of_50_other_streams(server: Gunicorn, fresh: FakeUpstream) -> None:
    stream = _stream(server, "anthropic", "pause", {"seconds": 4})
    stream.until("tool_call")
    threads, gaps, errors = _others(server)
    for thread in threads:
        thread.join(60)
    result = stream.until("tool_result").json
    assert (result["content"], result["is_error"]) == ("slept 4", False)
    assert not errors and len(gaps) == 50
    # Tokens come every 50 ms; a tool holding the worker for its 4 s would show as a gap of ~4 s.
    # The bound is loose on purpose (2 CPUs shared by several test runs).
    assert max(gaps) < 2, sorted(gaps)[-5:]


def test_the_chat_page_offers_every_configured_tool(server: Gunicorn) -> None:
    html = requests.get(server.url + "/", timeout=5).text
    for name in ("get_time", "calculate", "lookup_order", "add_item", "explode", "pause", "read_line", "meet",
                 "shipment"):
        assert f'name="tools" value="{name}"' in html
    assert f'title="{LOOKUP_DESCRIPTION}"'.replace("'", "&#39;") in html


def test_an_unknown_tool_is_400_naming_the_configured_ones(server: Gunicorn, fresh: FakeUpstream) -> None:
    resp = requests.post(server.url + "/stream", json={"prompt": "x", "tools": ["lookup_orders"]}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "tools"
    assert "lookup_order" in resp.json()["error"]["message"]
    assert fresh.request_count == 0


@pytest.mark.parametrize(("entries", "says"), [
    ("tests.support.no_such_module:f", "SLUICE_TOOLS: cannot import module 'tests.support.no_such_module'"),
    (f"{OWN}:calculate_tax", f"SLUICE_TOOLS: {OWN}:calculate_tax: module '{OWN}' has no 'calculate_tax'"),
    (f"{OWN}:meet,{OWN}:meet", f"SLUICE_TOOLS: {OWN}:meet: the tool name 'meet' is already taken by {OWN}:meet"),
])
def test_a_bad_entry_stops_the_server_naming_it(upstream: FakeUpstream, entries: str, says: str) -> None:
    server = Gunicorn(_env(upstream, SLUICE_TOOLS=entries))
    with pytest.raises(RuntimeError) as err:
        server.start(timeout=60)
    assert says in str(err.value)
