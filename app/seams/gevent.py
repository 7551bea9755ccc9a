"""gevent's internals Sluice relies on (gunicorn's gevent worker aside: `gunicorn.py`).

- `real_socket()`: the stdlib socket under a gevent socket (`gevent.socket.socket._sock`, a
  slot of gevent's socket class). `app/delivery/eof.py` peeks at a client's socket from a hub
  callback, where gevent's socket must not be used: on EAGAIN it waits, that is switches, which
  the hub cannot do. The real socket just raises. Without that slot, a socket of its own on a
  duplicate of the descriptor does the same (one more descriptor per open stream, closed by
  `release()`): counted in `sluice_fast_path_fallbacks_total{what="gevent"}`.
- `plain_socket()`: a stdlib socket on a descriptor taken from gunicorn, for the same reason
  (`app/delivery/takeover.py` writes it from hub callbacks).

`check()` once per worker (`create_app`) logs which path is in use.
"""

from __future__ import annotations

import _socket
import logging
import os
from typing import Any

from app.seams import fell_back

log = logging.getLogger("sluice.seams")

FALLBACK = "gevent"

_ok: bool | None = None


class _Duplicate(_socket.socket):
    """A real socket on a duplicate of a gevent socket's descriptor (the fallback): ours to close."""


def check() -> bool:
    """Whether gevent's socket has the real one under it; tried once per process. Logs the path."""
    global _ok
    if _ok is None:
        from gevent import socket as gsocket

        a, b = gsocket.socketpair()
        try:
            _ok = isinstance(getattr(a, "_sock", None), _socket.socket)
        finally:
            a.close()
            b.close()
        if _ok:
            log.info("seams: gevent: the real socket under gevent's is used for the EOF peek")
        else:
            log.warning(
                "seams: gevent: gevent's socket has no `_sock`; the EOF peek uses a duplicate descriptor"
                ' per stream, counted in sluice_fast_path_fallbacks_total{what="%s"}',
                FALLBACK,
            )
    return _ok


def real_socket(sock: Any) -> Any:
    """A socket on `sock`'s connection whose calls never switch greenlets (`sock` itself if it is one).

    Give it to `release()` when done with it (a no-op but for the fallback's duplicate).
    """
    if isinstance(sock, _socket.socket):
        return sock  # a stdlib socket, not gevent's
    raw = getattr(sock, "_sock", None)
    if isinstance(raw, _socket.socket):
        return raw
    fell_back(FALLBACK, f"{type(sock).__name__} has no real socket at `_sock`")
    return _Duplicate(fileno=os.dup(sock.fileno()))


def plain_socket(fd: int) -> Any:
    """A socket of the stdlib's own (not gevent's) on descriptor `fd`, non-blocking: its calls
    raise instead of switching, so the event loop's callbacks can drive it (the takeover)."""
    raw = _socket.socket(fileno=fd)
    raw.setblocking(False)
    return raw


def release(raw: Any) -> None:
    """Done with what `real_socket()` gave: closes the fallback's duplicate descriptor."""
    if type(raw) is _Duplicate:
        raw.close()
