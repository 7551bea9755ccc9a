"""The in-process backend: one worker, nothing shared. The default without SLUICE_REDIS_URL."""

from __future__ import annotations

import time
from typing import Any

from app.backends.base import Feed, Local, Mirrored
from app.backends.ledger import LocalLedger
from app.backends.tombstones import Tombstones, tombstone_name
from app.config import Settings


class LocalIds:
    """Tombstones in this process; every id is free to claim (the registry checks its own)."""

    def __init__(self, max_tombstones: int) -> None:
        self._tombstones = Tombstones(max_tombstones)

    def claim(self, stream_id: str, ttl: float) -> bool | None:
        return True  # nobody else can hold the id

    def add_tombstone(self, stream_id: str, ttl: float, principal: str | None) -> bool:
        self._tombstones.add(tombstone_name(stream_id, principal), ttl)
        return True

    def take_tombstone(self, stream_id: str, principal: str | None) -> bool:
        return self._tombstones.take(tombstone_name(stream_id, principal))


class _NoMirror:
    """No other worker reads this one's generations: nothing to copy."""

    def add(self, view: Mirrored) -> None:
        pass

    def changed(self, stream_id: str, urgent: bool) -> None:
        pass

    def finished(self, stream_id: str, view: Mirrored) -> None:
        pass

    def forget(self, stream_id: str) -> None:
        pass


class _Nowhere:
    """Nothing runs elsewhere: every lookup finds nothing."""

    def status(self, stream_id: str) -> dict[str, Any] | None:
        return None

    def feed(self, stream_id: str) -> Feed | None:
        return None

    def cancel(self, stream_id: str, reason: str, caller: str | None) -> str:
        return "unknown"

    def followed(self, stream_id: str) -> bool:
        return False


class LocalSlots:
    """Places counted in this process (what the Redis backend falls back to while Redis is down)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def held(self, kind: str, client: str) -> int:
        """How many places of `kind` `client` holds on this worker."""
        return self.counts.get((kind, client), 0)

    def reserve(self, kind: str, client: str, limit: int) -> bool:
        key = (kind, client)
        taken = self.counts.get(key, 0)
        if taken >= limit:
            return False
        self.counts[key] = taken + 1
        return True

    def release(self, kind: str, client: str) -> None:
        key = (kind, client)
        left = self.counts.get(key, 0) - 1
        if left > 0:
            self.counts[key] = left
        else:
            self.counts.pop(key, None)


class LocalRevocations:
    """Signed-out sessions of this process (what the Redis backend also keeps, for when Redis is down)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}  # session id -> unix time its cookie expires

    def revoke(self, sid: str, until: float) -> None:
        now = time.time()
        for old in [s for s, t in self._until.items() if t <= now]:
            del self._until[old]
        self._until[sid] = until

    def revoked(self, sid: str) -> bool:
        return sid in self._until


NO_MIRROR = _NoMirror()
NOWHERE = _Nowhere()


class MemoryBackend:
    """Tombstones, slots and revocations in dicts; no mirror and no other workers (see app.backends.base)."""

    shared = False
    mirror = NO_MIRROR
    remote = NOWHERE

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ids = LocalIds(settings.max_tombstones)
        self.ledger = LocalLedger()
        self.slots = LocalSlots()
        self.revocations = LocalRevocations()

    def start(self, local: Local) -> None:
        """Nothing to start (app.backends.workers warns when several workers share nothing)."""

    def settle(self, timeout: float) -> bool:
        """Nothing is written elsewhere: settled at once."""
        return True

    def close(self) -> None:
        """Nothing to close."""

    def ready(self) -> tuple[bool, str]:
        return True, "in-process backend"
