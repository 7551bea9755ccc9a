"""Who follows a generation on this worker, and the disconnect grace timer.

A generation nobody follows is cancelled after a grace period (`SLUICE_DISCONNECT_GRACE_SECONDS`):
a reload or a dropped connection gets that long to come back. The timer is a greenlet started
by `gevent.spawn_later` only while nobody follows here, never one per reader.

What varies is injected: `leave` (what to do when the grace runs out: the generation's cancel)
and `followed_elsewhere(stream_id)` (do clients follow it through other workers? the shared
backend knows, `Remote.followed`; by default nobody does). The generation calls `end()` when
it ends: from then on nothing is armed or cancelled, and the callbacks (which hold the
generation) are let go.
"""

from __future__ import annotations

from collections.abc import Callable

import gevent
from gevent import Greenlet

from app.observability import greenlets

# A generation created without a reader (POST /streams) waits at least this long for one.
FIRST_READER_SECONDS = 10.0


def _nobody(stream_id: str) -> bool:
    return False


def _nothing() -> None:
    pass


class Attendance:
    """The count of local readers, and the grace timer that runs while it is zero."""

    __slots__ = ("stream_id", "count", "grace_seconds", "_grace", "_leave", "_followed_elsewhere", "_over")

    def __init__(
        self,
        stream_id: str,
        grace_seconds: float,
        leave: Callable[[], None],
        followed_elsewhere: Callable[[str], bool] = _nobody,
    ) -> None:
        self.stream_id = stream_id
        self.count = 0
        self.grace_seconds = grace_seconds
        self._grace: Greenlet | None = None
        self._leave = leave  # the grace ran out with nobody here or elsewhere
        self._followed_elsewhere = followed_elsewhere
        self._over = False  # the generation ended: nothing to watch any more

    def attach(self) -> None:
        """A reader arrived: it stops a pending grace timer."""
        self.count += 1
        self.stop()

    def detach(self) -> None:
        """A reader left: with nobody left (and the generation running), start the grace."""
        self.count = max(0, self.count - 1)
        if self.count == 0 and not self._over:
            self.arm(self.grace_seconds)

    def begin(self) -> None:
        """The generation started: with no reader yet (POST /streams), give the client time to attach."""
        if self.count == 0:
            self.arm(max(self.grace_seconds, FIRST_READER_SECONDS))

    @property
    def counting_down(self) -> bool:
        """The grace timer is running."""
        return self._grace is not None

    @property
    def unattended(self) -> bool:
        """Not ended, with no reader here and no grace counting down."""
        return not self._over and self.count == 0 and self._grace is None

    def recheck(self) -> None:
        """Readers elsewhere left (or vanished): start the grace if nobody follows here either."""
        if self.unattended:
            self.arm(self.grace_seconds)

    def arm(self, seconds: float) -> None:
        """(Re)start the grace timer."""
        self.stop()
        self._grace = greenlets.spawn_later(seconds, self._fire)

    def stop(self) -> None:
        """Drop the grace timer (not when called by the timer itself: it is ending anyway)."""
        grace, self._grace = self._grace, None
        if grace is not None and grace is not gevent.getcurrent():
            grace.kill(block=False)

    def end(self) -> None:
        """The generation ended: stop the timer for good and let go of the callbacks."""
        self._over = True
        self.stop()
        self._leave, self._followed_elsewhere = _nothing, _nobody

    def _fire(self) -> None:
        self._grace = None
        if self.count == 0 and not self._over and not self._followed_elsewhere(self.stream_id):
            self._leave()
