"""Delivery: one HTTP response following one generation's feed.

Replays what the client has not seen, then follows live; a heartbeat comment when nothing was
sent for a while; ends after `[DONE]`. A client that goes away is noticed at once: under
gunicorn's gevent worker a greenlet watches the client socket for EOF, instead of waiting for a
write to fail (which, while the model is silent, would be never).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Generator, Iterator
from typing import Any

import gevent
from gevent.event import Event
from gevent.socket import wait_read

from app import sse
from app.backends.base import Feed
from app.lifecycle.log import DONE
from app.observability import metrics

log = logging.getLogger("sluice.delivery")

RETRY_MS = 3000


def _watch_for_eof(sock: Any, gone: Event) -> None:
    """Set `gone` when the peer closes its side of the connection."""
    try:
        fd = sock.fileno()
        while fd >= 0:
            wait_read(fd)
            # Peek, so that bytes the client might send (none, for an SSE GET) are left alone.
            if sock.recv(1, socket.MSG_PEEK) == b"":
                break
            return  # readable with data: not a close; stop watching rather than spin
    except (OSError, ValueError):
        pass  # closed under us, or reset: gone either way
    except gevent.GreenletExit:
        return
    gone.set()


class Delivery:
    """The WSGI response body: an iterable of SSE chunks with a `close()` that always detaches."""

    def __init__(
        self,
        feed: Feed,
        after_seq: int,
        *,
        heartbeat: float,
        client_socket: Any = None,
        send_timeout: float | None = None,
        attached: bool = False,
    ) -> None:
        self.feed = feed
        self.after_seq = after_seq
        self.heartbeat = heartbeat
        self.sock = client_socket
        self.send_timeout = send_timeout
        self.gone = Event()
        self._attached = attached
        self._watcher: gevent.Greenlet | None = None
        self._gen: Generator[bytes, None, None] | None = None
        self._closed = False
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
            self._watcher = gevent.spawn(_watch_for_eof, self.sock, self.gone)

    def _run(self) -> Generator[bytes, None, None]:
        self._attach()
        seq = self.after_seq
        batch = self.feed.wait_after(seq, 0)
        # The first chunk goes out at once: gunicorn writes the headers with it.
        out = [sse.retry(RETRY_MS)] if not batch else [f"retry: {RETRY_MS}\n".encode()]
        last_write = time.monotonic()
        while True:
            if batch:
                seq = batch[-1].seq
                out.extend(e.wire for e in batch)
            if out:
                yield b"".join(out)
                out = []
                last_write = time.monotonic()
                if batch and batch[-1].data == DONE:
                    return
            if self.gone.is_set():
                return
            wait = self.heartbeat - (time.monotonic() - last_write)
            if wait <= 0:
                out.append(sse.PING)
                batch = []
                continue
            batch = self.feed.wait_after(seq, wait, self.gone)
            if self.gone.is_set():
                return

    def close(self) -> None:
        """Called by the WSGI server when the response ends, however it ends."""
        if self._closed:
            return
        self._closed = True
        if self._gen is not None:
            self._gen.close()
        if self._watcher is not None:
            self._watcher.kill(block=False)
        if self.sock is not None and self.send_timeout and not hasattr(self.sock, "getpeercert"):
            with contextlib.suppress(OSError):
                self.sock.settimeout(None)
        if self._attached:
            self.feed.detach()
            metrics.subscriber_detached()
