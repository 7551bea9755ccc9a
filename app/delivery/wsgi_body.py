"""Delivery: one HTTP response following one generation's feed.

Replays what the client has not seen, then follows live; a heartbeat comment when nothing was
sent for a while; ends after `[DONE]`, or when the feed is closed and nothing after the
client's seq will ever come. A client that goes away is noticed at once (see `app.delivery.eof`),
instead of waiting for a write to fail (which, while the model is silent, would be never).

Each write carries every event that is ready, up to `max_write` bytes: under load, the events
that piled up while this response waited its turn go out in one `send` (one event per fragment
stays the wire contract), and a reader far behind gets its backlog in bounded pieces, each a
join of bytes the journal already holds.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from gevent.event import Event
from gevent.hub import Waiter, get_hub

from app import sse
from app.backends.base import Feed
from app.delivery.eof import EofWatch
from app.lifecycle.slots import Slot
from app.observability import metrics
from app.sse import Entry

log = logging.getLogger("sluice.delivery")

RETRY_MS = 3000
DEFAULT_MAX_WRITE = 64 * 1024


class Delivery:
    """The WSGI response body: an iterable of SSE chunks with a `close()` that always detaches.

    Following a local generation (a feed with `listen`), a wait costs no Event and no timer:
    the journal calls `_appended` at its next event, the EOF watch sets `gone` (linked once to
    `_wake`), and one heartbeat timer per response is re-armed only when it fires early.
    Other feeds (Redis) are waited on with `wait_after(seq, timeout, gone)`.
    """

    __slots__ = (
        "feed", "after_seq", "heartbeat", "sock", "send_timeout", "max_write", "gone", "slot",
        "_attached", "_watch", "_gen", "_closed", "_listen", "_listening", "_waiter", "_timer",
    )

    def __init__(
        self,
        feed: Feed,
        after_seq: int,
        *,
        heartbeat: float,
        client_socket: Any = None,
        send_timeout: float | None = None,
        attached: bool = False,
        max_write: int = DEFAULT_MAX_WRITE,
        slot: Slot | None = None,
    ) -> None:
        self.feed = feed
        self.slot = slot  # this response's place among its client's (released in close)
        self.after_seq = after_seq
        self.heartbeat = heartbeat
        self.sock = client_socket
        self.send_timeout = send_timeout
        self.max_write = max_write
        self.gone = Event()
        self._attached = attached
        self._watch: EofWatch | None = None
        self._gen: Generator[bytes, None, None] | None = None
        self._closed = False
        self._listen: Callable[[Callable[[], None]], None] | None = getattr(feed, "listen", None)
        self._listening = False  # registered with the journal for its next event
        self._waiter: Waiter | None = None  # set while this response waits
        self._timer: Any = None  # the heartbeat timer (a libev timer), made at the first wait
        if attached:
            metrics.subscriber_attached()

    def __iter__(self) -> Iterator[bytes]:
        self._gen = self._run()
        return self._gen

    def _attach(self) -> None:
        if not self._attached:
            self._attached = True
            self.feed.attach()
            metrics.subscriber_attached()
        # A TLS socket (gunicorn serving https itself) cannot be peeked: no EOF watch there;
        # behind nginx the socket is plain TCP.
        if self.sock is not None and not hasattr(self.sock, "getpeercert"):
            if self.send_timeout:
                # A client that stops reading makes gunicorn's blocking write time out, and the
                # response ends (then the grace timer cancels the generation).
                self.sock.settimeout(self.send_timeout)
            try:
                self._watch = EofWatch(self.sock, self.gone)
            except (OSError, ValueError):
                self.gone.set()  # closed before we could watch it
        if self._listen is not None:
            self.gone.rawlink(self._wake)

    def _take(self, pending: list[Entry], out: list[bytes]) -> Entry:
        """Move entries from `pending` to `out`, up to `max_write` bytes (at least one); return
        the last one moved."""
        size = taken = 0
        for entry in pending:
            if taken and size + len(entry.wire) > self.max_write:
                break
            out.append(entry.wire)
            size += len(entry.wire)
            taken += 1
        last = pending[taken - 1]
        del pending[:taken]
        return last

    def _run(self) -> Generator[bytes, None, None]:
        self._attach()
        seq = self.after_seq
        pending = self.feed.wait_after(seq, 0)
        # The first chunk goes out at once: gunicorn writes the headers with it.
        out = [sse.retry(RETRY_MS)] if not pending else [f"retry: {RETRY_MS}\n".encode()]
        last_write = time.monotonic()
        while True:
            done = False
            if pending:
                last = self._take(pending, out)
                seq, done = last.seq, last.done
            if out:
                yield b"".join(out)
                out = []
                last_write = time.monotonic()
            if done or self.gone.is_set():
                return
            if pending:
                continue
            wait = self.heartbeat - (time.monotonic() - last_write)
            if wait <= 0:
                out.append(sse.PING)
                continue
            pending = self._wait(seq, wait)
            if self.gone.is_set():
                return
            if not pending and self.feed.closed:
                # Nothing after `seq` will ever come (a Last-Event-ID beyond the end): end here,
                # never loop on a read that answers "nothing new" at once.
                pending = self.feed.wait_after(seq, 0)
                if not pending:
                    return

    def _wait(self, seq: int, timeout: float) -> list[Entry]:
        """Entries after `seq`, waiting up to about `timeout` for one (sooner is allowed: the
        caller re-checks the heartbeat and waits again)."""
        if self._listen is None:
            return self.feed.wait_after(seq, timeout, self.gone)
        pending = self.feed.wait_after(seq, 0)
        if pending or self.feed.closed:
            return pending
        hub = get_hub()
        if not self._listening:
            self._listening = True
            self._listen(self._appended)
        timer = self._timer
        if timer is None or not timer.active:
            # Re-armed only when it has fired: a timer still pending fires no later than this
            # wait's deadline (the last write only moves forward), at worst a bit early.
            if timer is not None:
                timer.close()
            self._timer = timer = hub.loop.timer(timeout)
            timer.start(self._wake)
        self._waiter = waiter = Waiter(hub)
        try:
            waiter.get()
        finally:
            self._waiter = None
        return self.feed.wait_after(seq, 0)

    def _appended(self) -> None:
        """The journal's call (in the hub) at its next event."""
        self._listening = False
        self._wake()

    def _wake(self, *_: object) -> None:
        """In the hub: resume this response if it waits (an event, `gone`, or the heartbeat)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.switch(None)

    def hand_over(self) -> tuple[bool, Slot | None]:
        """Give this unstarted response up to a `DirectDelivery` (see `app.delivery.loop_writer`):
        `close()` does nothing from now on. Returns whether the feed is attached and counted, which
        the new owner then undoes once, and the response's slot, which it then releases."""
        if self._gen is not None or self._closed:
            raise RuntimeError("a response can be handed over only before it starts")
        self._closed = True
        attached, self._attached = self._attached, False
        slot, self.slot = self.slot, None
        return attached, slot

    def close(self) -> None:
        """Called by the WSGI server when the response ends, however it ends."""
        if self._closed:
            return
        self._closed = True
        if self._gen is not None:
            self._gen.close()
        if self._watch is not None:
            self._watch.stop()
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._listen is not None:
            self.gone.unlink(self._wake)
        if self.sock is not None and self.send_timeout and not hasattr(self.sock, "getpeercert"):
            with contextlib.suppress(OSError):
                self.sock.settimeout(None)
        try:
            if self._attached:
                self.feed.detach()
                metrics.subscriber_detached()
        finally:
            if self.slot is not None:
                self.slot.release()
