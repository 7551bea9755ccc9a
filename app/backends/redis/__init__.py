"""The Redis backend (SLUICE_REDIS_URL): see app.backends.redis.backend for how its parts fit."""

from app.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
