"""The Redis backend: every worker and host sees every generation (SLUICE_REDIS_URL).

    worker A (owner)                         Redis                        worker B
    producer ─changed─▶ writer greenlet ──pipeline──▶ sluice:{id}:events ◀─XREAD BLOCK── RedisFeed
                                            sluice:{id}:meta      ◀─HGETALL── GET /streams/<id>
    listener greenlet ◀── sluice:{w:A}:channel ◀──PUBLISH + HSET inbox── POST /cancel
       └─ kills the generation's greenlet (registry.cancel_local, through `Local`)

This module is the facade (`app.backends.base.Backend`): it builds the parts and runs their
life; each part is a module of its own:

    clients.py     the clients and the worker id (and the PING of /readyz)
    health.py      Redis up / down, and just back (resyncing)
    sentinel.py    redis+sentinel:// URLs: the primary found and followed through Sentinel
    keys.py        key layout, lifetimes, the status hash written and read back
    ids.py         `backend.ids`: id claims and early-cancel tombstones
    writer.py      `backend.mirror`: this worker's generations, one writer greenlet, batched
    remote.py      `backend.remote`: other workers' generations: status, feed, cancel
    feed.py        following a generation owned by another worker (XREAD BLOCK)
    presence.py    followers on other workers (so the owner does not cancel for "disconnect")
    slots.py       `backend.slots`: places a client holds on every worker (open responses)
    messages.py    cancel / idle messages to the owner worker
    listener.py    the pub/sub listener greenlet and its once-a-second tick
    ledger.py      `backend.ledger`: budget counters, reserved and settled by Lua scripts
    revocations.py `backend.revocations`: signed-out browser sessions
    cluster.py     Redis Cluster: the client, per-slot transactions, sharded pub/sub

Faults. Redis is never on the path that keeps a local stream alive: `changed` only marks the
generation dirty. When a call fails Redis is marked "down": request-path calls skip Redis
at once (local behaviour only, cross-worker features pause), /readyz answers 503 with the
reason, the listener reconnects with backoff, and on its return the writer resyncs every local
generation. No connection is opened before `start()` (the first request).
"""

from __future__ import annotations

from app.backends.base import Local
from app.backends.redis.clients import Clients
from app.backends.redis.ids import RedisIds
from app.backends.redis.keys import Lifetimes
from app.backends.redis.ledger import RedisLedger
from app.backends.redis.listener import Listener
from app.backends.redis.presence import Presence
from app.backends.redis.remote import RedisRemote
from app.backends.redis.revocations import RedisRevocations
from app.backends.redis.slots import RedisSlots
from app.backends.redis.writer import Writer
from app.config import Settings


class RedisBackend:
    """Shared state in Redis (see the module docstring)."""

    shared = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients = Clients(settings.redis_url or "")
        lifetimes = Lifetimes.of(settings)
        self.presence = Presence(self.clients, lifetimes)
        self.writer = Writer(self.clients, lifetimes, settings.max_replay_events)
        self.slots = RedisSlots(self.clients)
        self.listener = Listener(self.clients, self.presence, self.writer.holds, self.slots)
        self.clients.health.on_return = self.writer.resync
        self.ids = RedisIds(self.clients)
        self.mirror = self.writer
        self.remote = RedisRemote(self.clients, self.presence)
        self.ledger = RedisLedger(self.clients)
        self.revocations = RedisRevocations(self.clients)

    def start(self, local: Local) -> None:
        self.clients.open()
        self.writer.start()
        self.listener.start(local)

    def settle(self, timeout: float) -> bool:
        return self.writer.settle(timeout)

    def close(self) -> None:
        self.writer.close()
        self.listener.close()
        self.clients.close()

    def ready(self) -> tuple[bool, str]:
        return self.clients.ready()
