"""Generations owned by other workers (`app.backends.base.Remote`): status, feed, cancel, followers.

Lookups read what the owner's writer mirrored (app.backends.redis.writer) and, for followers,
their presence (app.backends.redis.presence); a cancel is a message to the owner's inbox
(app.backends.redis.messages), then a blocking read of the generation's events until its
terminal event. With Redis down nothing is found elsewhere (a Redis that only refuses writes
is still read, to follow a stream to its end).
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.exceptions import RedisError

from app.backends.base import Feed
from app.backends.redis import messages
from app.backends.redis.clients import Clients
from app.backends.redis.feed import RedisFeed
from app.backends.redis.keys import decode_owner, decode_status, entry_id, seq_of, stream_key, worker_alive
from app.backends.redis.presence import Presence
from app.sse import DONE

CANCEL_WAIT = 1.0  # how long POST /cancel waits for the owner's terminal event


class RedisRemote:
    """The other workers' generations, as Redis holds them."""

    def __init__(self, clients: Clients, presence: Presence) -> None:
        self.clients = clients
        self.presence = presence

    def status(self, stream_id: str) -> dict[str, Any] | None:
        conn = self.clients
        if not conn.usable():
            return None
        try:
            meta = conn.client.hgetall(stream_key(stream_id, "meta"))
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return None
        return decode_status(stream_id, meta) if meta else None

    def feed(self, stream_id: str) -> Feed | None:
        conn = self.clients
        # A Redis that refuses writes still answers reads: follow (RedisFeed ends, bounded).
        if not conn.usable() and not conn.health.refusing:
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

    def cancel(self, stream_id: str, reason: str, caller: str | None) -> str:
        """'cancelled' or 'finished' as the generation's own terminal event says, 'unknown', or
        'unreachable' while Redis cannot tell (down, or rewriting after a return)."""
        conn = self.clients
        if not conn.usable():
            return "unreachable"
        try:
            pipe = conn.client.pipeline(transaction=False)
            pipe.hgetall(stream_key(stream_id, "meta"))
            pipe.get(stream_key(stream_id, "claim"))
            meta, claimed_by = pipe.execute()
            if meta:
                status = decode_status(stream_id, meta)
                if status["owner"] is not None and status["owner"] != caller:
                    return "unknown"  # not the caller's: answered exactly as an unknown id
                if status["state"] != "running":
                    return "finished"
                worker = meta.get("worker") or claimed_by
            elif claimed_by:
                worker = claimed_by  # starting right now on that worker: it checks the owner
            else:
                return "unreachable" if conn.health.resyncing() else "unknown"
            if meta and not conn.client.exists(worker_alive(worker)):
                # Its worker is gone: nobody can stop it, and it is not running any more (a
                # follower ends it with an error once it notices).
                return "finished"
            message = {"op": "cancel", "sid": stream_id, "reason": reason, "owner": caller}
            messages.send(conn, worker, message, inbox=True)
            if not meta:
                return "unknown"
            ended = self._await_end(stream_id, status["events"])
            # The owner answers with the generation's end: `cancelled` if the cancel stopped it,
            # `done` or `error` if it had ended first. None: the cancel is on its way (as the
            # local path, which also answers `cancelled` when the join times out).
            return "finished" if ended in ("done", "error") else "cancelled"
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return "unreachable"

    def _await_end(self, stream_id: str, after: int) -> str | None:
        """Like the local path (which joins the greenlet), wait until the generation's terminal
        event is in the shared log, or CANCEL_WAIT: a blocking read, no polling. Its type, or None."""
        key = stream_key(stream_id, "events")
        deadline = time.monotonic() + CANCEL_WAIT
        while (left := deadline - time.monotonic()) > 0:
            found = self.clients.client.xread(
                {key: entry_id(after)}, count=100, block=max(1, int(min(left, 1.0) * 1000))
            )
            rows = (list(found.values())[0][0] if isinstance(found, dict) else found[0][1]) if found else []
            for rid, fields in rows:
                after = seq_of(rid)
                data = fields.get("d", "")
                if data == DONE:
                    return "done"  # [DONE] with no terminal event before it: an ended stream
                kind = json.loads(data).get("type")
                if kind in ("done", "error", "cancelled"):
                    return str(kind)
        return None

    def followed(self, stream_id: str) -> bool:
        return self.presence.elsewhere(stream_id)
