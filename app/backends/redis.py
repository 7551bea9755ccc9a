"""The Redis backend: every worker and host sees every generation (SLUICE_REDIS_URL).

    worker A (owner)                         Redis                        worker B
    producer ─publish─▶ writer greenlet ──pipeline──▶ sluice:{id}:events ◀─XREAD BLOCK── RedisFeed
                                            sluice:{id}:meta      ◀─HGETALL── GET /streams/<id>
    listener greenlet ◀──── sluice:worker:A ◀──PUBLISH + HSET inbox── POST /cancel
       └─ kills the generation's greenlet (registry.cancel_local)

Per worker: ONE listener greenlet (pub/sub; it also ticks once a second: the cancel inbox,
presence refresh, orphan check, recovery probe) and ONE writer greenlet (app.backends.redis_writer).
Key layout and TTLs: app.backends.redis_keys.

Faults. Redis is never on the path that keeps a local stream alive: `publish` only marks the
generation dirty. When a call fails the backend goes "down": request-path calls skip Redis at
once (local behaviour only, cross-worker features pause), /readyz answers 503 with the reason,
the listener reconnects with backoff, and on its return the writer resyncs every local
generation. No connection is opened before `start()` (the first request).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

import gevent
import redis
from gevent.event import Event
from redis.backoff import NoBackoff
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.retry import Retry

from app.backends.base import CancelHandler, Feed
from app.backends.redis_feed import RedisFeed
from app.backends.redis_keys import (
    ALIVE_TTL,
    client_key,
    entry_id,
    redacted_url,
    seq_of,
    stream_key,
    worker_alive,
    worker_channel,
    worker_inbox,
)
from app.backends.redis_writer import Mirror, Writer, meta_fields
from app.config import Settings
from app.lifecycle.journal import DONE, Entry
from app.lifecycle.tombstones import tombstone_name

if TYPE_CHECKING:
    from app.lifecycle.generation import Generation

log = logging.getLogger("sluice.redis")

SOCKET_TIMEOUT = 3.0  # > BLOCK_SLICE of the feed, so a blocking XREAD never trips it
CONNECT_TIMEOUT = 1.0
HEALTH_CHECK_INTERVAL = 10
TICK = 1.0  # listener housekeeping period
PRESENCE_TTL = 15.0  # a follower's presence lasts this long unless refreshed
PRESENCE_REFRESH = 5.0
INBOX_TTL = 120  # seconds an unhandled cancel message is kept
CANCEL_WAIT = 1.0  # how long POST /cancel waits for the owner's terminal event
RECONNECT_MAX = 2.0  # seconds between reconnect attempts, at most: a returning Redis is seen soon
RESYNC_WINDOW = 3.0  # seconds after Redis returns during which other workers may still be resyncing


class RedisBackend:
    """Shared state in Redis (see the module docstring)."""

    shared = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.redis_url or ""
        self.worker_id = ""
        self.client: Any = None  # redis.Redis, created in start()
        self._pubsub_client: Any = None
        self.running_ttl = int(math.ceil(settings.max_duration + settings.replay_ttl_seconds + 60))
        self.replay_ttl = max(1, int(math.ceil(settings.replay_ttl_seconds)))
        self.max_events = settings.max_replay_events
        self.mirrors: dict[str, Mirror] = {}
        self.following: dict[str, str] = {}  # presence member -> stream id (remote feeds here)
        self.up = Event()  # set while Redis answers
        self._state = "unknown"  # unknown | up | down
        self._reason = "not started"
        self._refusing = False  # down because Redis refuses writes (it still answers reads)
        self._on_cancel: CancelHandler | None = None
        self._writer = Writer(self)
        self._listener: gevent.Greenlet | None = None
        self._closing = False
        self._next_presence = 0.0
        self._resync_until = 0.0
        self._scripts: dict[str, Any] = {}

    # -- life ---------------------------------------------------------------------------------

    def start(self, on_cancel: CancelHandler) -> None:
        self._on_cancel = on_cancel
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        options: dict[str, Any] = {
            "decode_responses": True,
            # redis-py's default socket_timeout (5 s) would cut blocking reads: every blocking
            # call here (XREAD BLOCK, pub/sub get_message) uses a shorter timeout of its own.
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "health_check_interval": HEALTH_CHECK_INTERVAL,
            # One quick retry (a pooled connection that died with a Redis restart), no backoff:
            # a request must learn fast that Redis is gone, and fall back to local behaviour.
            "retry": Retry(NoBackoff(), 1),
        }
        self.client = redis.Redis.from_url(self.url, **options)
        self._pubsub_client = redis.Redis.from_url(self.url, **options)
        log.info("shared backend: Redis at %s (worker %s)", redacted_url(self.url), self.worker_id)
        self._writer.start()
        self._listener = gevent.spawn(self._listen)

    def settle(self, timeout: float) -> bool:
        return self._writer.settle(timeout)

    def close(self) -> None:
        self._closing = True
        self._writer.close()
        if self._listener is not None:
            self._listener.kill(block=True, timeout=1.0)
        for c in (self.client, self._pubsub_client):
            if c is not None:
                with contextlib.suppress(RedisError, OSError):
                    c.close()

    def ready(self) -> tuple[bool, str]:
        if self.client is None:
            return False, "redis backend not started"
        if self._state == "down":
            return False, self._reason
        if time.monotonic() < self._resync_until:
            # Redis came back (maybe empty): until every worker has written its generations
            # again, "not found" may only mean "not rewritten yet".
            return False, "redis is back; workers are resyncing their generations"
        try:
            self.client.ping()
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return False, self._reason
        return True, "redis"

    # -- health -------------------------------------------------------------------------------

    def usable(self) -> bool:
        """False while Redis is known to be down: request paths then skip it at once."""
        return self.client is not None and self._state != "down"

    def mark_down(self, exc: BaseException) -> None:
        # A refusal (OOM under noeviction, READONLY replica, no permission) is "down" too: a
        # Redis that takes no writes cannot carry cancels, replays or status.
        self._refusing = isinstance(exc, ResponseError)
        what = "refuses writes" if self._refusing else "unreachable"
        self._reason = f"redis {what} at {redacted_url(self.url)}: {type(exc).__name__}: {exc}"
        if self._state != "down":
            log.warning("%s; cross-worker cancel, resume and status are paused, local streams continue", self._reason)
        self._state = "down"
        self.up.clear()
        if isinstance(exc, ReadOnlyError):
            # A failover made this server a replica. The URL's name (DNS, proxy, cloud endpoint)
            # leads new connections to the new primary; pooled ones would ask the old forever.
            for c in (self.client, self._pubsub_client):
                if c is not None:
                    c.connection_pool.disconnect(inuse_connections=False)

    def _mark_up(self) -> None:
        was = self._state
        self._state = "up"
        self._reason = "redis"
        if was == "down":
            self._resync_until = time.monotonic() + RESYNC_WINDOW
            log.warning("redis is reachable again at %s; resyncing this worker's generations", redacted_url(self.url))
            for mirror in self.mirrors.values():
                # Redis may have restarted empty: find out again what it holds of each.
                mirror.synced = mirror.final = False
                self._writer.mark(mirror)
        self.up.set()

    def script(self, source: str) -> Any:
        """A Lua script registered once (redis-py runs it by hash, loading it again if needed)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script

    def ttl_for(self, gen: Generation) -> int:
        return self.running_ttl if gen.running else self.replay_ttl

    # -- tombstones and claims ----------------------------------------------------------------

    def add_tombstone(self, stream_id: str, ttl: float, principal: str | None) -> None:
        if not self.usable():
            return
        try:
            self.client.set(_tomb_key(stream_id, principal), "1", ex=max(1, int(math.ceil(ttl))))
        except (RedisError, OSError) as exc:
            self.mark_down(exc)

    def take_tombstone(self, stream_id: str, principal: str | None) -> bool:
        if not self.usable():
            return False
        try:
            return self.client.getdel(_tomb_key(stream_id, principal)) is not None
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return False

    def claim(self, stream_id: str, ttl: float) -> bool:
        if not self.usable():
            return True  # degraded: only this worker's registry can check the id
        try:
            return bool(self.client.set(stream_key(stream_id, "claim"), self.worker_id, nx=True, ex=max(1, int(ttl))))
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return True

    # -- mirroring this worker's generations --------------------------------------------------

    def write_registration(self, pipe: Any, gen: Generation) -> None:
        """Claim, status hash and client count of `gen`, queued on `pipe`."""
        ttl = self.ttl_for(gen)
        meta = stream_key(gen.id, "meta")
        pipe.set(stream_key(gen.id, "claim"), self.worker_id, ex=ttl)
        pipe.hset(meta, mapping=meta_fields(gen, self.worker_id))
        pipe.expire(meta, ttl)
        active = client_key(gen.client)
        if gen.running:
            pipe.zremrangebyscore(active, "-inf", time.time())
            pipe.zadd(active, {f"{self.worker_id}|{gen.id}": time.time() + self.running_ttl})
            pipe.expire(active, self.running_ttl)

    def register(self, generation: Generation) -> None:
        mirror = Mirror(generation)
        self.mirrors[generation.id] = mirror
        if self.usable():
            # Written now, not batched: a cancel or status on another worker right after the
            # 201 must find it.
            try:
                pipe = self.client.pipeline(transaction=False)
                self.write_registration(pipe, generation)
                pipe.execute()
                mirror.synced = True
            except (RedisError, OSError) as exc:
                self.mark_down(exc)
        if not mirror.synced:
            self._writer.mark(mirror)

    def publish(self, generation: Generation, entry: Entry) -> None:
        mirror = self.mirrors.get(generation.id)
        if mirror is not None:
            self._writer.mark(mirror, urgent=entry.done)

    def finished(self, generation: Generation) -> None:
        mirror = self.mirrors.get(generation.id)
        if mirror is None:
            return
        self._writer.mark(mirror, urgent=True)
        gevent.spawn_later(self.settings.replay_ttl_seconds + 1, self._forget, generation.id, mirror)

    def _forget(self, stream_id: str, mirror: Mirror) -> None:
        if self.mirrors.get(stream_id) is mirror:
            del self.mirrors[stream_id]

    # -- generations elsewhere ----------------------------------------------------------------

    def remote_status(self, stream_id: str) -> dict[str, Any] | None:
        if not self.usable():
            return None
        try:
            meta = self.client.hgetall(stream_key(stream_id, "meta"))
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return None
        if not meta:
            return None
        return {
            "stream_id": stream_id,
            "state": meta.get("state"),
            "provider": meta.get("provider"),
            "model": meta.get("model"),
            "created_at": float(meta.get("created_at") or 0),
            "events": int(meta.get("events") or 0),
            "usage": json.loads(meta.get("usage") or "{}"),
            "stop_reason": json.loads(meta.get("stop_reason") or "null"),
            "owner": json.loads(meta.get("owner") or "null"),  # checked by the registry, never shown
        }

    def remote_feed(self, stream_id: str) -> Feed | None:
        # A Redis that refuses writes still answers reads: follow (RedisFeed ends, bounded).
        if not self.usable() and not self._refusing:
            return None
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(stream_key(stream_id, "meta"), "worker", "owner")
            pipe.xrevrange(stream_key(stream_id, "events"), "+", "-", count=1)
            (worker, owner), last = pipe.execute()
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return None
        if worker is None and not last:
            return None
        closed = bool(last) and last[0][1].get("d") == DONE
        return RedisFeed(self, stream_id, worker, closed, owner=json.loads(owner or "null"))

    def remote_cancel(self, stream_id: str, reason: str, owner: str | None) -> str:
        if not self.usable():
            return "unknown"
        r = self.client
        try:
            pipe = r.pipeline(transaction=False)
            pipe.hgetall(stream_key(stream_id, "meta"))
            pipe.get(stream_key(stream_id, "claim"))
            meta, claimed_by = pipe.execute()
            if meta:
                gen_owner = json.loads(meta.get("owner") or "null")
                if gen_owner is not None and gen_owner != owner:
                    return "unknown"  # not the caller's: answered exactly as an unknown id
                if meta.get("state") != "running":
                    return "finished"
                worker = meta.get("worker") or claimed_by
            elif claimed_by:
                worker = claimed_by  # starting right now on that worker: it checks the owner
            else:
                return "unknown"
            self._send(worker, {"op": "cancel", "sid": stream_id, "reason": reason, "owner": owner}, inbox=True)
            if not meta:
                return "unknown"
            self._await_end(stream_id, int(meta.get("events") or 0))
            return "cancelled"
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return "unknown"

    def _await_end(self, stream_id: str, after: int) -> None:
        """Like the local path (which joins the greenlet), return once the generation's
        terminal event is in the shared log, or after CANCEL_WAIT: a blocking read, no polling."""
        key = stream_key(stream_id, "events")
        deadline = time.monotonic() + CANCEL_WAIT
        while (left := deadline - time.monotonic()) > 0:
            found = self.client.xread({key: entry_id(after)}, count=100, block=max(1, int(min(left, 1.0) * 1000)))
            rows = (list(found.values())[0][0] if isinstance(found, dict) else found[0][1]) if found else []
            for rid, fields in rows:
                after = seq_of(rid)
                data = fields.get("d", "")
                if data == DONE or json.loads(data).get("type") in ("done", "error", "cancelled"):
                    return

    def _send(self, worker: str, message: dict[str, Any], *, inbox: bool = False) -> None:
        """Publish to `worker`; with `inbox`, also keep it until handled (a missed message)."""
        message["at"] = time.time()
        data = json.dumps(message)
        pipe = self.client.pipeline(transaction=False)
        if inbox:
            pipe.hset(worker_inbox(worker), message["sid"], data)
            pipe.expire(worker_inbox(worker), INBOX_TTL)
        pipe.publish(worker_channel(worker), data)
        pipe.execute()

    # -- presence of followers on other workers -----------------------------------------------

    def presence_add(self, stream_id: str, member: str) -> None:
        self.following[member] = stream_id
        if not self.usable():
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(stream_key(stream_id, "subs"), {member: time.time() + PRESENCE_TTL})
            pipe.expire(stream_key(stream_id, "subs"), self.running_ttl)
            pipe.execute()
        except (RedisError, OSError) as exc:
            self.mark_down(exc)

    def presence_remove(self, stream_id: str, member: str, owner_worker: str | None) -> None:
        self.following.pop(member, None)
        if not self.usable():
            return
        try:
            key = stream_key(stream_id, "subs")
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(key, member)
            pipe.zcount(key, time.time(), "+inf")
            _, left = pipe.execute()
            if not left and owner_worker:
                # The last follower left: let the owner start its disconnect grace.
                self._send(owner_worker, {"op": "idle", "sid": stream_id})
        except (RedisError, OSError) as exc:
            self.mark_down(exc)

    def remote_subscribers(self, stream_id: str) -> bool:
        if not self.usable():
            return False
        try:
            return bool(self.client.zcount(stream_key(stream_id, "subs"), time.time(), "+inf"))
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return False

    def active_for_client(self, client: str) -> int:
        """Running generations of `client` on OTHER workers (the registry counts its own)."""
        if not self.usable():
            return 0
        try:
            members = self.client.zrangebyscore(client_key(client), time.time(), "+inf")
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return 0
        mine = f"{self.worker_id}|"
        return sum(1 for m in members if not m.startswith(mine))

    # -- the listener: pub/sub plus a once-a-second tick ----------------------------------------

    def _listen(self) -> None:
        backoff = 0.1
        channel = worker_channel(self.worker_id)
        while not self._closing:
            pubsub = None
            try:
                pubsub = self._pubsub_client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                next_tick = 0.0
                while not self._closing:
                    if time.monotonic() >= next_tick:
                        # Also the recovery probe after a failed call: Redis is "up" once the
                        # tick's writes are taken (a Redis that refuses them, OOM, is no flapping).
                        self._tick()
                        backoff = 0.1
                        next_tick = time.monotonic() + TICK
                    # Its own timeout, well below the socket timeout.
                    message = pubsub.get_message(timeout=max(0.01, next_tick - time.monotonic()))
                    if message is not None and message.get("type") == "message":
                        self._handle(message["data"])
            except (RedisError, OSError) as exc:
                self.mark_down(exc)
            except gevent.GreenletExit:
                return
            except Exception:
                log.exception("redis listener failed; restarting it")
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        pubsub.close()
            if not self._closing:
                gevent.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX)

    def _handle(self, data: str, from_inbox: bool = False) -> bool:
        """Act on one message; True when it is done with (the inbox entry may go)."""
        try:
            message = json.loads(data)
            sid = message["sid"]
        except (ValueError, KeyError, TypeError):
            return True
        mirror = self.mirrors.get(sid)
        if mirror is None:
            # Not (yet) registered here: keep an inbox entry a while (a claim just made).
            return not from_inbox or time.time() - float(message.get("at") or 0) > INBOX_TTL / 2
        gen = mirror.gen
        if message.get("op") == "cancel":
            if gen.running and (gen.owner is None or gen.owner == message.get("owner")) and self._on_cancel:
                self._on_cancel(sid, str(message.get("reason") or "user"))
        elif message.get("op") == "idle":
            # When the grace expires, the generation checks remote presence again.
            gen.recheck_attached()
        return True

    def _tick(self) -> None:
        r = self.client
        inbox = worker_inbox(self.worker_id)
        r.set(worker_alive(self.worker_id), "1", ex=ALIVE_TTL)
        pending = r.hgetall(inbox)
        if self._state != "up":
            self._mark_up()
        done = [sid for sid, data in pending.items() if self._handle(data, from_inbox=True)]
        if done:
            r.hdel(inbox, *done)
        now = time.monotonic()
        if now < self._next_presence:
            return
        self._next_presence = now + PRESENCE_REFRESH
        pipe = r.pipeline(transaction=False)
        expires = time.time() + PRESENCE_TTL
        for member, sid in list(self.following.items()):
            pipe.zadd(stream_key(sid, "subs"), {member: expires})
            # With its expiry: after a Redis restart this ZADD creates the key anew.
            pipe.expire(stream_key(sid, "subs"), self.running_ttl)
        # A generation nobody follows here, and whose remote followers vanished without a word
        # (their worker died): arm its grace, so it does not run on for nobody.
        orphans = [m.gen for m in self.mirrors.values() if m.gen.unattended]
        for gen in orphans:
            pipe.zcount(stream_key(gen.id, "subs"), time.time(), "+inf")
        results = pipe.execute()
        for gen, count in zip(orphans, results[len(results) - len(orphans) :], strict=True):
            if not count:
                gen.recheck_attached()


def _tomb_key(stream_id: str, principal: str | None) -> str:
    """The tombstone of `principal`'s early cancel (hash-tagged on the id, as its other keys)."""
    name = tombstone_name(stream_id, principal)
    return stream_key(stream_id, "tomb" + name[len(stream_id):])
