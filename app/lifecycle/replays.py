"""Generations that ended on this worker, kept for replay: one TTL, one byte cap, one timer.

A finished generation stays replayable for SLUICE_REPLAY_TTL_SECONDS, but together the ended
generations of a worker hold at most SLUICE_REPLAY_MAX_BYTES (their sealed journals: see
`ended.Ended`); past it the oldest are forgotten first. They are kept in the order they ended,
all with the same TTL, so the oldest is always the next to expire: one libev timer for all,
armed for it (thousands may wait out their TTL at once), never a greenlet or a timer each.

This is the worker's only replay expiry. With Redis, the copy there expires by its keys' own
TTL (app.backends.redis.keys.Lifetimes), so a generation forgotten here is still replayed from
Redis while those keys live; `forgotten` tells the mirror it may let go of its copy here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import gevent

from app.lifecycle.ended import Ended


class Replays:
    """Ended generations by id, oldest first, within a TTL and a byte cap."""

    def __init__(self, ttl: float, max_bytes: int, forgotten: Callable[[str], None]) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.nbytes = 0  # what the kept generations hold (their `Ended.nbytes`)
        self._ended: OrderedDict[str, Ended] = OrderedDict()
        self._forgotten = forgotten  # told of each id dropped (the mirror's `forget`)
        self._timer: Any = None  # the oldest one's TTL

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._ended

    def __len__(self) -> int:
        return len(self._ended)

    def get(self, stream_id: str) -> Ended | None:
        """The ended generation `stream_id`, while it is kept."""
        return self._ended.get(stream_id)

    def expires(self) -> float:
        """The monotonic time a generation that ends now stops being replayable."""
        return time.monotonic() + self.ttl

    def keep(self, ended: Ended) -> None:
        """Keep a generation that just ended (made with `expires()`); forget the oldest past the cap."""
        self._ended[ended.id] = ended
        self.nbytes += ended.nbytes
        while self.nbytes > self.max_bytes and self._ended:
            self._forget(next(iter(self._ended)))  # the oldest first
        if self._timer is None:
            self._arm()

    def _forget(self, stream_id: str) -> None:
        ended = self._ended.pop(stream_id)
        self.nbytes -= ended.nbytes
        self._forgotten(stream_id)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._ended:
            oldest = next(iter(self._ended.values()))
            self._timer = gevent.get_hub().loop.timer(max(0.0, oldest.expires - time.monotonic()))
            self._timer.start(self._expire)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._ended and next(iter(self._ended.values())).expires <= now:
            self._forget(next(iter(self._ended)))
        self._arm()
