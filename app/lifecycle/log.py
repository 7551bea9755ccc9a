"""A generation's event log: numbered, encoded once, replayable, followed live.

Producer and subscribers meet here. The producer appends; each subscriber asks for "everything
after seq N", and waits on a wake-up event when it has seen it all. Events are encoded to SSE
bytes once, at append time, so ten tabs on one generation cost one encode per event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import gevent
from gevent.event import Event

from app import sse

DONE = "[DONE]"


class Entry(NamedTuple):
    """One event as stored and sent: its seq, its `data` text and its encoded SSE bytes."""

    seq: int
    data: str
    wire: bytes


def make_entry(stream_id: str, seq: int, data: str) -> Entry:
    """Encode one event with its `<stream_id>:<seq>` id."""
    return Entry(seq, data, sse.encode(data, id=f"{stream_id}:{seq}"))


class EventLog:
    """Append-only list of entries with a wake-up for followers."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.entries: list[Entry] = []
        self._wake = Event()

    @property
    def last_seq(self) -> int:
        return len(self.entries)

    @property
    def closed(self) -> bool:
        """True once `[DONE]` is in the log."""
        return bool(self.entries) and self.entries[-1].data == DONE

    def append(self, payload: dict[str, Any] | str) -> Entry:
        """Add one event (a payload dict, or the `[DONE]` marker) and wake every follower."""
        data = payload if isinstance(payload, str) else sse.dumps(payload)
        entry = make_entry(self.stream_id, len(self.entries) + 1, data)
        self.entries.append(entry)
        # Swap before set: a follower that wakes and finds nothing new waits on the new event.
        wake, self._wake = self._wake, Event()
        wake.set()
        return entry

    def after(self, seq: int) -> list[Entry]:
        """Every entry with a seq greater than `seq` (seq counts from 1, so it is an index)."""
        return self.entries[max(seq, 0):]

    def wait_after(self, seq: int, timeout: float | None, interrupt: Event | None = None) -> list[Entry]:
        """Entries after `seq`, waiting up to `timeout` for one if there are none yet."""
        if len(self.entries) > seq or self.closed:
            return self.after(seq)
        waits: Iterable[Event] = (self._wake, interrupt) if interrupt is not None else (self._wake,)
        gevent.wait(list(waits), timeout=timeout, count=1)
        return self.after(seq)
