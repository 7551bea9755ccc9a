"""A streaming 200 body, read straight off the HTTP/1.1 connection the SDK opened.

The SDK (httpx2 -> httpcore2 -> h11) sends the request and parses the status line and headers,
so auth, base URL, proxies, TLS, the pool and the typed errors for a non-2xx answer stay the
SDK's. Reading the body through that stack too costs, per network read (and at a model's pace
each read carries one token), six generator layers, two context managers, a socket timeout
call and h11's event machinery. `RawBody` takes the socket instead: large reads, de-chunked in
one pass (`Dechunker`), one bytes object per read.

It also gives the connection back. A provider stops reading at the API's terminal event, before
the chunked body's last chunk, so httpcore2 used to close every connection when the response
was closed: each stream paid a new TCP (and TLS) handshake. `finish()` reads the body's end,
which follows the terminal event at once, and marks the connection reusable as h11 would have.

What it does not take over (the body is read through httpx2 as before): a compressed body
(`content-encoding` other than identity), HTTP/2, any transport other than httpcore2's HTTP/1.1
connection. Errors are raised as the httpx2 ones the SDK path raised, so they map unchanged:
a socket error `httpx2.ReadError`, a read timeout `httpx2.ReadTimeout`, a body cut short or
badly framed `httpx2.RemoteProtocolError`.

The HTTP client's internals this needs (the connection under the response, the bytes h11
read with the headers, telling h11 the body ended) are used in `app/seams/httpcore.py` only;
here is the reading: framing, de-chunking, errors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2

from app.seams import httpcore
from app.seams.httpcore import Unwrap

READ_SIZE = 64 * 1024
MAX_LINE = 4096  # bytes: a chunk-size or trailer line longer than this is a broken upstream
FINISH_WAIT = 0.05  # seconds to wait, after the terminal event, for the body's last chunk

_HEX = b"0123456789abcdefABCDEF"


class Dechunker:
    """HTTP/1.1 chunked transfer coding, undone incrementally: feed reads, get the payload.

    `done` once the last chunk and its trailer are in; bytes after them are in `extra`.
    Framing errors raise `httpx2.RemoteProtocolError`, as h11 would.
    """

    __slots__ = ("_left", "_pending", "_trailer", "done", "extra")

    def __init__(self) -> None:
        self._left = 0  # > 0: payload bytes of this chunk to come; -1: its CRLF; 0: a size line
        self._pending = b""  # an incomplete size line, CRLF or trailer line from the last read
        self._trailer = False
        self.done = False
        self.extra = b""

    def feed(self, data: bytes) -> bytes:
        """The payload `data` completes (b"" if none)."""
        if not self._left and not self._pending and not self._trailer:
            # The usual read at a model's pace: exactly one whole chunk (size line, payload, CRLF).
            nl = data.find(b"\r\n", 0, 18)
            if nl > 0:
                size = data[:nl]
                if not size.translate(None, _HEX):
                    n = int(size, 16)
                    if n and nl + n + 4 == len(data) and data.endswith(b"\r\n"):
                        return data[nl + 2 : -2]
        if self._pending:
            data = self._pending + data
            self._pending = b""
        end = len(data)
        pos = 0
        out: list[bytes] = []
        while pos < end:
            left = self._left
            if left > 0:
                stop = pos + left
                if stop >= end:
                    out.append(data[pos:] if pos else data)
                    self._left = -1 if stop == end else left - (end - pos)
                    break
                out.append(data[pos:stop])
                pos = stop
                left = self._left = -1
            if left < 0:
                if end - pos < 2:
                    self._pending = data[pos:]
                    if self._pending != b"\r":
                        raise _framing("no CRLF after a chunk")
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise _framing("no CRLF after a chunk")
                pos += 2
                self._left = 0
                continue
            nl = data.find(b"\r\n", pos)
            if nl < 0:
                self._pending = data[pos:]
                if len(self._pending) > MAX_LINE:
                    raise _framing("chunk line too long")
                break
            line = data[pos:nl]
            pos = nl + 2
            if self._trailer:
                if not line:
                    self.done = True
                    self.extra = data[pos:]
                    break
                continue  # a trailer field: nothing here uses one
            size = line.split(b";", 1)[0].rstrip(b" \t")
            if not size or len(size) > 16 or size.translate(None, _HEX):
                raise _framing("bad chunk size")
            self._left = int(size, 16)
            if not self._left:
                self._trailer = True
        return out[0] if len(out) == 1 else b"".join(out)


def _framing(what: str) -> httpx2.RemoteProtocolError:
    return httpx2.RemoteProtocolError(f"malformed chunked body: {what}")


class RawBody:
    """The body of `response` (status and headers read, body not), as byte chunks.

    `read()` it (or iterate it) for the payload, one chunk per network read; after the last event, `finish()`;
    then `close()` (instead of the response's own: that closes or pools the connection).
    """

    __slots__ = (
        "_response", "_stream", "_conn", "_sock", "_dechunker", "_left", "_ended", "_first", "_chunks",
    )

    def __init__(self, response: httpx2.Response, unwrap: Unwrap | None = None) -> None:
        # Read here, only the stream is kept: the SDK's response, request and their headers (a
        # tenth of an open stream's memory) are freed while the answer streams.
        self._response: httpx2.Response | None = response
        self._stream: Any = response.stream
        self._conn: Any = None  # the connection's handle (app.seams.httpcore), once taken over
        self._sock: Any = None
        self._dechunker: Dechunker | None = None
        self._left: int | None = None  # a content-length body: bytes still to come
        self._ended = False
        self._first = b""  # the body's bytes that came with the headers, still to be taken
        self._chunks: Iterator[bytes] | None = None  # read through httpx2: its iterator
        try:
            self._take_over(response, unwrap)
        except (OSError, ValueError):
            self._conn = None  # a bad content-length, a socket closed already: httpx2 reads it
            self._dechunker = self._left = None

    def _take_over(self, response: httpx2.Response, unwrap: Unwrap | None) -> None:
        headers = response.headers
        if headers.get("content-encoding", "identity").strip().lower() != "identity":
            return  # compressed: httpx2's decoders
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        left = None if chunked or "content-length" not in headers else int(headers["content-length"])
        read_timeout = (response.request.extensions.get("timeout") or {}).get("read")
        taken = httpcore.take_over(response.stream, read_timeout, unwrap)
        if taken is None:
            return  # HTTP/2, a mock transport, a TLS-in-TLS proxy, the shapes gone: httpx2 reads it
        # The bytes h11 received with the headers are the body's first (h11's buffer emptied:
        # it would hold the first read's memory for the whole stream).
        self._sock, self._first, self._conn = taken
        if chunked:
            self._dechunker = Dechunker()
        self._left = left
        self._response = None

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        if response is not None:
            if response.headers.get("content-encoding", "identity") == "identity":
                return response.iter_raw()
            return response.iter_bytes()
        return iter(self.read, None)

    def read(self) -> bytes | None:
        """The payload of the next network read (b"" if it carried none); None once the body ended.

        A plain call, not a generator: the providers' SSE splitter calls it (`iter_events_from`),
        so the producer's greenlet, blocked here, has one generator level less to save.
        """
        if self._conn is None:
            if self._chunks is None:
                self._chunks = iter(self)  # through httpx2
            return next(self._chunks, None)
        if self._first:
            data = self._take(self._first)
            self._first = b""
            return data
        if self._ended:
            return None
        try:
            raw = self._sock.recv(READ_SIZE)
        except TimeoutError:
            raise httpx2.ReadTimeout("timed out reading the streamed body") from None
        except OSError as exc:
            raise httpx2.ReadError(str(exc)) from None
        if not raw:
            if self._dechunker is None and self._left is None:
                self._ended = True  # a body delimited by the connection's close
                return None
            raise httpx2.RemoteProtocolError("the upstream closed the connection in the middle of the body")
        # `raw` is not kept past this call (a local of a returning call): `recv` carved it out of
        # a 64 KiB block, and one such small block kept per open stream fragments the heap.
        return self._take(raw)

    def _take(self, raw: bytes) -> bytes:
        """The payload of one read; notes the body's end."""
        dechunker = self._dechunker
        if dechunker is not None:
            data = dechunker.feed(raw)
            self._ended = dechunker.done
            return data
        if self._left is not None:
            if len(raw) >= self._left:
                raw = raw[: self._left]
                self._ended = True
            self._left -= len(raw)
        return raw

    def finish(self, wait: float = FINISH_WAIT) -> bool:
        """Read the rest of the body if it comes within `wait` s; True if the connection is reusable.

        Called after the API's terminal event: the body's last chunk follows it at once. If it
        does not come, nothing is lost: closing the response closes the connection.
        """
        if self._conn is None or self._dechunker is None:
            return False
        # A deadline for the whole, not per read: an upstream that keeps sending after its
        # terminal event must not hold the stream's end.
        deadline = time.monotonic() + wait
        try:
            if self._first:
                first, self._first = self._first, b""
                self._take(first)
            while not self._ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._sock.settimeout(left)
                raw = self._sock.recv(READ_SIZE)
                if not raw:
                    return False
                self._take(raw)  # payload after the terminal event: nothing reads it
        except (httpx2.TransportError, OSError):
            return False
        if self._dechunker.extra:
            return False
        return httpcore.give_back(self._conn)

    def close(self) -> None:
        """Close the response: its connection goes back to the pool if the body ended, else closes."""
        if self._response is not None:
            self._response.close()
        else:
            self._stream.close()
