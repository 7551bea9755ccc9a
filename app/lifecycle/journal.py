"""The journal: a generation's events, numbered, encoded once, stored compactly, replayable, followed live.

Producer and subscribers meet here. The producer appends; each subscriber asks for "everything
after seq N", and waits on a wake-up event when it has seen it all. Each event's JSON is encoded
once, at append time (ten tabs on one generation cost one JSON encode per event); a read turns
it into SSE bytes with one bytes format per event. What is kept of them is end to end in one buffer with an
array of where each event ends (no object per event; a list of `Entry` tuples cost ~130 bytes
more per event, the size of a short token's event), and without what every event repeats: its
`id: <stream id>:` line (the same but for the seq) and, for a `text` event, the JSON around its
content. A token's event (~80 bytes on the wire) costs the journal its escaped content plus 9;
a read puts the rest back in front of each event it hands out. The live journal was the largest
thing an open stream holds (docs/benchmarks.md, issue 19).

The journal is bounded in bytes (`max_bytes`): an event that would pass the bound is refused with
`JournalFull`, and the generation ends with an error (its terminal event and `[DONE]` are always
let in, so every stream still ends properly).

Once the generation has ended, `seal()` compresses the journal once, for the replay TTL: every
event's bytes repeat the id prefix and the JSON keys, so zlib takes a short answer's journal to
a fraction of its size. It is cut into blocks of about SEAL_BLOCK bytes at event boundaries, so
a replay from a seq decompresses only the blocks it reads. A live journal is never compressed:
the hot path of a running stream is unchanged.
"""

from __future__ import annotations

import json
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import gevent
from gevent.event import Event
from gevent.hub import get_hub

from app import sse
from app.sse import Entry

# What the bound counts for an event besides its wire bytes, so that a bound in bytes also bounds
# a flood of tiny events. The journal itself spends 5 or 9 (its end offset and kind); an `Entry`
# handed to a reader costs about 112 (the tuple, the bytes object's header, the int) while held.
ENTRY_OVERHEAD = 112
# Entries handed out per read: a reader far behind gets its backlog in slices, never a copy
# of the whole list each time it writes.
READ_COUNT = 512
# Raw bytes per compressed block of a sealed journal: a replay decompresses the blocks it reads.
SEAL_BLOCK = 64 * 1024
# What a sealed journal's object and lists cost besides its compressed blocks.
SEALED_OVERHEAD = 200

# The wire bytes are app.sse's templates (bound here: one lookup less per event). A text event
# is the hot path: its JSON is a template around the escaped content, with no dict built and no
# generic encoder walked. (`json.dumps` of a str is the C string encoder.)
_TEXT_EVENT = sse.TEXT_EVENT  # % (id prefix, seq, content)
_TEXT_BODY = sse.TEXT_EVENT[len(sse.ID_LINE):]  # a text event after its id line: % content
_DATA = sse.EVENT[len(sse.ID_LINE):]  # one data line after the id line: % data
_WITH_ID = sse.ID_LINE + b"%s"  # % (id prefix, seq, an event's bytes after its id line)
# The kinds of stored event: its bytes after the id line, or only a text event's escaped content.
_RAW, _TEXT = 0, 1
# What `json.JSONEncoder(ensure_ascii=False).encode` does for a str, without its Python frame.
_escape = json.encoder.encode_basestring


class JournalFull(Exception):
    """An event would take the journal past its byte bound."""


