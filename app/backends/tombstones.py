"""Early-cancel tombstones of one worker: ids cancelled before their generation exists.

Bounded in time and in count. Every tombstone of a worker lives the same TTL, so insertion
order is expiry order: expired ones are dropped from the front of an ordered dict (O(1)
amortised per add), and past `max_count` the oldest are dropped first.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable


def tombstone_name(stream_id: str, principal: str | None) -> str:
    """One tombstone per id and canceller: `stream_id`, or `stream_id:<digest of principal>`."""
    if principal is None:
        return stream_id
    return f"{stream_id}:{hashlib.sha256(principal.encode()).hexdigest()[:24]}"


class Tombstones:
    """`add` an id for `ttl` seconds; `take` it once."""

    def __init__(self, max_count: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_count = max_count
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def _expire(self, now: float) -> None:
        until = self._until
        while until:
            key, deadline = next(iter(until.items()))
            if deadline > now:
                return
            del until[key]

    def add(self, stream_id: str, ttl: float) -> None:
        """Remember a cancel of `stream_id` for `ttl` seconds (forgetting the oldest past the cap)."""
        now = self._clock()
        self._expire(now)
        self._until.pop(stream_id, None)
        self._until[stream_id] = now + ttl
        while len(self._until) > self.max_count:
            self._until.popitem(last=False)

    def take(self, stream_id: str) -> bool:
        """True (once) if `stream_id` was cancelled and its tombstone has not expired."""
        deadline = self._until.pop(stream_id, None)
        return deadline is not None and deadline > self._clock()
