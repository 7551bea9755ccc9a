"""Shared state behind one interface: in-process by default, Redis when SLUICE_REDIS_URL is set."""

from __future__ import annotations

from app.backends.base import Backend
from app.config import Settings


def build_backend(settings: Settings) -> Backend:
    """The backend the settings ask for (Redis is imported only when configured)."""
    if settings.redis_url:
        from app.backends.redis import RedisBackend

        backend: Backend = RedisBackend(settings)
        return backend
    from app.backends.memory import MemoryBackend

    return MemoryBackend(settings)
