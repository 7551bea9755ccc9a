"""Noticing at once that a client closed its connection, with no greenlet per client.

A response that is waiting for the model writes nothing, so a closed tab would only be noticed
at the next write — while the model is silent, never. Instead each streaming response asks the
worker's event loop to watch its socket for "readable" (a libev io watcher: a small C struct in
the hub, not a greenlet with its own stack). The callback runs in the hub: it peeks without
blocking, and sets the response's `gone` event on EOF or reset.
"""

from __future__ import annotations

import socket
from typing import Any

from gevent.event import Event
from gevent.hub import get_hub

from app.seams import gevent as gevent_seam

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


class EofWatch:
    """Sets `gone` when the peer closes `sock`; `stop()` when the response ends."""

    __slots__ = ("_raw", "_gone", "_watcher")

    def __init__(self, sock: Any, gone: Event) -> None:
        # gevent's socket waits (switches) on EAGAIN, which the hub must never do: peek on the
        # real socket underneath, which just raises.
        self._raw = gevent_seam.real_socket(sock)
        self._gone = gone
        self._watcher: Any = get_hub().loop.io(sock.fileno(), 1)  # 1: READ
        self._watcher.start(self._readable)

    def _readable(self) -> None:
        try:
            closed = self._raw.recv(1, _PEEK) == b""
        except BlockingIOError:
            return  # a spurious wake-up: keep watching
        except OSError:
            closed = True  # reset, or closed under us: gone either way
        # Readable with data is not a close (an SSE client sends nothing): stop watching
        # rather than be woken for it again and again.
        self.stop()
        if closed:
            self._gone.set()

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()
            gevent_seam.release(self._raw)
