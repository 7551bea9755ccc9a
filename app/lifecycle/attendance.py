"""Who follows a generation on this worker, and the disconnect grace timer.

A generation nobody follows is cancelled after a grace period (`SLUICE_DISCONNECT_GRACE_SECONDS`):
a reload or a dropped connection gets that long to come back. The timer is a greenlet started
by `gevent.spawn_later` only while nobody follows here, never one per subscriber.
"""

from __future__ import annotations

from collections.abc import Callable

import gevent
from gevent import Greenlet

from app.observability import greenlets


class Attendance:
    """The count of local subscribers, and the grace timer that runs while it is zero."""

    __slots__ = ("count", "_grace", "_expired")

    def __init__(self, expired: Callable[[], None]) -> None:
        self.count = 0
        self._grace: Greenlet | None = None
        self._expired = expired  # called by the timer; decides whether to cancel

    def attach(self) -> None:
        """A subscriber arrived: it stops a pending grace timer."""
        self.count += 1
        self.stop()

    def detach(self) -> bool:
        """A subscriber left; True when nobody is left."""
        self.count = max(0, self.count - 1)
        return self.count == 0

    @property
    def counting_down(self) -> bool:
        """The grace timer is running."""
        return self._grace is not None

    def arm(self, seconds: float) -> None:
        """(Re)start the grace timer."""
        self.stop()
        self._grace = greenlets.spawn_later(seconds, self._fire)

    def stop(self) -> None:
        """Drop the grace timer (not when called by the timer itself: it is ending anyway)."""
        grace, self._grace = self._grace, None
        if grace is not None and grace is not gevent.getcurrent():
            grace.kill(block=False)

    def _fire(self) -> None:
        self._grace = None
        self._expired()
