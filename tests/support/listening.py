"""Closing a test's listening socket without handing its next connection to a stale thread."""

from __future__ import annotations

import contextlib
import socket
import threading


def close_listener(listener: socket.socket, acceptor: threading.Thread) -> None:
    """Stop `acceptor` (a thread looping on `listener.accept()`), then close `listener`.

    The thread must be gone before the descriptor is closed. Closed under it, the number is
    free: the next test's listener gets it, and this thread, about to call accept() with that
    number, takes the next test's connection (issue 19, 3b: an OpenAI client got the Anthropic
    answer). shutdown() makes a waiting or a later accept() fail at once, on this socket still.
    """
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    acceptor.join(5)
    assert not acceptor.is_alive(), "the accepting thread outlived its listener"
    listener.close()
