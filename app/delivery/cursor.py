"""What a stream response writes next: one cursor over a generation's feed, for both drivers.

A response that follows a generation replays what its client has not seen, then follows live;
sends a heartbeat comment when nothing was written for `heartbeat` seconds; and ends after
`[DONE]`, when the feed is closed with nothing after the client's seq (a Last-Event-ID beyond
the end), or when the client goes away. That last one is noticed at once (`watch`, see
`app.delivery.eof`), not at a write that, while the model is silent, would never come.

The `Cursor` decides all of that; two drivers only move bytes and wait:

- `app.delivery.wsgi_body.WsgiBody`: the WSGI body that gunicorn's connection greenlet iterates;
- `app.delivery.loop_writer.LoopWriter`: hub callbacks on a connection taken over from gunicorn
  (`app.delivery.takeover` gives it the cursor of a `WsgiBody` that has not started).

Each write carries every event that is ready, up to `max_write` bytes: under load, the events
that piled up while a response waited its turn go out in one `send` (one event per fragment
stays the wire contract), and a reader far behind gets its backlog in bounded pieces, each a
join of bytes the journal already holds.

Whichever way a response ends, `close` runs once: the EOF watch stopped, the feed detached and
the subscriber gauge decremented (if it was attached), the client's `Slot` released.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gevent.event import Event

from app import sse
from app.backends.base import Feed
from app.delivery.eof import EofWatch
from app.lifecycle.slots import Slot
from app.observability import metrics
from app.sse import Entry

RETRY_MS = 3000
DEFAULT_MAX_WRITE = 64 * 1024
# A heartbeat is due within this share of its interval: a libev timer counts from the loop's
# cached "now", so it may fire a little before its time on the monotonic clock. Without the
# slack, such a wake-up would find the ping not yet due and wait again for a few microseconds.
HEARTBEAT_SLACK = 0.01

_RETRY = sse.retry_field(RETRY_MS)  # opens the first event's lines
_RETRY_ALONE = sse.retry(RETRY_MS)  # the first write when no event is ready


class Cursor:
    """One response's place in a generation's feed, and what it writes next.

    `seq`: the last event taken for writing. `done`: nothing more will be written (`[DONE]` was
    taken, or the feed is closed with nothing after `seq`). `gone`: set once the client went
    away (see `watch`). `last_write`: when the driver last finished a write (monotonic); the
    heartbeat counts from it, and the driver sets it. `backlog`: entries read from the feed and
    not yet taken (a read may return more than one write carries).
    """

    __slots__ = (
        "feed", "seq", "heartbeat", "max_write", "done", "gone", "last_write", "backlog",
        "_attached", "_slot", "_watch", "_on_gone", "_closed",
    )

    def __init__(
        self,
        feed: Feed,
        after_seq: int,
        *,
        heartbeat: float,
        max_write: int = DEFAULT_MAX_WRITE,
        attached: bool = False,
        slot: Slot | None = None,
    ) -> None:
        self.feed = feed
        self.seq = after_seq
        self.heartbeat = heartbeat
        self.max_write = max_write
        self.done = False
        self.gone = Event()
        self.last_write = time.monotonic()
        self.backlog: list[Entry] = []
        self._attached = attached  # True: the route attached the feed (it started the generation)
        self._slot = slot  # this response's place among its client's
        self._watch: EofWatch | None = None
        self._on_gone: Callable[[Event], None] | None = None
        self._closed = False
        if attached:
            metrics.subscriber_attached()

    # -- once per response ----------------------------------------------------------------------

    def attach(self) -> None:
        """Attach to the feed and count the subscriber, unless that is done already."""
        if not self._attached and not self._closed:
            self._attached = True
            self.feed.attach()
            metrics.subscriber_attached()

    def watch(self, sock: Any, on_gone: Callable[[Event], None] | None = None) -> None:
        """Set `gone` when the client closes `sock` (None: nothing to watch), and then call
        `on_gone` in the hub. A socket closed before it could be watched is gone at once."""
        if sock is not None:
            try:
                self._watch = EofWatch(sock, self.gone)
            except (OSError, ValueError):
                self.gone.set()
        if on_gone is not None:
            self._on_gone = on_gone
            self.gone.rawlink(on_gone)

    def close(self) -> None:
        """End the response's hold on the feed, once, however it ends (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.backlog = []
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()
        on_gone, self._on_gone = self._on_gone, None
        if on_gone is not None:
            self.gone.unlink(on_gone)
        attached, self._attached = self._attached, False
        try:
            if attached:
                self.feed.detach()
        finally:
            if attached:
                metrics.subscriber_detached()
            slot, self._slot = self._slot, None
            if slot is not None:
                slot.release()

    # -- what next ------------------------------------------------------------------------------

    def first(self) -> bytes:
        """The first write (the server sends the headers with it, at once): `retry:` and every
        event that is ready, or the `retry:` field alone."""
        chunk = self.next()
        return _RETRY + chunk if chunk else _RETRY_ALONE

    def next(self, entries: list[Entry] | None = None) -> bytes | None:
        """The next write: events after `seq`, up to `max_write` bytes (at least one), none after
        `[DONE]`; b"" when none is ready yet (wait, then ask again); None at the end (`done`).

        Taken from the `backlog` first; when it is empty, from `entries` (what the driver's own
        wait read), else from what the feed has after `seq` now.
        """
        if self.done:
            return None
        pending = self.backlog
        if not pending:
            pending = self.feed.wait_after(self.seq, 0) if entries is None else entries
            if not pending:
                if not self.feed.closed:
                    return b""
                # Closed: an event appended just before the close may not have been read yet.
                # Nothing after `seq` otherwise: end here, never loop on a read that answers
                # "nothing new" at once.
                pending = self.feed.wait_after(self.seq, 0)
                if not pending:
                    self.done = True
                    return None
            self.backlog = pending
        out: list[bytes] = []
        size = taken = 0
        limit = self.max_write
        for entry in pending:
            wire = entry.wire
            if taken and size + len(wire) > limit:
                break
            out.append(wire)
            size += len(wire)
            taken += 1
            if entry.done:
                self.done = True
                break
        self.seq = pending[taken - 1].seq
        del pending[:taken]
        return b"".join(out)

    def heartbeat_in(self, now: float) -> float:
        """Seconds from `now` until a heartbeat is due; 0.0 when it is due (`sse.PING` next)."""
        left = self.heartbeat - (now - self.last_write)
        return left if left > self.heartbeat * HEARTBEAT_SLACK else 0.0
