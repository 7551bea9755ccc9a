"""The lean SSE parser: input bytes -> exact (event, data) pairs, whatever the read sizes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial

import pytest

from app.providers._sse_parser import SSEvent, iter_events_from


def iter_events(chunks: Iterable[bytes]) -> Iterator[SSEvent]:
    """The parser over these chunks, read one at a time as the providers read `RawBody.read`."""
    return iter_events_from(partial(next, iter(chunks), None))

CASES: list[tuple[str, bytes, list[tuple[bytes, bytes]]]] = [
    ("one event", b"event: ping\ndata: {}\n\n", [(b"ping", b"{}")]),
    ("default name", b"data: x\n\n", [(b"message", b"x")]),
    ("no space after colon", b"event:a\ndata:x\n\n", [(b"a", b"x")]),
    ("only one space is dropped", b"data:  x \n\n", [(b"message", b" x ")]),
    ("data lines joined by LF", b"data: a\ndata: b\ndata:\n\n", [(b"message", b"a\nb\n")]),
    ("CRLF line ends", b"event: e\r\ndata: x\r\n\r\n", [(b"e", b"x")]),
    ("lone CR line ends", b"event: e\rdata: x\r\rdata: y\r\r", [(b"e", b"x"), (b"message", b"y")]),
    (
        "mixed line ends",
        b"data: a\r\n\ndata: b\r\rdata: c\n\r\n",
        [(b"message", b"a"), (b"message", b"b"), (b"message", b"c")],
    ),
    ("comments ignored", b": keep-alive\n\n:x\ndata: y\n: z\n\n", [(b"message", b"y")]),
    ("no data, no event", b"event: ping\n\nid: 3\nretry: 10\n\n", []),
    ("unknown fields and id ignored", b"id: 7\nfoo: bar\nretry: 5\ndata: x\n\n", [(b"message", b"x")]),
    ("field without colon", b"data\n\n", [(b"message", b"")]),
    ("blank-line runs", b"\n\n\ndata: a\n\n\n\ndata: b\n\n", [(b"message", b"a"), (b"message", b"b")]),
    ("event name resets per event", b"event: a\ndata: 1\n\ndata: 2\n\n", [(b"a", b"1"), (b"message", b"2")]),
    ("last event name wins", b"event: a\nevent: b\ndata: 1\n\n", [(b"b", b"1")]),
    ("partial event at EOF discarded", b"data: a\n\ndata: cut", [(b"message", b"a")]),
    ("partial event at EOF with one LF", b"data: a\n\nevent: x\ndata: cut\n", [(b"message", b"a")]),
    ("BOM at stream start", b"\xef\xbb\xbfdata: x\n\n", [(b"message", b"x")]),
    ("colon in value kept", b'data: {"a":"b: c"}\n\n', [(b"message", b'{"a":"b: c"}')]),
    ("utf-8 kept as bytes", "data: é✓\n\n".encode(), [(b"message", "é✓".encode())]),
    ("empty stream", b"", []),
    # The shapes the APIs send (a fast path in the splitter) and their near misses.
    ("named event", b"event: delta\ndata: {}\n\n", [(b"delta", b"{}")]),
    ("empty event name", b"event: \ndata: x\n\n", [(b"message", b"x")]),
    ("name with two spaces", b"event:  a\ndata: x\n\n", [(b" a", b"x")]),
    ("data before the name", b"data: x\nevent: a\n\n", [(b"a", b"x")]),
    ("named, two data lines", b"event: a\ndata: x\ndata: y\n\n", [(b"a", b"x\ny")]),
    ("named, a comment after", b"event: a\ndata: x\n: c\n\n", [(b"a", b"x")]),
    ("named, data without space", b"event: a\ndata:x\n\n", [(b"a", b"x")]),
    ("data with a colon, one line", b"data: a: b\n\n", [(b"message", b"a: b")]),
]


@pytest.mark.parametrize(("name", "wire", "expected"), CASES, ids=[c[0] for c in CASES])
def test_whole_body(name: str, wire: bytes, expected: list[tuple[bytes, bytes]]) -> None:
    assert list(iter_events([wire])) == expected


@pytest.mark.parametrize(("name", "wire", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_split_point_gives_the_same_events(name: str, wire: bytes, expected: list[tuple[bytes, bytes]]) -> None:
    # A read may end anywhere: inside a CRLF, between the two LFs of a separator, mid-field.
    for cut in range(len(wire) + 1):
        assert list(iter_events([wire[:cut], wire[cut:]])) == expected, cut
    assert list(iter_events([wire[i : i + 1] for i in range(len(wire))])) == expected


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    reads = iter([b"data: 1\n\ndata: 2\n", b"\n", b"data: 3"])
    events = iter_events(reads)
    assert next(events) == (b"message", b"1")
    assert next(events) == (b"message", b"2")
    assert list(events) == []


def test_many_events_in_one_large_read() -> None:
    body = b"".join(b"event: content_block_delta\ndata: {\"i\":%d}\n\n" % i for i in range(10_000))
    got = list(iter_events([body[i : i + 65536] for i in range(0, len(body), 65536)]))
    assert len(got) == 10_000
    assert got[-1] == (b"content_block_delta", b'{"i":9999}')
