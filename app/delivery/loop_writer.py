"""Direct delivery: a caught-up client written from the event loop, with no greenlet per stream.

The ordinary response (`Delivery`) is a generator that gunicorn's connection greenlet iterates:
per token, two switches into that greenlet and back, and per stream its saved stack and the
WSGI server's buffers, alive the whole stream. Here the web layer takes the connection over once
Flask has built the response (`app.delivery.takeover`), and everything runs in hub callbacks:

- the journal calls `_pump` at its next event (`listen`); `_pump` takes every ready entry (up to
  `max_write` bytes) and `send`s it without blocking on the real socket underneath;
- a partial write keeps the rest and starts a libev WRITE watcher; the journal is listened to
  again only when this client has caught up, so a slow reader holds at most one write;
- a write that has not gone out after `send_timeout` ends the delivery (what gunicorn's blocking
  write with that timeout does on the ordinary path);
- one libev timer per delivery for the heartbeat; `EofWatch` for a client that goes away.

Every ending passes through `close` once: the feed is detached and the subscriber gauge
decremented exactly once. `active()` lists the deliveries still writing (the drain waits for
them: gunicorn's worker only waits for the greenlets in its pools).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from gevent.event import Event
from gevent.hub import get_hub

from app import sse
from app.backends.base import Feed
from app.delivery.eof import EofWatch
from app.delivery.wsgi_body import RETRY_MS
from app.lifecycle.slots import Slot
from app.observability import metrics
from app.sse import Entry

log = logging.getLogger("sluice.delivery")

_READ, _WRITE = 1, 2
_LAST_CHUNK = b"0\r\n\r\n"
_ACTIVE: set[DirectDelivery] = set()
_DECIDING = [0]  # requests in `app.delivery.takeover`'s layer that may yet be handed over


def active() -> list[DirectDelivery]:
    """The direct deliveries of this worker that have not ended."""
    return list(_ACTIVE)


def deciding() -> int:
    """Requests of this worker that may yet become a direct delivery (the drain waits for them:
    once handed over, no connection of gunicorn's holds the worker for them)."""
    return _DECIDING[0]


@contextlib.contextmanager
def considering() -> Iterator[None]:
    """Count the request being served as one that may yet be handed over (see `deciding`)."""
    _DECIDING[0] += 1
    try:
        yield
    finally:
        _DECIDING[0] -= 1


class DirectDelivery:
    """Writes one generation's feed to a socket this object owns, from hub callbacks."""

    __slots__ = (
        "feed", "seq", "heartbeat", "send_timeout", "max_write", "sock", "chunked", "sent", "on_end",
        "_attached", "_listen", "_listening", "_out", "_done", "_closed", "_last_write",
        "_gone", "_watch", "_writer", "_timer", "_deadline", "_slot",
    )

    def __init__(
        self,
        feed: Feed,
        after_seq: int,
        sock: Any,
        *,
        heartbeat: float,
        send_timeout: float | None,
        max_write: int,
        attached: bool,
        chunked: bool = True,
        on_end: Callable[[DirectDelivery], None] | None = None,
        slot: Slot | None = None,
    ) -> None:
        listen = getattr(feed, "listen", None)
        if listen is None:
            raise ValueError("a direct delivery follows a local journal (a feed with listen)")
        self.feed = feed
        self.seq = after_seq
        self.heartbeat = heartbeat
        self.send_timeout = send_timeout
        self.max_write = max_write
        self.sock = sock  # a plain, non-blocking stdlib socket: never one of gevent's
        self.chunked = chunked  # HTTP/1.1 framing, as gunicorn writes it; else close-delimited
        self.sent = 0
        self.on_end = on_end
        self._attached = attached
        self._listen: Callable[[Callable[[], None]], None] = listen
        self._listening = False
        self._out = b""  # what is still to write of the current chunk
        self._done = False  # `[DONE]` is in `_out` (or written)
        self._closed = False
        self._last_write = time.monotonic()
        self._gone: Event | None = None
        self._watch: EofWatch | None = None
        self._writer: Any = None  # the WRITE watcher, while a write waits
        self._timer: Any = None  # the heartbeat timer, while waiting for the journal
        self._deadline: Any = None  # the send-timeout timer, while a write waits
        self._slot = slot  # the response's place among its client's, released in close

    def start(self, head: bytes) -> None:
        """Write `head` (status line and headers), the replay, then follow. Never blocks."""
        if not self._attached:  # else attached and counted by the route (see `Delivery`)
            self._attached = True
            self.feed.attach()
            metrics.subscriber_attached()
        _ACTIVE.add(self)
        self._gone = gone = Event()
        try:
            self._watch = EofWatch(self.sock, gone)
        except (OSError, ValueError):
            self.close()
            return
        gone.rawlink(self._on_gone)
        pending = self.feed.wait_after(self.seq, 0)
        # Like the ordinary response: headers, retry and whatever is ready, in one write.
        body = b"retry: %d\n%s" % (RETRY_MS, self._take(pending)) if pending else sse.retry(RETRY_MS)
        self._out = head + self._frame(body)
        self._pump()

    # -- the loop, in hub callbacks ------------------------------------------------------------

    def _pump(self) -> None:
        """Write what is ready; then wait for the socket, or for the journal."""
        try:
            self._write_ready()
        except Exception:  # in the hub nobody else would end this response: end it here
            log.exception("stream %s: direct delivery failed", getattr(self.feed, "id", "?"))
            self.close()

    def _write_ready(self) -> None:
        while not self._closed:
            if self._out:
                if not self._flush():
                    return  # the WRITE watcher calls back
                continue
            if self._done:
                self.close(graceful=True)
                return
            pending = self.feed.wait_after(self.seq, 0)
            if pending:
                self._out = self._frame(self._take(pending))
                continue
            if self.feed.closed:
                # Nothing after our seq will ever come: end the body, then the connection.
                self._done = True
                self._out = _LAST_CHUNK if self.chunked else b""
                continue
            self._wait()
            return

    def _take(self, pending: list[Entry]) -> bytes:
        out: list[bytes] = []
        size = 0
        for entry in pending:
            if out and size + len(entry.wire) > self.max_write:
                break
            out.append(entry.wire)
            size += len(entry.wire)
            self.seq, self._done = entry.seq, entry.done
            if entry.done:
                break
        return b"".join(out)

    def _frame(self, body: bytes) -> bytes:
        if not self.chunked:
            return body
        framed = b"%x\r\n%s\r\n" % (len(body), body)
        return framed + _LAST_CHUNK if self._done else framed

    def _flush(self) -> bool:
        """Send `_out` without blocking; True when all of it went out."""
        try:
            n = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close()  # reset, broken pipe: the client is gone
            return False
        self.sent += n
        if n == len(self._out):
            self._out = b""
            self._last_write = time.monotonic()
            self._stop_deadline()
            return True
        self._out = self._out[n:]
        if self._writer is None:
            self._writer = get_hub().loop.io(self.sock.fileno(), _WRITE)
            self._writer.start(self._writable)
        if self._deadline is None and self.send_timeout:
            self._deadline = get_hub().loop.timer(self.send_timeout)
            self._deadline.start(self._timed_out)
        return False

    def _writable(self) -> None:
        self._stop_writer()
        self._pump()

    def _timed_out(self) -> None:
        log.info("stream %s: a client stopped reading for %.1f s; response closed",
                 getattr(self.feed, "id", "?"), self.send_timeout or 0)
        self.close()

    def _wait(self) -> None:
        if not self._listening:
            self._listening = True
            self._listen(self._appended)
        if self._timer is None:
            wait = max(0.0, self.heartbeat - (time.monotonic() - self._last_write))
            self._timer = get_hub().loop.timer(wait)
            self._timer.start(self._beat)

    def _appended(self) -> None:
        """The journal's call (in the hub) at its next event."""
        self._listening = False
        if not self._closed and not self._out:
            self._pump()

    def _beat(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()
        if self._closed or self._out:
            return
        if time.monotonic() - self._last_write >= self.heartbeat * 0.99:
            self._out = self._frame(sse.PING)
        self._pump()

    def _on_gone(self, _: object) -> None:
        self.close()

    # -- ending ----------------------------------------------------------------------------------

    def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()
            writer.close()

    def _stop_deadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.close()

    def close(self, graceful: bool = False) -> None:
        """End the delivery (idempotent): stop every watcher, close the socket, detach once.

        `graceful`: everything was written; the socket is shut down for writing first, so that
        the last bytes are followed by a FIN, not lost to a reset.
        """
        if self._closed:
            return
        self._closed = True
        _ACTIVE.discard(self)
        self._stop_writer()
        self._stop_deadline()
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._watch is not None:
            self._watch.stop()
        if self._gone is not None:
            self._gone.unlink(self._on_gone)
        if graceful:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            self.sock.close()
        try:
            if self._attached:
                self.feed.detach()
        finally:
            metrics.subscriber_detached()
            if self._slot is not None:
                self._slot.release()
            if self.on_end is not None:
                try:
                    self.on_end(self)
                except Exception:
                    log.exception("after a direct delivery")
