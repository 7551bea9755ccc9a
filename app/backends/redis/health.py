"""Whether Redis answers this worker: up, down (and why), or just back.

When a call fails the clients mark it `down`: request-path calls then skip Redis at once
(local behaviour only, cross-worker features pause) and /readyz answers 503 with the reason.
The listener's reconnect (or its next tick) marks it `up`; on a return after a fault,
`on_return` lets the writer resync every local generation, and for RESYNC_WINDOW s
`resyncing()` says that "not found" may only mean "not rewritten yet".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gevent.event import Event
from redis.exceptions import ResponseError

log = logging.getLogger("sluice.redis")

RESYNC_WINDOW = 3.0  # seconds after Redis returns during which other workers may still be resyncing


class Health:
    """Redis up / down for one worker, with the reason /readyz gives."""

    def __init__(self, where: str) -> None:
        self.where = where  # the URL as it may be logged
        self.up = Event()  # set while Redis answers
        self.on_return: Callable[[], None] | None = None  # called when Redis answers again after a fault
        self._state = "unknown"  # unknown | up | down
        self.reason = "not started"
        self.refusing = False  # down because Redis refuses writes (it still answers reads)
        self._resync_until = 0.0

    @property
    def down(self) -> bool:
        """True while Redis is known to be down."""
        return self._state == "down"

    @property
    def is_up(self) -> bool:
        return self._state == "up"

    def resyncing(self) -> bool:
        """True for RESYNC_WINDOW s after Redis returned: "not found" may mean "not rewritten yet"."""
        return time.monotonic() < self._resync_until

    def mark_down(self, exc: BaseException) -> None:
        # A refusal (OOM under noeviction, READONLY replica, no permission) is "down" too: a
        # Redis that takes no writes cannot carry cancels, replays or status.
        self.refusing = isinstance(exc, ResponseError)
        what = "refuses writes" if self.refusing else "unreachable"
        self.reason = f"redis {what} at {self.where}: {type(exc).__name__}: {exc}"
        if self._state != "down":
            log.warning("%s; cross-worker cancel, resume and status are paused, local streams continue", self.reason)
        self._state = "down"
        self.up.clear()

    def mark_up(self) -> None:
        was = self._state
        self._state = "up"
        self.reason = "redis"
        if was == "down":
            self._resync_until = time.monotonic() + RESYNC_WINDOW
            log.warning("redis is reachable again at %s; resyncing this worker's generations", self.where)
            if self.on_return is not None:
                self.on_return()
        self.up.set()