class Journal:
    """Append-only sequence of events with a wake-up for followers, bounded in bytes."""

    __slots__ = ("stream_id", "nbytes", "max_bytes", "_buf", "_ends", "_done", "_prefix", "_wake", "_waiters",
                 "_listeners", "_blocks", "_block_at", "_lengths", "_count", "_kinds")

    def __init__(self, stream_id: str, max_bytes: int = 0) -> None:
        self.stream_id = stream_id
        self._buf = bytearray()  # every event, stored as its kind says, end to end
        # where event seq = i + 1 ends in `_buf`: 4 bytes each when the bound keeps it below 2 GiB
        self._ends = array("I" if 0 < max_bytes < 2**31 else "Q")
        self._kinds = bytearray()  # event seq = i + 1 is stored as _RAW or _TEXT
        self._done = False  # `[DONE]` is in
        self.nbytes = 0
        self.max_bytes = max_bytes  # 0: unbounded
        self._prefix = sse.id_prefix(stream_id)  # the hot path's: checked once, here
        self._wake: Event | None = None  # made by the first `wait_after` that has to wait
        self._waiters = 0
        self._listeners: list[Callable[[], None]] = []
        # Sealed (see `seal`): the compressed blocks, the raw offset where each starts, the
        # events' lengths (array "I", compressed), and the number of events.
        self._blocks: list[bytes] | None = None
        self._block_at: list[int] = []
        self._lengths = b""
        self._count = 0

    @property
    def last_seq(self) -> int:
        return self._count if self._blocks is not None else len(self._ends)

    @property
    def sealed(self) -> bool:
        """True once `seal` has compressed the journal."""
        return self._blocks is not None

    @property
    def closed(self) -> bool:
        """True once `[DONE]` is in the journal."""
        return self._done

    @property
    def entries(self) -> list[Entry]:
        """Every event, as entries (made on each call: for the mirror and for tests)."""
        return self.after(0, self.last_seq)

    def append(self, payload: dict[str, Any] | str, *, bounded: bool = True) -> Entry:
        """Add one event (a payload dict, or the `[DONE]` marker) and wake every follower.

        Raises `JournalFull` when `bounded` and the event would pass `max_bytes`.
        """
        data = payload if isinstance(payload, str) else sse.dumps(payload)
        # A line break is never in JSON: a marker or a caller's own text, in several data lines.
        # (`sse.encode` puts the id line first: without one, it gives what follows it.)
        multiline = "\n" in data or "\r" in data
        body = sse.encode(data) if multiline else _DATA % data.encode()
        return self._add(_WITH_ID % (self._prefix, len(self._ends) + 1, body), body, _RAW, bounded)

    def append_text(self, text: str, *, bounded: bool = True) -> Entry:
        """Add a `text` event: the hot path, from a template (see `_TEXT_EVENT`)."""
        content = _escape(text).encode()
        wire = _TEXT_EVENT % (self._prefix, len(self._ends) + 1, content)
        return self._add(wire, content, _TEXT, bounded)

    def _add(self, wire: bytes, stored: bytes, kind: int, bounded: bool) -> Entry:
        size = len(wire) + ENTRY_OVERHEAD  # the bound counts the wire bytes, whatever is stored
        if bounded and self.max_bytes and self.nbytes + size > self.max_bytes:
            raise JournalFull(self.max_bytes)
        entry = Entry(len(self._ends) + 1, wire)
        self._buf += stored
        self._ends.append(len(self._buf))
        self._kinds.append(kind)
        self._done = entry.done
        self.nbytes += size
        if self._listeners:
            # One hub callback per event, whatever the number of followers: it calls each one
            # (see `listen`). Taken before the call, so a follower re-registers for the next.
            listeners, self._listeners = self._listeners, []
            get_hub().loop.run_callback(_call_each, listeners)
        if self._waiters and self._wake is not None:
            # Swap before set: a follower that wakes and finds nothing new waits on the new event.
            wake, self._wake = self._wake, Event()
            wake.set()
        return entry

    def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake()` once, in the hub, at the next append: the follower's cheap wait.

        The hot path of a local subscriber (see app.delivery): no Event made or set, no
        multi-object wait, per event. `wait_after` is the general form.
        """
        self._listeners.append(wake)

    def after(self, seq: int, count: int = READ_COUNT) -> list[Entry]:
        """Up to `count` entries with a seq greater than `seq` (seq counts from 1: an index)."""
        if self._blocks is not None:
            return self._sealed_after(seq, count)
        ends = self._ends
        start = max(seq, 0)
        stop = min(start + count, len(ends))
        if start >= stop:
            return []
        a = ends[start - 1] if start else 0
        prefix, kinds = self._prefix, self._kinds
        out = []
        # Released before returning: a bytearray with a view open cannot grow (BufferError).
        with memoryview(self._buf) as view:
            for i in range(start, stop):
                b = ends[i]
                template = _TEXT_EVENT if kinds[i] else _WITH_ID  # kinds: _TEXT or _RAW
                out.append(Entry(i + 1, template % (prefix, i + 1, view[a:b])))
                a = b
        return out

    def seal(self) -> int:
        """Compress the bytes of a closed journal, once; return what it holds in memory now.

        The events are compressed without their `id:` lines (rebuilt on replay: compressed, the
        id line would be half of a short event's size). Nothing may be appended after this (the
        journal is closed: `[DONE]` is in).
        """
        if self._blocks is not None:
            return self.held
        ends, buf = self._ends, bytes(self._buf)
        events = [
            _TEXT_BODY % buf[a:b] if kind else buf[a:b]
            for a, b, kind in zip([0, *ends], ends, self._kinds, strict=False)
        ]
        blocks: list[bytes] = []
        block_at: list[int] = []
        piece: list[bytes] = []
        at = size = 0
        for event in events:
            piece.append(event)
            size += len(event)
            if size >= SEAL_BLOCK:
                block_at.append(at)
                blocks.append(zlib.compress(b"".join(piece)))
                at, piece, size = at + size, [], 0
        if piece or not blocks:
            block_at.append(at)
            blocks.append(zlib.compress(b"".join(piece)))
        self._lengths = zlib.compress(array("I", map(len, events)).tobytes())
        self._count = len(events)
        self._block_at, self._blocks = block_at, blocks
        self._buf, self._ends, self._kinds = bytearray(), array("I"), bytearray()
        return self.held

    @property
    def held(self) -> int:
        """Bytes a sealed journal holds (its compressed blocks and lengths, and its objects)."""
        if self._blocks is None:
            return self.nbytes
        return sum(len(b) for b in self._blocks) + len(self._lengths) + SEALED_OVERHEAD + 8 * len(self._blocks)

    def _sealed_after(self, seq: int, count: int) -> list[Entry]:
        start = max(seq, 0)
        stop = min(start + count, self._count)
        if start >= stop or self._blocks is None:
            return []
        lengths = array("I")
        lengths.frombytes(zlib.decompress(self._lengths))
        ends = list(accumulate(lengths[:stop]))
        a, b = (ends[start - 1] if start else 0), ends[stop - 1]
        first = bisect_right(self._block_at, a) - 1
        last = bisect_left(self._block_at, b)
        raw = b"".join(zlib.decompress(block) for block in self._blocks[first:last])
        base = self._block_at[first]
        out = []
        a -= base
        prefix = self._prefix
        for i in range(start, stop):
            end = ends[i] - base
            out.append(Entry(i + 1, _WITH_ID % (prefix, i + 1, raw[a:end])))
            a = end
        return out

    def wait_after(self, seq: int, timeout: float | None, interrupt: Event | None = None) -> list[Entry]:
        """Entries after `seq`, waiting up to `timeout` for one if there are none yet.

        Returns [] at once for a closed journal with nothing after `seq`: nothing more will come.
        """
        if len(self._ends) > seq or self._done or (timeout is not None and timeout <= 0):
            return self.after(seq)
        if self._wake is None:
            self._wake = Event()
        waits = [self._wake] if interrupt is None else [self._wake, interrupt]
        self._waiters += 1
        try:
            gevent.wait(waits, timeout=timeout, count=1)
        finally:
            self._waiters -= 1
        return self.after(seq)


def _call_each(listeners: list[Callable[[], None]]) -> None:
    for wake in listeners:
        wake()
