"""Stream ids in Redis (`app.backends.base.Ids`): a claim key per id, a tombstone key per canceller."""

from __future__ import annotations

import math

from redis.exceptions import RedisError

from app.backends.redis.connection import Connection
from app.backends.redis.keys import stream_key, tomb_key


class RedisIds:
    """Claims (SET NX) and tombstones (SET / GETDEL); with Redis down, this worker decides alone."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def claim(self, stream_id: str, ttl: float) -> bool:
        conn = self.connection
        if not conn.usable():
            return True  # degraded: only this worker's registry can check the id
        try:
            return bool(conn.client.set(stream_key(stream_id, "claim"), conn.worker_id, nx=True, ex=max(1, int(ttl))))
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return True

    def add_tombstone(self, stream_id: str, ttl: float, principal: str | None) -> None:
        conn = self.connection
        if not conn.usable():
            return
        try:
            conn.client.set(tomb_key(stream_id, principal), "1", ex=max(1, int(math.ceil(ttl))))
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)

    def take_tombstone(self, stream_id: str, principal: str | None) -> bool:
        conn = self.connection
        if not conn.usable():
            return False
        try:
            return conn.client.getdel(tomb_key(stream_id, principal)) is not None
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return False
