"""Followers on other workers: while a client follows a generation through worker B, the owner
worker A must not cancel it for "disconnect", though nobody follows it on A.

B keeps a member in the generation's `subs` zset (score: an expiry, refreshed every few
seconds); when its last member leaves it tells A (`idle`), and A's grace starts. A member
whose worker died is not refreshed and expires: A's listener finds such generations in
`check_orphans` and starts their grace too.
"""

from __future__ import annotations

import time

from redis.exceptions import RedisError

from app.backends.base import Local
from app.backends.redis import messages
from app.backends.redis.clients import Clients
from app.backends.redis.keys import Lifetimes, stream_key

PRESENCE_TTL = 15.0  # a follower's presence lasts this long unless refreshed
PRESENCE_REFRESH = 5.0


class Presence:
    """This worker's followers of remote generations, and the check of our generations' followers."""

    def __init__(self, clients: Clients, lifetimes: Lifetimes) -> None:
        self.clients = clients
        self.lifetimes = lifetimes
        self.following: dict[str, str] = {}  # presence member -> stream id (remote feeds here)
        self._next_refresh = 0.0

    def add(self, stream_id: str, member: str) -> None:
        """A client here started following `stream_id` (owned elsewhere) as `member`."""
        self.following[member] = stream_id
        conn = self.clients
        if not conn.usable():
            return
        try:
            pipe = conn.client.pipeline(transaction=False)
            pipe.zadd(stream_key(stream_id, "subs"), {member: time.time() + PRESENCE_TTL})
            pipe.expire(stream_key(stream_id, "subs"), self.lifetimes.running)
            pipe.execute()
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)

    def remove(self, stream_id: str, member: str, owner_worker: str | None) -> None:
        """That client left; the last one to leave tells the owner."""
        self.following.pop(member, None)
        conn = self.clients
        if not conn.usable():
            return
        try:
            key = stream_key(stream_id, "subs")
            pipe = conn.client.pipeline(transaction=False)
            pipe.zrem(key, member)
            pipe.zcount(key, time.time(), "+inf")
            _, left = pipe.execute()
            if not left and owner_worker:
                # The last follower left: let the owner start its disconnect grace.
                messages.send(conn, owner_worker, {"op": "idle", "sid": stream_id})
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)

    def elsewhere(self, stream_id: str) -> bool:
        """True if clients follow `stream_id` through other workers."""
        conn = self.clients
        if not conn.usable():
            return False
        try:
            return bool(conn.client.zcount(stream_key(stream_id, "subs"), time.time(), "+inf"))
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return False

    def tick(self, local: Local | None) -> None:
        """Every PRESENCE_REFRESH (the listener's tick): refresh our members, and start the grace
        of our unattended generations whose remote followers vanished without a word."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + PRESENCE_REFRESH
        pipe = self.clients.client.pipeline(transaction=False)
        expires = time.time() + PRESENCE_TTL
        for member, sid in list(self.following.items()):
            pipe.zadd(stream_key(sid, "subs"), {member: expires})
            # With its expiry: after a Redis restart this ZADD creates the key anew.
            pipe.expire(stream_key(sid, "subs"), self.lifetimes.running)
        # A generation nobody follows here, and whose remote followers vanished (their worker
        # died): arm its grace, so it does not run on for nobody.
        orphans = local.unattended() if local is not None else []
        for sid in orphans:
            pipe.zcount(stream_key(sid, "subs"), time.time(), "+inf")
        results = pipe.execute()
        for sid, count in zip(orphans, results[len(results) - len(orphans) :], strict=True):
            if not count and local is not None:
                local.followers_left(sid)
