"""A running generation as its readers on this worker see it: a `Feed` (app.backends.base).

    Generation ──append──▶ Journal ◀──wait_after / listen── LocalFeed ◀── responses (app.delivery)
                                                               │
                                             attach / detach ──▶ Attendance (the disconnect grace)

The responses hold this, not the `Generation`: what a reader needs is the journal (to replay and
follow) and someone to tell that it came or went. The generation itself (its spec, producer,
relay) is let go as soon as it ends, even while slow readers are still sending its last events.
Its peers are `app.lifecycle.ended.Ended` (a generation that ended here, kept for replay) and
`app.backends.redis.feed.RedisFeed` (one that runs on another worker).
"""

from __future__ import annotations

from collections.abc import Callable

from gevent.event import Event

from app.lifecycle.attendance import Attendance
from app.lifecycle.journal import Journal
from app.sse import Entry


class LocalFeed:
    """The journal of a generation of this worker, and who follows it here."""

    __slots__ = ("id", "owner", "journal", "attendance")

    lost = False  # a local journal is never trimmed

    def __init__(self, stream_id: str, owner: str | None, journal: Journal, attendance: Attendance) -> None:
        self.id = stream_id
        self.owner = owner  # the principal that started the generation (None: authentication off)
        self.journal = journal
        self.attendance = attendance

    def wait_after(self, seq: int, timeout: float | None, interrupt: Event | None = None) -> list[Entry]:
        """Entries after `seq`, waiting up to `timeout` for one."""
        return self.journal.wait_after(seq, timeout, interrupt)

    def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake()` once, in the hub, at the next event (see `Journal.listen`)."""
        self.journal.listen(wake)

    @property
    def closed(self) -> bool:
        """`[DONE]` is in: nothing more will come."""
        return self.journal.closed

    def attach(self) -> None:
        """A reader arrived: it stops a pending disconnect cancel."""
        self.attendance.attach()

    def detach(self) -> None:
        """A reader left: with nobody left, the generation is cancelled after the grace period."""
        self.attendance.detach()
