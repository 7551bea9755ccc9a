"""The streamed body read off the connection (`app/providers/_body.py`).

Chunked framing undone at every read boundary; bodies framed otherwise (content-length, the
connection's close) or compressed; a body cut or badly framed mid-answer; the connection kept
for the next stream once the body ended, and not held when its end does not come.
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Callable, Iterator

import httpx2
import pytest

from app.errors import UpstreamError
from app.providers._body import MAX_LINE, Dechunker
from app.providers.anthropic import AnthropicProvider, telemetry_option
from app.providers.base import Finish, Provider, ProviderEvent, TextDelta
from app.providers.openai import OpenAIProvider
from tests.fake_upstream import FakeUpstream
from tests.providers.conftest import make_request, text_of
from tests.support.scripted import Answer, ScriptedUpstream, scripted_upstreams

pytestmark = pytest.mark.timeout(30)


# -- Dechunker -------------------------------------------------------------------------------


def chunk(data: bytes, ext: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(data), ext, data)


PAYLOADS = [b"event: a\ndata: 1\n\n", b"y" * 300, b"\r\n0\r\n\r\n inside a chunk\n", b"z"]
WIRE = (
    chunk(PAYLOADS[0], b";name=value")
    + chunk(PAYLOADS[1])
    + chunk(PAYLOADS[2])
    + chunk(PAYLOADS[3])
    + b"0\r\nx-trailer: 1\r\n\r\n"
)
PAYLOAD = b"".join(PAYLOADS)


def dechunk(pieces: list[bytes]) -> tuple[bytes, Dechunker]:
    d = Dechunker()
    out = b"".join(d.feed(p) for p in pieces)
    return out, d


@pytest.mark.parametrize("at", range(len(WIRE) + 1))
def test_dechunk_split_at_every_byte(at: int) -> None:
    out, d = dechunk([WIRE[:at], WIRE[at:]])
    assert out == PAYLOAD
    assert d.done and d.extra == b""


def test_dechunk_one_byte_at_a_time() -> None:
    out, d = dechunk([WIRE[i : i + 1] for i in range(len(WIRE))])
    assert out == PAYLOAD
    assert d.done


def test_dechunk_three_pieces_every_pair_of_boundaries() -> None:
    wire = chunk(b"ab") + chunk(b"c", b"; x=1") + chunk(b"d" * 17) + b"0\r\n\r\n"
    for i in range(len(wire) + 1):
        for j in range(i, len(wire) + 1):
            out, d = dechunk([wire[:i], wire[i:j], wire[j:]])
            assert (out, d.done) == (b"abc" + b"d" * 17, True), (i, j)


def test_dechunk_not_done_until_the_last_chunk_and_trailer() -> None:
    d = Dechunker()
    assert d.feed(chunk(b"abc")) == b"abc"
    assert not d.done
    d.feed(b"0\r\n")
    assert not d.done  # the blank line closing the trailer is still to come
    d.feed(b"\r\n")
    assert d.done


def test_dechunk_keeps_bytes_after_the_end() -> None:
    _, d = dechunk([chunk(b"abc") + b"0\r\n\r\nHTTP/1.1 200 OK\r\n"])
    assert d.done and d.extra == b"HTTP/1.1 200 OK\r\n"


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\nhello\r\n",  # not hex
        b"\r\nhello\r\n",  # no size
        b"-5\r\nhello\r\n",
        b"1" * 17 + b"\r\n",  # absurd size
        b"5\r\nhelloXX",  # no CRLF after the payload
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\rX",
        b"5" * (MAX_LINE + 1),  # a size line that never ends
    ],
)
def test_dechunk_rejects_bad_framing(wire: bytes) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        dechunk([wire])


# -- through a provider, against a scripted loopback server ------------------------------------


def sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


ANTHROPIC_EVENTS = [
    sse("message_start", '{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}'),
    sse("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'),
    *[
        sse(
            "content_block_delta",
            f'{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"t{i} "}}}}',
        )
        for i in range(3)
    ],
    sse("content_block_stop", '{"type":"content_block_stop","index":0}'),
    sse("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}'),
    sse("message_stop", '{"type":"message_stop"}'),
]
OPENAI_EVENTS = [
    *[f'data: {{"choices":[{{"index":0,"delta":{{"content":"t{i} "}}}}]}}\n\n'.encode() for i in range(3)],
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]

@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Answer], ScriptedUpstream]]:
    yield from scripted_upstreams(monkeypatch)


def test_a_closed_scripted_upstream_accepts_nothing_more() -> None:
    """The cause of the rare `test_body_split_in_small_writes[1-openai]` failure (issue 19, 3b):
    the previous test's accepting thread outlived its listener, and, entering accept() with the
    descriptor number the next listener had been given, answered the OpenAI request with the
    Anthropic script (a whole body without a finish_reason). Once closed, no thread of a
    scripted upstream is left to accept, whatever descriptor a later listener gets."""
    first = ScriptedUpstream(chunked_answer(ANTHROPIC_EVENTS))
    first.close()
    assert not first.acceptor.is_alive()


def head(*fields: str) -> bytes:
    return (
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n"
    ).encode()


def chunked_answer(events: list[bytes], *, piece: int = 0, last_chunk: bool = True) -> Answer:
    """Each event its own chunk; with `piece`, the whole answer sent `piece` bytes at a time."""
    wire = (
        head("transfer-encoding: chunked") + b"".join(chunk(e) for e in events) + (b"0\r\n\r\n" if last_chunk else b"")
    )

    def answer(sock: socket.socket) -> None:
        if not piece:
            sock.sendall(wire)
        else:
            for i in range(0, len(wire), piece):
                sock.sendall(wire[i : i + piece])
                time.sleep(0.0005)
        if not last_chunk:
            while sock.recv(65536):  # hold the body open until the client closes
                pass
            raise OSError("client closed")

    return answer


CASES: dict[str, tuple[type[Provider], list[bytes]]] = {
    "anthropic": (AnthropicProvider, ANTHROPIC_EVENTS),
    "openai": (OpenAIProvider, OPENAI_EVENTS),
}


def run(provider: Provider) -> list[ProviderEvent]:
    return list(provider.stream(make_request("hi")))


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("piece", [1, 7, 64])
def test_body_split_in_small_writes(scripted: Callable[[Answer], ScriptedUpstream], name: str, piece: int) -> None:
    cls, events = CASES[name]
    scripted(chunked_answer(events, piece=piece))
    got = run(cls())
    assert text_of(got) == "t0 t1 t2 "
    assert got[-1] == Finish("end_turn")


@pytest.mark.parametrize("name", list(CASES))
def test_gzip_body(scripted: Callable[[Answer], ScriptedUpstream], name: str) -> None:
    cls, events = CASES[name]
    body = gzip.compress(b"".join(events))

    def answer(sock: socket.socket) -> None:
        sock.sendall(
            head("transfer-encoding: chunked", "content-encoding: gzip")
            + chunk(body[:40])
            + chunk(body[40:])
            + b"0\r\n\r\n"
        )

    scripted(answer)
    got = run(cls())
    assert text_of(got) == "t0 t1 t2 "
    assert got[-1] == Finish("end_turn")


@pytest.mark.parametrize("name", list(CASES))
def test_content_length_body(scripted: Callable[[Answer], ScriptedUpstream], name: str) -> None:
    cls, events = CASES[name]
    body = b"".join(events)
    scripted(lambda sock: sock.sendall(head(f"content-length: {len(body)}") + body))
    provider = cls()
    for _ in range(2):
        got = run(provider)
        assert text_of(got) == "t0 t1 t2 "
        assert got[-1] == Finish("end_turn")


@pytest.mark.parametrize("name", list(CASES))
def test_body_delimited_by_close(scripted: Callable[[Answer], ScriptedUpstream], name: str) -> None:
    cls, events = CASES[name]

    def answer(sock: socket.socket) -> None:
        sock.sendall(head("connection: close") + b"".join(events))
        sock.shutdown(socket.SHUT_WR)
        raise OSError("closed")

    server = scripted(answer)
    provider = cls()
    for _ in range(2):
        got = run(provider)
        assert text_of(got) == "t0 t1 t2 "
    assert server.accepted == 2


@pytest.mark.parametrize("name", list(CASES))
def test_connection_kept_for_the_next_stream(scripted: Callable[[Answer], ScriptedUpstream], name: str) -> None:
    cls, events = CASES[name]
    server = scripted(chunked_answer(events))
    provider = cls()
    for _ in range(3):
        assert text_of(run(provider)) == "t0 t1 t2 "
    assert server.requests == 3
    assert server.accepted == 1


def test_connection_kept_with_every_provider(provider: Provider, upstream_env: FakeUpstream) -> None:
    for i in range(3):
        events = list(provider.stream(make_request(f"x{i} [fake tokens=3]")))
        assert isinstance(events[-1], Finish)
    peers = {r.peer for r in upstream_env.requests}
    assert len(upstream_env.requests) == 3 and len(peers) == 1


@pytest.mark.parametrize("name", list(CASES))
def test_missing_last_chunk_does_not_hold_the_end(scripted: Callable[[Answer], ScriptedUpstream], name: str) -> None:
    cls, events = CASES[name]
    server = scripted(chunked_answer(events, last_chunk=False))
    provider = cls()
    t0 = time.monotonic()
    got = run(provider)
    assert time.monotonic() - t0 < 1.0
    assert got[-1] == Finish("end_turn")
    assert server.closed.wait(2)  # not reusable: closed at once
    assert text_of(run(provider)) == "t0 t1 t2 "
    assert server.accepted == 2


@pytest.mark.parametrize("name", list(CASES))
def test_bytes_after_the_end_do_not_hold_it(scripted: Callable[[Answer], ScriptedUpstream], name: str) -> None:
    cls, events = CASES[name]

    def answer(sock: socket.socket) -> None:
        sock.sendall(head("transfer-encoding: chunked") + b"".join(chunk(e) for e in events))
        while True:  # more chunks after the terminal event, never the last one
            sock.sendall(chunk(b": more\n\n"))
            time.sleep(0.005)

    server = scripted(answer)
    t0 = time.monotonic()
    got = run(cls())
    assert time.monotonic() - t0 < 1.0
    assert got[-1] == Finish("end_turn")
    assert server.closed.wait(2)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_framing_mid_answer_is_a_lost_connection(scripted: Callable[[Answer], ScriptedUpstream], name: str) -> None:
    cls, events = CASES[name]

    def answer(sock: socket.socket) -> None:
        sock.sendall(head("transfer-encoding: chunked") + chunk(events[0]) + chunk(events[1]) + chunk(events[2]))
        time.sleep(0.05)
        sock.sendall(b"zz\r\n" + events[3] + b"\r\n")
        time.sleep(1)

    scripted(answer)
    gen = cls().stream(make_request("hi"))
    got: list[ProviderEvent] = []
    with pytest.raises(UpstreamError) as caught:
        for event in gen:
            got.append(event)
    assert caught.value.type == "connection"
    assert "in the middle of the answer" in str(caught.value)
    assert any(isinstance(e, TextDelta) for e in got)


@pytest.mark.parametrize("name", list(CASES))
def test_body_cut_mid_chunk_is_a_lost_connection(scripted: Callable[[Answer], ScriptedUpstream], name: str) -> None:
    cls, events = CASES[name]

    def answer(sock: socket.socket) -> None:
        wire = chunk(events[2])
        sock.sendall(head("transfer-encoding: chunked") + chunk(events[0]) + chunk(events[1]) + wire[:-10])
        sock.shutdown(socket.SHUT_WR)
        raise OSError("closed")

    scripted(answer)
    with pytest.raises(UpstreamError) as caught:
        run(cls())
    assert caught.value.type == "connection"
    assert "in the middle of the answer" in str(caught.value)


def test_read_off_the_connection_with_opentelemetry_on(scripted: Callable[[Answer], ScriptedUpstream]) -> None:
    """With a global tracer provider (Sluice's tracing sets one), the Anthropic SDK wraps the body
    in its span-ending stream: the body is still read off the connection, and the connection kept."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if not hasattr(trace.get_tracer_provider(), "add_span_processor"):
        trace.set_tracer_provider(TracerProvider())  # once per process; later tests keep it
    memory = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))  # type: ignore[attr-defined]
    server = scripted(chunked_answer(ANTHROPIC_EVENTS))
    provider = AnthropicProvider(open_telemetry=telemetry_option(traces=True, content=False))  # as ProviderPool's
    for _ in range(3):
        assert text_of(run(provider)) == "t0 t1 t2 "
    assert server.requests == 3
    assert server.accepted == 1
    calls = [s for s in memory.get_finished_spans() if s.name == "anthropic.messages.create"]
    assert len(calls) == 3, "the SDK's span of each call ends when its body is closed"
    memory.shutdown()
