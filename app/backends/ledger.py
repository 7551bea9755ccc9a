"""Budget counters in this process (`app.backends.base.Ledger`): the default without Redis.

Per worker: with several workers and no Redis, each worker counts its own generations only, so
a principal may spend up to the budget once per worker (docs/api.md, "Budgets").
"""

from __future__ import annotations

import time
from collections.abc import Sequence


class LocalLedger:
    """`used` and `reserved` per key in a dict; a key is forgotten once its window has passed."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}  # key -> [used, reserved]
        self._expires: dict[str, float] = {}
        self._next_sweep = 0.0

    def _get(self, key: str, ttl: int) -> list[int]:
        self._expires[key] = time.monotonic() + ttl
        return self._counts.setdefault(key, [0, 0])

    def _sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        for key in [k for k, t in self._expires.items() if t < now]:
            del self._expires[key]
            self._counts.pop(key, None)

    def reserve(self, keys: Sequence[str], budgets: Sequence[int], want: int, least: int,
                ttl: int) -> tuple[int, int]:
        self._sweep()
        # No greenlet switch between the reads and the writes: atomic within the worker.
        counts = [self._get(key, ttl) for key in keys]
        left = min(budget - used - reserved for budget, (used, reserved) in zip(budgets, counts, strict=True))
        room = min(want, left)
        if room < least or room <= 0:
            return 0, max(0, left)
        for count in counts:
            count[1] += room
        return room, left

    def settle(self, keys: Sequence[str], reserved: int, charged: int, ttl: int) -> None:
        for key in keys:
            count = self._get(key, ttl)
            count[1] = max(0, count[1] - reserved)
            count[0] += charged

    def read(self, key: str) -> tuple[int, int]:
        used, reserved = self._counts.get(key, (0, 0))
        return used, reserved
