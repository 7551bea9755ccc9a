"""The listener: one greenlet per worker on its pub/sub channel, plus a once-a-second tick.

It acts on the messages other workers send this one (app.backends.redis.messages): a cancel
stops a local generation, an `idle` starts its disconnect grace (both through `Local`, the
registry). The tick refreshes the worker's alive key, handles the inbox (messages pub/sub
missed), runs the presence check, refreshes this worker's slot counts, and is the recovery
probe: a tick that succeeds after a fault marks Redis up again. A lost connection is retried with a backoff of at most
RECONNECT_MAX, so a returning Redis is seen soon.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
from redis.exceptions import RedisError

from app.backends.base import Local
from app.backends.redis import messages
from app.backends.redis.clients import Clients
from app.backends.redis.cluster import ShardedSubscriber
from app.backends.redis.keys import ALIVE_TTL, worker_alive, worker_channel, worker_inbox
from app.backends.redis.presence import Presence
from app.backends.redis.slots import RedisSlots

log = logging.getLogger("sluice.redis")

TICK = 1.0  # housekeeping period
RECONNECT_MAX = 2.0  # seconds between reconnect attempts, at most


class Listener:
    """Receives this worker's messages; `mirrored(sid)` tells whether `sid` is ours (yet)."""

    def __init__(self, clients: Clients, presence: Presence, mirrored: Callable[[str], bool],
                 slots: RedisSlots | None = None) -> None:
        self.clients = clients
        self.presence = presence
        self.slots = slots
        self.mirrored = mirrored
        self._local: Local | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._closing = False

    def start(self, local: Local) -> None:
        self._local = local
        self._greenlet = gevent.spawn(self._listen)

    def close(self) -> None:
        self._closing = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1.0)

    def _listen(self) -> None:
        conn = self.clients
        backoff = 0.1
        channel = worker_channel(conn.worker_id)
        while not self._closing:
            pubsub = None
            try:
                pubsub = self._subscribe(channel)
                next_tick = 0.0
                while not self._closing:
                    if time.monotonic() >= next_tick:
                        if conn.follow_primary():
                            break  # subscribe again, on the new primary
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
                conn.mark_down(exc)
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

    def _subscribe(self, channel: str) -> Any:
        """This worker's one subscription: plain pub/sub, or sharded on a Cluster."""
        conn = self.clients
        if conn.cluster:
            conn.open_cluster()
            return ShardedSubscriber(conn.client, channel)
        pubsub = conn.pubsub_client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel)
        return pubsub

    def _handle(self, data: str, from_inbox: bool = False) -> bool:
        """Act on one message; True when it is done with (the inbox entry may go)."""
        message = messages.parse(data)
        if message is None:
            return True
        sid = message["sid"]
        if not self.mirrored(sid) or self._local is None:
            # Not (yet) registered here: keep an inbox entry a while (a claim just made).
            return not from_inbox or time.time() - float(message.get("at") or 0) > messages.INBOX_TTL / 2
        if message.get("op") == "cancel":
            self._local.cancel_local(sid, str(message.get("reason") or "user"), message.get("owner"))
        elif message.get("op") == "idle":
            # When the grace expires, the generation checks remote presence again.
            self._local.followers_left(sid)
        return True

    def _tick(self) -> None:
        conn = self.clients
        r = conn.client
        inbox = worker_inbox(conn.worker_id)
        r.set(worker_alive(conn.worker_id), "1", ex=ALIVE_TTL)
        pending = r.hgetall(inbox)
        if not conn.health.is_up:
            conn.health.mark_up()
        done = [sid for sid, data in pending.items() if self._handle(data, from_inbox=True)]
        if done:
            r.hdel(inbox, *done)
        self.presence.tick(self._local)
        if self.slots is not None:
            self.slots.tick()
