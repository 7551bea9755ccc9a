"""A WHATWG-conformant event-stream parser for tests, and a small streaming client.

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
Lines end with CRLF, LF or CR; a line starting with ':' is a comment; `data` lines join with
'\\n'; an event is dispatched on a blank line, and only if its data buffer is not empty; the last
event id persists across events; an `id` containing NUL is ignored.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body, which must be complete (the last chunk, then nothing)."""
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n", "nothing follows the last chunk"
            return out
        assert body[size:size + 2] == b"\r\n"
        out, body = out + body[:size], body[size + 2:]


@dataclass
class Event:
    """A dispatched event as `EventSource` would see it."""

    data: str
    id: str = ""
    event: str = "message"
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.data)

    @property
    def type(self) -> str:
        return "[DONE]" if self.data == "[DONE]" else self.json["type"]

    @property
    def seq(self) -> int:
        return int(self.id.rsplit(":", 1)[1])


class SSEParser:
    """Feed bytes, get events (plus comments and `retry` values seen)."""

    def __init__(self) -> None:
        self._buf = ""
        self._pending_cr = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments: list[str] = []
        self._decoder_buf = b""

    def feed(self, chunk: bytes) -> list[Event]:
        self._decoder_buf += chunk
        try:
            text = self._decoder_buf.decode("utf-8")
            self._decoder_buf = b""
        except UnicodeDecodeError as exc:  # a multi-byte char split across chunks
            text = self._decoder_buf[: exc.start].decode("utf-8")
            self._decoder_buf = self._decoder_buf[exc.start :]
        out: list[Event] = []
        for line in self._lines(text):
            ev = self._line(line)
            if ev is not None:
                out.append(ev)
        return out

    def _lines(self, text: str) -> Iterator[str]:
        for ch in text:
            if self._pending_cr:
                self._pending_cr = False
                if ch == "\n":
                    continue
            if ch == "\r":
                self._pending_cr = True
                yield self._take()
            elif ch == "\n":
                yield self._take()
            else:
                self._buf += ch

    def _take(self) -> str:
        line, self._buf = self._buf, ""
        return line

    def _line(self, line: str) -> Event | None:
        if line == "":
            if not self._data:
                self._event = ""
                return None
            ev = Event(data="\n".join(self._data), id=self.last_event_id, event=self._event or "message")
            self._data, self._event = [], ""
            return ev
        if line.startswith(":"):
            self.comments.append(line[1:].lstrip(" "))
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None


def parse(raw: bytes) -> list[Event]:
    """Parse a whole body."""
    return SSEParser().feed(raw)


class Stream:
    """A streaming HTTP response read as SSE events."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.parser = SSEParser()
        self.events: list[Event] = []
        self._iter = response.iter_content(chunk_size=None)
        self._unread: list[Event] = []  # parsed from a chunk, not yet handed out

    def __iter__(self) -> Iterator[Event]:
        # Events parsed from one chunk wait in `_unread`, so that a loop that stops early
        # (`until`) does not lose the rest of its chunk to the next loop.
        while True:
            while self._unread:
                yield self._unread.pop(0)
            chunk = next(self._iter, None)
            if chunk is None:
                return
            for ev in self.parser.feed(chunk):
                self.events.append(ev)
                self._unread.append(ev)

    def until(self, predicate: Any) -> Event:
        """Read until an event matches `predicate` (a type string or a callable)."""
        for ev in self:
            if (ev.type == predicate) if isinstance(predicate, str) else predicate(ev):
                return ev
        raise AssertionError(f"stream ended before {predicate!r}; got {[e.data for e in self.events]}")

    def rest(self) -> list[Event]:
        """Read to the end; return every event received so far."""
        for _ in self:
            pass
        return self.events

    @property
    def stream_id(self) -> str:
        return self.events[0].id.rsplit(":", 1)[0]

    def close(self) -> None:
        self.response.close()


def open_stream(url: str, *, method: str = "GET", timeout: float = 10.0, **kwargs: Any) -> Stream:
    """Open an SSE response (`requests`, streaming)."""
    headers = {"Accept": "text/event-stream", **kwargs.pop("headers", {})}
    resp = requests.request(method, url, stream=True, timeout=timeout, headers=headers, **kwargs)
    return Stream(resp)


def types(events: Iterable[Event]) -> list[str]:
    """The `type` of each event, `[DONE]` included."""
    return [e.type for e in events]


def text_of(events: Iterable[Event]) -> str:
    """The answer text carried by `text` events."""
    return "".join(e.json["content"] for e in events if e.data != "[DONE]" and e.json["type"] == "text")


def reasoning_of(events: Iterable[Event]) -> str:
    """The model's thinking carried by `reasoning` events."""
    return "".join(e.json["content"] for e in events if e.data != "[DONE]" and e.json["type"] == "reasoning")


def unread_get(base_url: str, target: str) -> socket.socket:
    """Send `GET target` from a client that will read nothing (a 4 KB receive buffer)."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    return sock
