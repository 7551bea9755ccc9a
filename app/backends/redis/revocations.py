"""Signed-out sessions in Redis (`app.backends.base.Revocations`): one key per session id.

    sluice:{s:<sid>}:revoked   string "1", with the TTL of the cookie it refuses

Trap: while Redis is down a revoked session is refused only by the worker that ended it (it
keeps its own list too); refusing every session instead would sign every browser out for the
length of the outage.
"""

from __future__ import annotations

import time

from redis.exceptions import RedisError

from app.backends.memory import LocalRevocations
from app.backends.redis.clients import Clients
from app.backends.redis.keys import revoked_key


class RedisRevocations:
    """SET with a TTL to revoke, EXISTS to check; this worker's own list besides."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.here = LocalRevocations()

    def revoke(self, sid: str, until: float) -> None:
        self.here.revoke(sid, until)
        conn = self.clients
        if not conn.usable():
            return
        try:
            conn.client.set(revoked_key(sid), "1", ex=max(1, int(until - time.time()) + 1))
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)

    def revoked(self, sid: str) -> bool:
        if self.here.revoked(sid):
            return True
        conn = self.clients
        if not conn.usable():
            return False
        try:
            return bool(conn.client.exists(revoked_key(sid)))
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return False
