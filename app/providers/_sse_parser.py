"""A lean Server-Sent Events parser over a raw byte stream: `(event, data)` pairs, as bytes.

(It reads what an upstream sends; `app.sse` writes what Sluice sends.)

The providers read their upstream's streaming body with this instead of the SDKs' decoders,
which build a line object per line and an event object per event. Here each network read is
searched for whole events at once (`bytes.find` on the block separator), and an event costs
one `split` of its few lines.

It keeps the rules of the WHATWG "event stream interpretation" that an upstream can exercise
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

- lines end with LF, CRLF or a lone CR (a CRLF split across two reads is one line end);
- a leading UTF-8 byte order mark is ignored;
- `data:` lines of one event are joined with LF; one leading space after the colon is dropped;
- a line starting with `:` is a comment (keep-alives); unknown fields are ignored, and so are
  `id:` and `retry:` (nothing here reconnects);
- an event without any `data` line is not dispatched; the event name defaults to `message`;
- a partial event at the end of the stream (no blank line after it) is discarded: a stream cut
  off mid-event yields nothing of that event.

Everything stays bytes: `jiter.from_json` parses bytes directly, and names compare as bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

SSEvent = tuple[bytes, bytes]
"""(event name, data) of one dispatched event."""

_BOM = b"\xef\xbb\xbf"


def iter_events_from(read: Callable[[], bytes | None]) -> Iterator[SSEvent]:
    """The `(event, data)` pairs of the chunks (any sizes) that `read()` returns: it is called
    for each chunk (b"": none this time) until it returns None.

    The providers pass `RawBody.read`: a plain call, where iterating a generator would add a
    level to the C stack that the producer's greenlet saves while it waits (per open stream).
    """
    buf = b""
    scan = 0  # where the next search for a block end starts (what is before it has none)
    pending_cr = False  # the previous chunk ended with CR: a LF opening this one is its CRLF
    first = True
    while (chunk := read()) is not None:
        if not chunk:
            continue
        if first:
            chunk = buf + chunk  # until the first 3 bytes are in, `buf` holds only them
            if len(chunk) < 3 and _BOM.startswith(chunk):
                buf = chunk
                continue
            first, buf = False, b""
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
                if not chunk:
                    continue
        if pending_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        if b"\r" in chunk:
            pending_cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            pending_cr = False
        buf = buf + chunk if buf else chunk
        start = 0
        while True:
            end = buf.find(b"\n\n", scan)
            if end < 0:
                break
            event = _parse_block(buf[start:end])
            if event is not None:
                yield event
            start = scan = end + 2
        if start:
            buf = buf[start:]
        # The last byte may be the first LF of a separator whose second LF is still to come.
        scan = max(len(buf) - 1, 0)
        # Not kept while the next read waits (the greenlet's frames live as long as the stream).
        del chunk
        event = None


def _parse_block(block: bytes) -> SSEvent | None:
    """One event's lines (LF-separated, no blank line) -> (event, data), or None if no data."""
    # The two shapes the APIs send, one line `data: ...` or `event: name` + `data: ...`, give
    # the same pair as the general loop below, for less.
    if block.startswith(b"data: "):
        if b"\n" not in block:
            return b"message", block[6:]
    elif block.startswith(b"event: "):
        nl = block.find(b"\n")
        if nl > 7 and block.startswith(b"data: ", nl + 1) and block.find(b"\n", nl + 1) < 0:
            return block[7:nl], block[nl + 7 :]
    name = b""
    data: list[bytes] | None = None
    for line in block.split(b"\n"):
        field, colon, value = line.partition(b":")
        if not field:
            continue  # a comment (":..."), or an empty line left by a run of blank lines
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            if data is None:
                data = [value]
            else:
                data.append(value)
        elif field == b"event":
            name = value
    if data is None:
        return None
    return name or b"message", data[0] if len(data) == 1 else b"\n".join(data)
