"""OpenTelemetry traces: one GenAI span per generation, continuing the caller's traceparent, with
children per upstream call and tool run; off (and not even imported) unless OTEL_* asks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from app.config import Settings
from app.lifecycle.generation import Generation
from app.observability.tracing import Tracing, wanted
from app.providers import ProviderPool
from app.validation import parse_spec
from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import ROOT, Gunicorn, base_env

pytestmark = pytest.mark.timeout(60)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(scope="module")
def exporter() -> Any:
    """The SDK's in-memory exporter behind the global tracer provider (set once per process)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    # An SDK provider set by an earlier test in this process (tests/providers/test_body.py)
    # stays global: OpenTelemetry refuses a second one, so the exporter joins it.
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


def run(prompt: str, *, tools: list[str] | None = None) -> Generation:
    settings = Settings.from_env({"SLUICE_DEMO_TOKENS_PER_SECOND": "400"})
    spec = parse_spec({"prompt": prompt, "tools": tools or []}, settings)
    trace = Tracing(True).generation({"Traceparent": TRACEPARENT}, provider=spec.provider, model=spec.model, spec=spec)
    gen = Generation("trace-test-0123456789", spec, settings, ProviderPool(settings), trace=trace)
    gen.feed.attach()
    gen.start()
    gen.join(20)
    assert not gen.running
    return gen


