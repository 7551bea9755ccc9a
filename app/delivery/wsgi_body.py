"""The WSGI body of a stream response: gunicorn's connection greenlet iterates it.

What to write, and when the response ends, is the `Cursor`'s (app.delivery.cursor); this
driver only hands each write to the WSGI server and waits in between. A client that goes away
is noticed at once (the cursor's EOF watch), and a client that stops reading makes gunicorn's
blocking write time out after `send_timeout` (then the generation's grace timer cancels it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from gevent.hub import Waiter, get_hub

from app import sse
from app.delivery.cursor import Cursor
from app.sse import Entry


class WsgiBody:
    """The WSGI response body: an iterable of SSE chunks with a `close()` that always ends the
    cursor's hold (feed detached, slot released), however the response ends.

    Following a local generation (a feed with `listen`), a wait costs no Event and no timer:
    the journal calls `_appended` at its next event, the EOF watch sets `gone` (linked once to
    `_wake`), and one heartbeat timer per response is re-armed only when it fires early.
    Other feeds (Redis) are waited on with `wait_after(seq, timeout, gone)`.
    """

    __slots__ = (
        "cursor", "feed", "sock", "send_timeout",
        "_gen", "_closed", "_listen", "_listening", "_waiter", "_timer",
    )

    def __init__(self, cursor: Cursor, *, client_socket: Any = None, send_timeout: float | None = None) -> None:
        self.cursor = cursor
        self.feed = cursor.feed
        # A TLS socket (gunicorn serving https itself) cannot be peeked: not watched. Behind
        # nginx the socket is plain TCP.
        self.sock = None if client_socket is None or hasattr(client_socket, "getpeercert") else client_socket
        self.send_timeout = send_timeout
        self._gen: Generator[bytes, None, None] | None = None
        self._closed = False
        self._listen: Callable[[Callable[[], None]], None] | None = getattr(self.feed, "listen", None)
        self._listening = False  # registered with the journal for its next event
        self._waiter: Waiter | None = None  # set while this response waits
        self._timer: Any = None  # the heartbeat timer (a libev timer), made at the first wait

    def __iter__(self) -> Iterator[bytes]:
        self._gen = self._run()
        return self._gen

    def _open(self) -> None:
        self.cursor.attach()
        if self.sock is not None and self.send_timeout:
            # A client that stops reading makes gunicorn's blocking write time out, and the
            # response ends.
            self.sock.settimeout(self.send_timeout)
        self.cursor.watch(self.sock, self._wake if self._listen is not None else None)

    def _run(self) -> Generator[bytes, None, None]:
        cursor = self.cursor
        gone = cursor.gone
        self._open()
        chunk: bytes | None = cursor.first()  # at once: gunicorn writes the headers with it
        while True:
            if chunk:
                yield chunk
                cursor.last_write = time.monotonic()
            if cursor.done or gone.is_set():
                return
            if cursor.backlog:
                chunk = cursor.next()
                continue
            # Just written: a whole interval to the next heartbeat (and no clock read per event).
            wait = cursor.heartbeat if chunk else cursor.heartbeat_in(time.monotonic())
            if not wait:
                chunk = sse.PING
                continue
            entries = self._wait(wait)
            if gone.is_set():
                return
            chunk = cursor.next(entries)
            if chunk is None:
                return

    def _wait(self, timeout: float) -> list[Entry] | None:
        """Wait up to about `timeout` for an event after the cursor's seq (sooner is allowed: the
        caller re-checks the heartbeat and waits again). Returns what was read while waiting, or
        None when the cursor is to read the feed itself."""
        cursor = self.cursor
        if self._listen is None:
            return self.feed.wait_after(cursor.seq, timeout, cursor.gone)
        pending = self.feed.wait_after(cursor.seq, 0)
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
        return None

    def _appended(self) -> None:
        """The journal's call (in the hub) at its next event."""
        self._listening = False
        self._wake()

    def _wake(self, *_: object) -> None:
        """In the hub: resume this response if it waits (an event, `gone`, or the heartbeat)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.switch(None)

    def hand_over(self) -> Cursor:
        """Give this unstarted response's cursor up to a `LoopWriter` (app.delivery.takeover):
        `close()` does nothing from now on; the cursor's `close` is the new owner's to call."""
        if self._gen is not None or self._closed:
            raise RuntimeError("a response can be handed over only before it starts")
        self._closed = True
        return self.cursor

    def close(self) -> None:
        """Called by the WSGI server when the response ends, however it ends."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._gen is not None:
                self._gen.close()
            if self._timer is not None:
                self._timer.close()
                self._timer = None
            if self.sock is not None and self.send_timeout:
                with contextlib.suppress(OSError):
                    self.sock.settimeout(None)
        finally:
            self.cursor.close()
