"""A caught-up client written from the event loop, with no greenlet per stream.

The ordinary response (`WsgiBody`) is a generator that gunicorn's connection greenlet iterates:
per token, two switches into that greenlet and back, and per stream its saved stack and the
WSGI server's buffers, alive the whole stream. Here the web layer takes the connection over once
Flask has built the response (`app.delivery.takeover`), and everything runs in hub callbacks.
What to write next is the `Cursor`'s (app.delivery.cursor), as for the ordinary response; this
driver only frames and moves the bytes:

- the journal calls `_pump` at its next event (`listen`); `_pump` asks the cursor for the next
  write and `send`s it without blocking on the real socket underneath;
- a partial write keeps the rest and starts a libev WRITE watcher; the journal is listened to
  again only when this client has caught up, so a slow reader holds at most one write;
- a write that has not gone out after `send_timeout` ends the response (what gunicorn's
  blocking write with that timeout does on the ordinary path);
- one libev timer per response for the heartbeat; the cursor's EOF watch for a client that goes
  away.

Every ending passes through `close` once, and through the cursor's `close`. `LoopWriters` lists
a worker's writers still writing (the drain waits for them: gunicorn's worker only waits for the
greenlets in its pools).
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
from app.delivery.cursor import Cursor

log = logging.getLogger("sluice.delivery")

_WRITE = 2  # libev's EV_WRITE
_LAST_CHUNK = b"0\r\n\r\n"


class LoopWriters:
    """One worker's loop writers that have not ended, and its requests that may yet start one.

    Owned by the app (create_app), given to `app.delivery.takeover` (which bounds their number)
    and to the drain (`app.lifecycle.registry.WrittenElsewhere`: it waits for both).
    """

    __slots__ = ("_writing", "_deciding")

    def __init__(self) -> None:
        self._writing: set[LoopWriter] = set()
        self._deciding = 0

    def writing(self) -> list[LoopWriter]:
        """The writers that have not ended."""
        return list(self._writing)

    def deciding(self) -> int:
        """Requests that may yet become a loop writer (the drain waits for them: once handed
        over, no connection of gunicorn's holds the worker for them)."""
        return self._deciding

    @contextlib.contextmanager
    def considering(self) -> Iterator[None]:
        """Count the request being served as one that may yet be handed over (see `deciding`)."""
        self._deciding += 1
        try:
            yield
        finally:
            self._deciding -= 1

    def add(self, writer: LoopWriter) -> None:
        self._writing.add(writer)

    def discard(self, writer: LoopWriter) -> None:
        self._writing.discard(writer)


class LoopWriter:
    """Writes one cursor's response to a socket this object owns, from hub callbacks."""

    __slots__ = (
        "cursor", "sock", "send_timeout", "chunked", "sent", "on_end", "writers",
        "_listen", "_listening", "_out", "_closed", "_writer", "_timer", "_deadline",
    )

    def __init__(
        self,
        cursor: Cursor,
        sock: Any,
        *,
        send_timeout: float | None,
        chunked: bool = True,
        on_end: Callable[[LoopWriter], None] | None = None,
        writers: LoopWriters | None = None,
    ) -> None:
        listen = getattr(cursor.feed, "listen", None)
        if listen is None:
            raise ValueError("a loop writer follows a local journal (a feed with listen)")
        self.cursor = cursor
        self.sock = sock  # a plain, non-blocking stdlib socket: never one of gevent's
        self.send_timeout = send_timeout
        self.chunked = chunked  # HTTP/1.1 framing, as gunicorn writes it; else close-delimited
        self.sent = 0
        self.on_end = on_end
        self.writers = writers
        self._listen: Callable[[Callable[[], None]], None] = listen
        self._listening = False
        self._out = b""  # what is still to write of the current chunk
        self._closed = False
        self._writer: Any = None  # the WRITE watcher, while a write waits
        self._timer: Any = None  # the heartbeat timer, while waiting for the journal
        self._deadline: Any = None  # the send-timeout timer, while a write waits

    def start(self, head: bytes) -> None:
        """Write `head` (status line and headers), the replay, then follow. Never blocks."""
        cursor = self.cursor
        cursor.attach()
        if self.writers is not None:
            self.writers.add(self)
        cursor.watch(self.sock, self._on_gone)
        if cursor.gone.is_set():  # closed before it could be watched
            self.close()
            return
        # Like the ordinary response: headers, retry and whatever is ready, in one write.
        self._out = head + self._frame(cursor.first())
        self._pump()

    # -- the loop, in hub callbacks ------------------------------------------------------------

    def _pump(self) -> None:
        """Write what is ready; then wait for the socket, or for the journal."""
        try:
            self._write_ready()
        except Exception:  # in the hub nobody else would end this response: end it here
            log.exception("stream %s: direct delivery failed", getattr(self.cursor.feed, "id", "?"))
            self.close()

    def _write_ready(self) -> None:
        cursor = self.cursor
        while not self._closed:
            if self._out:
                if not self._flush():
                    return  # the WRITE watcher calls back
                continue
            if cursor.done:
                self.close(graceful=True)
                return
            body = cursor.next()
            if body:
                self._out = self._frame(body)
            elif body is None:
                # Nothing after the cursor's seq will ever come: end the body, then the connection.
                self._out = _LAST_CHUNK if self.chunked else b""
            else:
                self._wait()
                return

    def _frame(self, body: bytes) -> bytes:
        if not self.chunked:
            return body
        framed = b"%x\r\n%s\r\n" % (len(body), body)
        return framed + _LAST_CHUNK if self.cursor.done else framed

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
            self.cursor.last_write = time.monotonic()
            if self._deadline is not None:
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
                 getattr(self.cursor.feed, "id", "?"), self.send_timeout or 0)
        self.close()

    def _wait(self) -> None:
        if not self._listening:
            self._listening = True
            self._listen(self._appended)
        if self._timer is None:
            self._timer = get_hub().loop.timer(self.cursor.heartbeat_in(time.monotonic()))
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
        if not self.cursor.heartbeat_in(time.monotonic()):
            self._out = self._frame(sse.PING)
        self._pump()

    def _on_gone(self, _: Event) -> None:
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
        """End the response (idempotent): stop every watcher, end the cursor's hold (feed
        detached, slot released), close the socket.

        `graceful`: everything was written; the socket is shut down for writing first, so that
        the last bytes are followed by a FIN, not lost to a reset.
        """
        if self._closed:
            return
        self._closed = True
        if self.writers is not None:
            self.writers.discard(self)
        self._stop_writer()
        self._stop_deadline()
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        try:
            self.cursor.close()  # stops the EOF watch first: the socket may then be closed
        finally:
            if graceful:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                self.sock.close()
            if self.on_end is not None:
                try:
                    self.on_end(self)
                except Exception:
                    log.exception("after a direct delivery")