def by_name(spans: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def test_environment_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not wanted({})
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"})


def test_one_genai_span_per_generation_with_children_for_rounds_and_tools(exporter: Any) -> None:
    exporter.clear()
    gen = run("What time is it?", tools=["get_time"])
    assert gen.state == "done"
    spans = by_name(exporter.get_finished_spans())
    chat = [s for s in exporter.get_finished_spans() if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(chat) == 1, spans
    root = chat[0]
    assert root.name == "chat sluice-demo-1"
    # The caller's trace continues: same trace id, our span is a child of its span.
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.parent is not None and format(root.parent.span_id, "016x") == PARENT_ID
    attrs = root.attributes
    assert attrs["gen_ai.provider.name"] == "demo"
    assert attrs["gen_ai.request.model"] == "sluice-demo-1"
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.usage.input_tokens"] == gen.usage()["input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] == gen.usage()["output_tokens"] > 0
    assert 0 < attrs["gen_ai.response.time_to_first_chunk"] < 20
    # Two upstream calls (the tool round and the answer) and one tool run, all children of it.
    upstream = spans["upstream demo"]
    tool = spans["execute_tool get_time"]
    assert len(upstream) == 2 and len(tool) == 1
    for child in upstream + tool:
        assert child.parent is not None and child.parent.span_id == root.context.span_id
    assert tool[0].attributes["gen_ai.tool.name"] == "get_time"
    assert tool[0].attributes["gen_ai.tool.call.id"] == "toolu_demo_time"
    # Never content: no attribute carries the prompt.
    for span in exporter.get_finished_spans():
        assert not any("What time" in str(v) for v in span.attributes.values())


OFF_PROBE = """
import sys
from app import create_app
app = create_app()
body = app.test_client().get("/stream?prompt=hi").get_data()
assert b"[DONE]" in body, body
print("loaded" if any(m.startswith("opentelemetry") for m in sys.modules) else "not loaded")
"""


def test_off_by_default_and_not_even_imported() -> None:
    out = subprocess.run([sys.executable, "-c", OFF_PROBE], cwd=ROOT, env=base_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "not loaded"


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/v1/traces":
            type(self).bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def exporting(make_env: Callable[[str], dict[str, str]]) -> Iterator[tuple[Gunicorn, list[bytes]]]:
    """Sluice under gunicorn (`make_env(endpoint)`) exporting to a real OTLP/HTTP receiver on
    loopback; yields the server and the request bodies the receiver got."""
    _Receiver.bodies = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with Gunicorn(make_env(f"http://127.0.0.1:{receiver.server_address[1]}")) as server:
            yield server, _Receiver.bodies
    finally:
        receiver.shutdown()


@pytest.fixture(scope="module")
def otlp() -> Iterator[tuple[Gunicorn, list[bytes]]]:
    """Sluice (the demo model) under gunicorn exporting to a real OTLP/HTTP endpoint."""
    with exporting(lambda endpoint: base_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="sluice-under-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
        SLUICE_DEMO_TOKENS_PER_SECOND="20",
    )) as exported:
        yield exported


def _spans(bodies: list[bytes]) -> list[tuple[dict[str, Any], Any]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for body in list(bodies):
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            res = {kv.key: kv.value.string_value for kv in resource.resource.attributes}
            for scope in resource.scope_spans:
                out.extend((res, span) for span in scope.spans)
    return out


def _received(bodies: list[bytes], trace_id: str, names: set[str]) -> list[tuple[dict[str, Any], Any]]:
    """This trace's spans once every name in `names` has arrived (the exporter batches)."""
    deadline = time.monotonic() + 20
    while True:
        spans = [(res, s) for res, s in _spans(bodies) if s.trace_id.hex() == trace_id]
        if names <= {s.name for _, s in spans} or time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


def test_spans_reach_a_real_otlp_http_receiver_from_gunicorn(otlp: tuple[Gunicorn, list[bytes]]) -> None:
    server, bodies = otlp
    r = requests.post(server.url + "/stream", json={"prompt": "What is 6*7?", "tools": ["calculate"]},
                      headers={"traceparent": TRACEPARENT}, timeout=30)
    assert r.status_code == 200 and b"[DONE]" in r.content
    spans = _received(bodies, TRACE_ID, {"chat sluice-demo-1", "execute_tool calculate", "upstream demo"})
    root = [(res, s) for res, s in spans if s.name == "chat sluice-demo-1"]
    assert len(root) == 1, [s.name for _, s in spans]
    resource, span = root[0]
    assert resource["service.name"] == "sluice-under-test"
    assert span.parent_span_id.hex() == PARENT_ID
    attrs = {kv.key: kv.value for kv in span.attributes}
    assert attrs["gen_ai.operation.name"].string_value == "chat"
    assert attrs["gen_ai.provider.name"].string_value == "demo"
    assert attrs["gen_ai.usage.output_tokens"].int_value > 0
    children = [s for _, s in spans if s.parent_span_id == span.span_id]
    assert sorted(s.name for s in children) == ["execute_tool calculate", "upstream demo", "upstream demo"]


def test_a_cancel_ends_the_generation_span_and_its_upstream_span(otlp: tuple[Gunicorn, list[bytes]]) -> None:
    server, bodies = otlp
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    stream_id = "trace-cancel-0123456789"
    with requests.get(server.url + "/stream", params={"prompt": "Tell me a story", "stream_id": stream_id},
                      headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}, stream=True,
                      timeout=30) as r:
        lines = r.iter_lines()
        for line in lines:
            if line.startswith(b"data:") and b'"type":"text"' in line:
                break
        assert requests.post(server.url + "/cancel", json={"stream_id": stream_id}, timeout=10).status_code == 200
        rest = b"\n".join(lines)
    assert b'"type":"cancelled"' in rest
    spans = _received(bodies, trace_id, {"chat sluice-demo-1", "upstream demo"})
    by = {s.name: s for _, s in spans}
    root_attrs = {kv.key: kv.value for kv in by["chat sluice-demo-1"].attributes}
    assert root_attrs["sluice.outcome"].string_value == "cancelled"
    upstream_attrs = {kv.key: kv.value for kv in by["upstream demo"].attributes}
    assert upstream_attrs["error.type"].string_value == "GreenletExit"
    assert "Failed to detach context" not in server.log(), "the kill unwinds in the greenlet that attached"


# -- issue 20: the SDK's own span of each API call, inside the caller's trace ---------------------

SECRET_PROMPT = "PurpleElephantPrompt"
SECRET_ANSWER = "TangerineAnswer"


@pytest.fixture(scope="module")
def otlp_upstream(upstream: FakeUpstream) -> Iterator[tuple[Gunicorn, list[bytes]]]:
    """Sluice under gunicorn with the fake upstream as both providers, exporting to a real
    OTLP/HTTP receiver; the environment asks the Anthropic SDK for content in its spans."""
    with exporting(lambda endpoint: sluice_env(
        upstream,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
        ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE="content",
        SLUICE_TOOLS="tests.observability.traced_tools:traced_lookup",
    )) as exported:
        yield exported


def _all_text(span: Any) -> str:
    """Every attribute value and event of `span`, as text (to look for content)."""
    return str(span.attributes) + str(span.events) + span.name


def test_the_sdks_call_span_is_a_child_of_the_upstream_span_in_every_round(
    otlp_upstream: tuple[Gunicorn, list[bytes]], fresh: FakeUpstream
) -> None:
    server, bodies = otlp_upstream
    trace_id = "5cf92f3577b34da6a3ce929d0e0e4736"
    # Round 1: a 529, retried, then a tool call; round 2 (after the tool): the answer.
    prompt = (f"What is 6*7? {SECRET_PROMPT} [fake tool=calculate args={{\"expression\":\"6*7\"}} "
              f"status=529 times=1 say={SECRET_ANSWER}]")
    r = requests.post(server.url + "/stream", json={"prompt": prompt, "tools": ["calculate"]},
                      headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"}, timeout=30)
    assert r.status_code == 200 and b'"type":"done"' in r.content, r.content[-300:]
    texts = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert SECRET_ANSWER in "".join(t["content"] for t in texts if t["type"] == "text")
    names = {"chat claude-haiku-4-5", "upstream anthropic", "execute_tool calculate", "anthropic.messages.create"}
    deadline = time.monotonic() + 20
    while True:
        spans = [s for _, s in _spans(bodies) if s.trace_id.hex() == trace_id]
        if (names <= {s.name for s in spans} and sum(s.name == "anthropic.messages.create" for s in spans) >= 3
                or time.monotonic() > deadline):
            break
        time.sleep(0.1)
    orphans = [s.name for _, s in _spans(bodies) if s.trace_id.hex() != trace_id and s.name.startswith("anthropic")]
    assert not orphans, f"SDK spans in a trace of their own: {orphans}"
    by = by_name(spans)
    assert set(by) == names, sorted(by)
    (chat,) = by["chat claude-haiku-4-5"]
    assert chat.parent_span_id.hex() == PARENT_ID
    rounds = by["upstream anthropic"]
    assert len(rounds) == 2 and all(s.parent_span_id == chat.span_id for s in rounds)
    calls = by["anthropic.messages.create"]
    assert len(calls) == 3, "two attempts in the first round (a 529, then the tool call), one in the second"
    parents = sorted(sum(c.parent_span_id == u.span_id for c in calls) for u in rounds)
    assert parents == [1, 2], "each call is a child of the upstream span of its own round"
    # The SDK sends its span's context upstream: the provider's side of the trace joins it too.
    sent = [req.headers.get("traceparent", "") for req in fresh.requests]
    assert sent and all(t.split("-")[1] == trace_id for t in sent), sent
    # Sluice's privacy rule, whatever ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE says.
    for span in spans:
        text = _all_text(span)
        assert SECRET_PROMPT not in text and SECRET_ANSWER not in text and "6*7" not in text, (span.name, text)
    assert "Failed to detach context" not in server.log()


def test_a_span_made_inside_an_operators_tool_is_in_the_callers_trace(
    otlp_upstream: tuple[Gunicorn, list[bytes]]
) -> None:
    """A tool runs in a greenlet of its own: it starts in the producer's context, not an empty one."""
    server, bodies = otlp_upstream
    trace_id = "7ef92f3577b34da6a3ce929d0e0e4736"
    prompt = '[fake tool=traced_lookup args={"item":"pen"} say=Done]'
    r = requests.post(server.url + "/stream", json={"prompt": prompt, "tools": ["traced_lookup"]},
                      headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"}, timeout=30)
    assert r.status_code == 200 and b"pen: in stock" in r.content, r.content[-300:]
    deadline = time.monotonic() + 20
    while True:
        spans = [s for _, s in _spans(bodies)]
        names = {s.name for s in spans}
        if {"operator lookup", "execute_tool traced_lookup"} <= names or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    by = by_name(spans)
    (tool,) = by["execute_tool traced_lookup"]
    (own,) = by["operator lookup"]
    assert own.trace_id.hex() == trace_id and tool.trace_id.hex() == trace_id
    assert own.parent_span_id == tool.span_id, "the operator's span is a child of the tool's span"


def test_the_anthropic_sdk_records_content_only_when_sluice_logs_content(monkeypatch: pytest.MonkeyPatch) -> None:
    """The option Sluice gives the SDK client, whatever ANTHROPIC_OPEN_TELEMETRY_* says."""
    import anthropic

    from app.providers.anthropic import telemetry_option

    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE", "content")

    def resolved(**option: bool) -> Any:
        return anthropic.Anthropic(api_key="k", open_telemetry=telemetry_option(**option)).open_telemetry

    assert resolved(traces=True, content=False)["traces"]["content_mode"] == "metadata_only"
    assert resolved(traces=True, content=True)["traces"]["content_mode"] == "content"
    assert resolved(traces=False, content=True)["traces"]["enabled"] is False, "no SDK spans when Sluice traces not"
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
    assert resolved(traces=True, content=False)["traces"]["enabled"] is False


def test_a_recovery_round_has_its_own_sdk_span_in_the_same_trace(
    otlp_upstream: tuple[Gunicorn, list[bytes]], fresh: FakeUpstream
) -> None:
    server, bodies = otlp_upstream
    trace_id = "6df92f3577b34da6a3ce929d0e0e4736"
    # The answer drops after 3 tokens; Sluice continues it in a second upstream call.
    r = requests.post(server.url + "/stream", json={"prompt": "story [fake tokens=6 drop_after=3]"},
                      headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"}, timeout=30)
    assert r.status_code == 200 and b"upstream_reconnected" in r.content, r.content[-300:]
    deadline = time.monotonic() + 20
    while True:
        spans = [s for _, s in _spans(bodies) if s.trace_id.hex() == trace_id]
        if sum(s.name == "anthropic.messages.create" for s in spans) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    by = by_name(spans)
    rounds, calls = by["upstream anthropic"], by.get("anthropic.messages.create", [])
    assert len(rounds) == 2 and len(calls) == 2, sorted(s.name for s in spans)
    assert {c.parent_span_id for c in calls} == {u.span_id for u in rounds}
    assert "Failed to detach context" not in server.log()
