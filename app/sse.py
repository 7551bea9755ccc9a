"""The Server-Sent Events wire format, and nothing else (no Flask, no I/O).

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
A field value must not contain CR or LF: the parser would end the line there. So `data` is
split into one `data:` line per line of the payload (the parser joins them back with LF), and
`id` / `event` are refused if they contain a line break or NUL (the spec ignores such an id).
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_SURROGATE = re.compile("[\ud800-\udfff]")

HEADERS: dict[str, str] = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    # nginx honours this per response: a second guard after `proxy_buffering off`.
    "X-Accel-Buffering": "no",
}


def dumps(payload: Any) -> str:
    """Compact JSON, unicode kept as is (smaller than \\u escapes, and valid UTF-8 on the wire)."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    # A lone surrogate has no UTF-8 form: an upstream can send half a pair as a \u escape in one
    # delta and the other half in the next. Keep each as the JSON escape it came in; a browser's
    # JSON.parse reads it back (and joins the two halves once the page concatenates the text).
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _field(name: str, value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")
    return f"{name}: {value}\n"


def encode(data: str, *, id: str | None = None, event: str | None = None, retry: int | None = None) -> bytes:
    """Encode one event: optional `retry`, `id`, `event`, then `data` lines and a blank line."""
    out = []
    if retry is not None:
        out.append(f"retry: {int(retry)}\n")
    if id is not None:
        out.append(_field("id", id))
    if event is not None:
        out.append(_field("event", event))
    for line in _LINE_BREAKS.split(data):
        out.append(f"data: {line}\n")
    out.append("\n")
    return "".join(out).encode("utf-8")


def id_prefix(stream_id: str) -> bytes:
    """`id: <stream_id>:`, which the seq of each event completes (a line break in it: ValueError)."""
    return _field("id", f"{stream_id}:")[:-1].encode()


def comment(text: str = "") -> bytes:
    """A comment line (ignored by EventSource; keeps proxies and idle timers from closing)."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"an SSE comment must be one line: {text!r}")
    return (f": {text}\n\n" if text else ":\n\n").encode("utf-8")


def retry_field(milliseconds: int) -> bytes:
    """The `retry:` line alone, to put in front of an event (`retry_field(ms) + entry.wire`)."""
    return b"retry: %d\n" % int(milliseconds)


def retry(milliseconds: int) -> bytes:
    """A lone `retry:` field: sets the browser's reconnection delay without dispatching an event."""
    return retry_field(milliseconds) + b"\n"


PING = comment("ping")


# -- one stored event ------------------------------------------------------------------------

DONE = "[DONE]"
_DONE_DATA = b"data: [DONE]\n\n"


class Entry(NamedTuple):
    """One event as stored and sent: its seq and its encoded SSE bytes (nothing else)."""

    seq: int
    wire: bytes

    @property
    def done(self) -> bool:
        """True for the `[DONE]` marker."""
        return self.wire.endswith(_DONE_DATA)

    @property
    def data(self) -> str:
        """The event's `data` text, read back from the wire bytes (for the Redis mirror)."""
        body = self.wire.split(b"\ndata: ", 1)[1]
        return body[:-2].decode("utf-8").replace("\ndata: ", "\n")


def make_entry(stream_id: str, seq: int, data: str) -> Entry:
    """Encode one event with its `<stream_id>:<seq>` id."""
    return Entry(seq, encode(data, id=f"{stream_id}:{seq}"))


# -- the hot path's templates (app.lifecycle.journal) ----------------------------------------
# `%` templates over bytes, so an event costs one format and no call: `encode` would split and
# check what needs neither. Each takes `id_prefix(stream_id)` (the id checked once) and the seq;
# the data must be one line (JSON always is): anything else goes through `encode`.

ID_LINE = b"%s%d\n"
"""`id: <stream_id>:<seq>`: ID_LINE % (id_prefix, seq)."""

EVENT = ID_LINE + b"data: %s\n\n"
"""An event of one data line: EVENT % (id_prefix, seq, data)."""

TEXT_EVENT = ID_LINE + b'data: {"type":"text","content":%s}\n\n'
"""A `text` event: TEXT_EVENT % (id_prefix, seq, the content as a JSON string, UTF-8)."""
