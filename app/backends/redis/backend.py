"""The Redis backend: every worker and host sees every generation (SLUICE_REDIS_URL).

    worker A (owner)                         Redis                        worker B
    producer ─changed─▶ writer greenlet ──pipeline──▶ sluice:{id}:events ◀─XREAD BLOCK── RedisFeed
                                            sluice:{id}:meta      ◀─HGETALL── GET /streams/<id>
    listener greenlet ◀──── sluice:worker:A ◀──PUBLISH + HSET inbox── POST /cancel
       └─ kills the generation's greenlet (registry.cancel_local, through `Local`)

This module is the facade (`app.backends.base.Backend`); each part is a module of its own:

    connection.py  the clients, the worker id, Redis up / down (and /readyz)
    keys.py        key layout, lifetimes, the status hash written and read back
    writer.py      the mirror of this worker's generations: one writer greenlet, batched
    feed.py        following a generation owned by another worker (XREAD BLOCK)
    presence.py    followers on other workers (so the owner does not cancel for "disconnect")
    messages.py    cancel / idle messages to the owner worker
    listener.py    the pub/sub listener greenlet and its once-a-second tick

Faults. Redis is never on the path that keeps a local stream alive: `changed` only marks the
generation dirty. When a call fails the connection goes "down": request-path calls skip Redis
at once (local behaviour only, cross-worker features pause), /readyz answers 503 with the
reason, the listener reconnects with backoff, and on its return the writer resyncs every local
generation. No connection is opened before `start()` (the first request).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from redis.exceptions import RedisError

from app.backends.base import Feed, Local, Mirrored
from app.backends.redis import messages
from app.backends.redis.connection import Connection
from app.backends.redis.feed import RedisFeed
from app.backends.redis.keys import (
    Lifetimes,
    client_active_key,
    decode_owner,
    decode_status,
    entry_id,
    seq_of,
    stream_key,
    tomb_key,
)
from app.backends.redis.listener import Listener
from app.backends.redis.presence import Presence
from app.backends.redis.writer import Writer
from app.config import Settings
from app.sse import DONE

CANCEL_WAIT = 1.0  # how long POST /cancel waits for the owner's terminal event


class RedisBackend:
    """Shared state in Redis (see the module docstring)."""

    shared = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connection = Connection(settings.redis_url or "")
        lifetimes = Lifetimes.of(settings)
        self.presence = Presence(self.connection, lifetimes)
        self.writer = Writer(self.connection, lifetimes, settings.max_replay_events)
        self.listener = Listener(self.connection, self.presence, self.writer.holds)
        self.connection.on_return = self.writer.resync

    # -- life ---------------------------------------------------------------------------------

    def start(self, local: Local) -> None:
        self.connection.open()
        self.writer.start()
        self.listener.start(local)

    def settle(self, timeout: float) -> bool:
        return self.writer.settle(timeout)

    def close(self) -> None:
        self.writer.close()
        self.listener.close()
        self.connection.close()

    def ready(self) -> tuple[bool, str]:
        return self.connection.ready()

    # -- ids: claims and tombstones -----------------------------------------------------------

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

    # -- the mirror of this worker's generations (app.backends.redis.writer) ------------------

    def mirror(self, view: Mirrored) -> None:
        self.writer.add(view)

    def changed(self, stream_id: str, urgent: bool) -> None:
        self.writer.changed(stream_id, urgent)

    def finished(self, stream_id: str) -> None:
        self.writer.finished(stream_id, keep=self.settings.replay_ttl_seconds + 1)

    # -- generations elsewhere ----------------------------------------------------------------

    def remote_status(self, stream_id: str) -> dict[str, Any] | None:
        conn = self.connection
        if not conn.usable():
            return None
        try:
            meta = conn.client.hgetall(stream_key(stream_id, "meta"))
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return None
        return decode_status(stream_id, meta) if meta else None

    def remote_feed(self, stream_id: str) -> Feed | None:
        conn = self.connection
        # A Redis that refuses writes still answers reads: follow (RedisFeed ends, bounded).
        if not conn.usable() and not conn.refusing:
            return None
        try:
            pipe = conn.client.pipeline(transaction=False)
            pipe.hmget(stream_key(stream_id, "meta"), "worker", "owner")
            pipe.xrevrange(stream_key(stream_id, "events"), "+", "-", count=1)
            (worker, owner), last = pipe.execute()
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return None
        if worker is None and not last:
            return None
        closed = bool(last) and last[0][1].get("d") == DONE
        return RedisFeed(conn, self.presence, stream_id, worker, closed, owner=decode_owner(owner))

    def remote_cancel(self, stream_id: str, reason: str, owner: str | None) -> str:
        conn = self.connection
        if not conn.usable():
            return "unknown"
        try:
            pipe = conn.client.pipeline(transaction=False)
            pipe.hgetall(stream_key(stream_id, "meta"))
            pipe.get(stream_key(stream_id, "claim"))
            meta, claimed_by = pipe.execute()
            if meta:
                status = decode_status(stream_id, meta)
                if status["owner"] is not None and status["owner"] != owner:
                    return "unknown"  # not the caller's: answered exactly as an unknown id
                if status["state"] != "running":
                    return "finished"
                worker = meta.get("worker") or claimed_by
            elif claimed_by:
                worker = claimed_by  # starting right now on that worker: it checks the owner
            else:
                return "unknown"
            message = {"op": "cancel", "sid": stream_id, "reason": reason, "owner": owner}
            messages.send(conn.client, worker, message, inbox=True)
            if not meta:
                return "unknown"
            self._await_end(stream_id, status["events"])
            return "cancelled"
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return "unknown"

    def _await_end(self, stream_id: str, after: int) -> None:
        """Like the local path (which joins the greenlet), return once the generation's
        terminal event is in the shared log, or after CANCEL_WAIT: a blocking read, no polling."""
        key = stream_key(stream_id, "events")
        deadline = time.monotonic() + CANCEL_WAIT
        while (left := deadline - time.monotonic()) > 0:
            found = self.connection.client.xread(
                {key: entry_id(after)}, count=100, block=max(1, int(min(left, 1.0) * 1000))
            )
            rows = (list(found.values())[0][0] if isinstance(found, dict) else found[0][1]) if found else []
            for rid, fields in rows:
                after = seq_of(rid)
                data = fields.get("d", "")
                if data == DONE or json.loads(data).get("type") in ("done", "error", "cancelled"):
                    return

    def remote_subscribers(self, stream_id: str) -> bool:
        return self.presence.elsewhere(stream_id)

    def active_elsewhere(self, client: str) -> int:
        """Running generations of `client` on OTHER workers (the registry counts its own)."""
        conn = self.connection
        if not conn.usable():
            return 0
        try:
            members = conn.client.zrangebyscore(client_active_key(client), time.time(), "+inf")
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return 0
        mine = f"{conn.worker_id}|"
        return sum(1 for m in members if not m.startswith(mine))
