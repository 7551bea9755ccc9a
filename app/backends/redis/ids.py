"""Stream ids in Redis (`app.backends.base.Ids`): a claim key per id, a tombstone key per canceller."""

from __future__ import annotations

import math

from redis.exceptions import RedisError

from app.backends.redis.clients import Clients
from app.backends.redis.keys import stream_key, tomb_key


class RedisIds:
    """Claims (SET NX) and tombstones (SET / GETDEL).

    While Redis cannot tell (down, refusing writes, or back so recently that other workers may
    not have rewritten their claims yet) a claim answers None and a tombstone is not kept: the
    registry then says so (503) rather than guess.
    """

    def __init__(self, clients: Clients) -> None:
        self.clients = clients

    def claim(self, stream_id: str, ttl: float) -> bool | None:
        conn = self.clients
        if not conn.usable() or conn.health.resyncing():
            return None
        try:
            return bool(conn.client.set(stream_key(stream_id, "claim"), conn.worker_id, nx=True, ex=max(1, int(ttl))))
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return None

    def add_tombstone(self, stream_id: str, ttl: float, principal: str | None) -> bool:
        conn = self.clients
        if not conn.usable() or conn.health.resyncing():
            return False
        try:
            conn.client.set(tomb_key(stream_id, principal), "1", ex=max(1, int(math.ceil(ttl))))
            return True
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return False

    def take_tombstone(self, stream_id: str, principal: str | None) -> bool:
        conn = self.clients
        if not conn.usable():
            return False
        try:
            return conn.client.getdel(tomb_key(stream_id, principal)) is not None
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return False
