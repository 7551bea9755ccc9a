"""The in-process backend: one worker, nothing shared. The default without SLUICE_REDIS_URL."""

from __future__ import annotations

from typing import Any

from app.backends.base import Feed, Local, Mirrored
from app.backends.ledger import LocalLedger
from app.backends.tombstones import Tombstones, tombstone_name
from app.config import Settings


class LocalIds:
    """Tombstones in this process; every id is free to claim (the registry checks its own)."""

    def __init__(self, max_tombstones: int) -> None:
        self._tombstones = Tombstones(max_tombstones)

    def claim(self, stream_id: str, ttl: float) -> bool:
        return True  # nobody else can hold the id

    def add_tombstone(self, stream_id: str, ttl: float, principal: str | None) -> None:
        self._tombstones.add(tombstone_name(stream_id, principal), ttl)

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

    def cancel(self, stream_id: str, reason: str, owner: str | None) -> str:
        return "unknown"

    def followed(self, stream_id: str) -> bool:
        return False

    def active(self, client: str) -> int:
        return 0


NO_MIRROR = _NoMirror()
NOWHERE = _Nowhere()


class MemoryBackend:
    """Tombstones in a dict; no mirror and no other workers (see app.backends.base)."""

    shared = False
    mirror = NO_MIRROR
    remote = NOWHERE

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ids = LocalIds(settings.max_tombstones)
        self.ledger = LocalLedger()

    def start(self, local: Local) -> None:
        """Nothing to start (app.backends.workers warns when several workers share nothing)."""

    def settle(self, timeout: float) -> bool:
        """Nothing is written elsewhere: settled at once."""
        return True

    def close(self) -> None:
        """Nothing to close."""

    def ready(self) -> tuple[bool, str]:
        return True, "in-process backend"
