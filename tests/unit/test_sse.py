"""The SSE encoder against exact bytes, and read back by a WHATWG-conformant parser."""

from __future__ import annotations

import json

import pytest

from app import sse
from tests.support.sse import SSEParser, parse

ENCODE_TABLE = [
    # (data, id, expected bytes)
    ("hello", None, b"data: hello\n\n"),
    ("hello", "abc:1", b"id: abc:1\ndata: hello\n\n"),
    ("a\nb", "s:2", b"id: s:2\ndata: a\ndata: b\n\n"),
    ("a\r\nb\rc", None, b"data: a\ndata: b\ndata: c\n\n"),
    ("trailing\n", None, b"data: trailing\ndata: \n\n"),
    ("", None, b"data: \n\n"),
    ("caf\u00e9 \u2603 \U0001f600", None, "data: caf\u00e9 \u2603 \U0001f600\n\n".encode()),
    (": not a comment", None, b"data: : not a comment\n\n"),
    ("[DONE]", "s:10", b"id: s:10\ndata: [DONE]\n\n"),
]


@pytest.mark.parametrize(("data", "event_id", "expected"), ENCODE_TABLE)
def test_encode_exact_bytes(data: str, event_id: str | None, expected: bytes) -> None:
    assert sse.encode(data, id=event_id) == expected


@pytest.mark.parametrize(("data", "event_id", "expected"), ENCODE_TABLE)
def test_parser_reads_back_what_was_encoded(data: str, event_id: str | None, expected: bytes) -> None:
    events = parse(sse.encode(data, id=event_id))
    assert len(events) == 1
    # The spec normalises every line break in data to LF.
    assert events[0].data == data.replace("\r\n", "\n").replace("\r", "\n")
    assert events[0].id == (event_id or "")


def test_json_payload_keeps_newlines_and_unicode_in_one_data_line() -> None:
    payload = {"type": "text", "content": "line1\nline2\r\n<b>\u00e9</b>"}
    wire = sse.encode(sse.dumps(payload), id="x:1")
    assert wire.count(b"data: ") == 1  # JSON escapes the newlines
    assert parse(wire)[0].json == payload


def test_retry_comment_and_event_fields() -> None:
    assert sse.retry(3000) == b"retry: 3000\n\n"
    assert sse.retry_field(3000) + sse.encode("x", id="a:1") == sse.encode("x", id="a:1", retry=3000)
    assert sse.comment("ping") == b": ping\n\n"
    assert sse.encode("x", event="update", retry=5) == b"retry: 5\nevent: update\ndata: x\n\n"
    parser = SSEParser()
    events = parser.feed(sse.retry(3000) + sse.PING + sse.encode("x", id="a:1"))
    assert [e.data for e in events] == ["x"]
    assert parser.retry == 3000 and parser.comments == ["ping"]


@pytest.mark.parametrize("content", ["hi", "caf\u00e9 \"q\" <b>", "line\nbreak", ""])
def test_hot_path_templates_are_what_encode_makes(content: str) -> None:
    prefix = sse.id_prefix("s1")
    data = sse.dumps({"type": "text", "content": content})
    assert sse.EVENT % (prefix, 7, data.encode()) == sse.encode(data, id="s1:7")
    assert sse.TEXT_EVENT % (prefix, 7, json.dumps(content, ensure_ascii=False).encode()) == sse.encode(data, id="s1:7")
    assert sse.ID_LINE % (prefix, 7) == b"id: s1:7\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_id_with_line_break_or_nul_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        sse.encode("x", id=bad)


def test_parser_handles_chunks_split_anywhere() -> None:
    wire = sse.retry(3000) + b"".join(sse.encode(f"caf\u00e9 {i}\nline", id=f"s:{i}") for i in range(5))
    for size in (1, 2, 3, 7):
        parser = SSEParser()
        events = []
        for start in range(0, len(wire), size):
            events += parser.feed(wire[start : start + size])
        assert [e.data for e in events] == [f"caf\u00e9 {i}\nline" for i in range(5)]
        assert [e.id for e in events] == [f"s:{i}" for i in range(5)]


def test_parser_follows_whatwg_rules() -> None:
    raw = (
        b"data:no space\n\n"  # one optional space after the colon
        b"data\n\n"  # a field with no colon: empty data
        b"id: keep\r\ndata: crlf\r\n\r\n"
        b"id: bad\0id\ndata: nul id ignored\n\n"
        b"event: named\ndata: x\n\n"
        b": comment only\n\n"
        b"id: \ndata: reset id\n\n"
    )
    events = parse(raw)
    assert [(e.data, e.id, e.event) for e in events] == [
        ("no space", "", "message"),
        ("", "", "message"),
        ("crlf", "keep", "message"),
        ("nul id ignored", "keep", "message"),
        ("x", "keep", "named"),
        ("reset id", "", "message"),
    ]


def test_a_lone_surrogate_from_upstream_stays_a_json_escape() -> None:
    # An upstream may split a surrogate pair across two deltas, each as a \u escape.
    halves = [json.loads('"\\ud83d"'), json.loads('"\\ude00"')]
    wires = [sse.encode(sse.dumps({"type": "text", "content": half})) for half in halves]
    assert [w.decode("utf-8") for w in wires]  # valid UTF-8 on the wire
    texts = [json.loads(parse(w)[0].data)["content"] for w in wires]
    assert "".join(texts).encode("utf-16", "surrogatepass").decode("utf-16") == "\U0001f600"
