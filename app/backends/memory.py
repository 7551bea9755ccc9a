"""The in-process backend: one worker, nothing shared. The default without SLUICE_REDIS_URL."""

from __future__ import annotations

from typing import Any

from app.backends.base import Feed, Local, Mirrored
from app.backends.tombstones import Tombstones, tombstone_name
from app.config import Settings


class MemoryBackend:
    """Tombstones in a dict; nothing to mirror and every remote lookup finds nothing, because
    nothing runs elsewhere."""

    shared = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tombstones = Tombstones(settings.max_tombstones)

    def start(self, local: Local) -> None:
        """Nothing to start (app.backends.workers warns when several workers share nothing)."""

    def settle(self, timeout: float) -> bool:
        """Nothing is written elsewhere: settled at once."""
        return True

    def close(self) -> None:
        """Nothing to close."""

    def ready(self) -> tuple[bool, str]:
        return True, "in-process backend"

    def claim(self, stream_id: str, ttl: float) -> bool:
        return True  # the registry checks its own dict; nobody else can hold the id

    def add_tombstone(self, stream_id: str, ttl: float, principal: str | None) -> None:
        self._tombstones.add(tombstone_name(stream_id, principal), ttl)

    def take_tombstone(self, stream_id: str, principal: str | None) -> bool:
        return self._tombstones.take(tombstone_name(stream_id, principal))

    def mirror(self, view: Mirrored) -> None:
        pass

    def changed(self, stream_id: str, urgent: bool) -> None:
        pass

    def finished(self, stream_id: str) -> None:
        pass

    def remote_status(self, stream_id: str) -> dict[str, Any] | None:
        return None

    def remote_feed(self, stream_id: str) -> Feed | None:
        return None

    def remote_cancel(self, stream_id: str, reason: str, owner: str | None) -> str:
        return "unknown"

    def remote_subscribers(self, stream_id: str) -> bool:
        return False

    def active_elsewhere(self, client: str) -> int:
        return 0
