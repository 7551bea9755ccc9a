"""Places a client holds on every worker and host (`app.backends.base.Slots`), counted in Redis.

Per client key and kind, a hash holds each worker's count, and a zset until when each worker's
count is believed (refreshed by its listener's tick). A Lua script reserves atomically: it drops
the counts of workers whose time ran out (a worker that died, even by SIGKILL, stops refreshing:
its places come back within SLOT_TTL), sums the rest and takes one place if the sum is below the
limit. So N parallel requests of one client, on any workers, get exactly `limit` places.

Each worker also counts its own places (`LocalSlots`): it is the bound while Redis is down (per
worker, as every request path falls back to local behaviour then), and the refresh writes it
back as the worker's count, which repairs what a Redis restart or a release lost meanwhile.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from redis.exceptions import ReadOnlyError, RedisError

from app.backends.memory import LocalSlots
from app.backends.redis.clients import Clients
from app.backends.redis.keys import client_slot_keys

SLOT_TTL = 15.0  # a worker's count is believed this long unless refreshed
SLOT_REFRESH = 5.0

# KEYS: counts (hash), alive (zset). ARGV: worker id, limit, now, until, key ttl.
RESERVE = """
local total = 0
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  local worker, n = counts[i], tonumber(counts[i + 1])
  local alive = tonumber(redis.call('ZSCORE', KEYS[2], worker) or '0')
  if worker == ARGV[1] or alive >= tonumber(ARGV[3]) then
    total = total + math.max(n, 0)
  else
    redis.call('HDEL', KEYS[1], worker)
    redis.call('ZREM', KEYS[2], worker)
  end
end
if total >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""

# KEYS: counts (hash). ARGV: worker id.
RELEASE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"""


class RedisSlots(LocalSlots):
    """This worker's places (`LocalSlots`), and every worker's in Redis."""

    def __init__(self, clients: Clients) -> None:
        super().__init__()
        self.clients = clients
        self._next_refresh = 0.0
        self._asking: dict[tuple[str, str], int] = {}  # reserves waiting for Redis's answer

    def reserve(self, kind: str, client: str, limit: int) -> bool:
        conn = self.clients
        # Asked first: it may wait for a Cluster client being made, and places taken here
        # meanwhile would reach Redis through the tick's refresh as held (refusing them all).
        shared = conn.usable()
        if not super().reserve(kind, client, limit):
            return False  # this worker alone holds them all
        if not shared:
            return True  # Redis down: this worker's own count is the bound
        counts, alive = client_slot_keys(client, kind)
        now = time.time()
        key = (kind, client)
        self._asking[key] = self._asking.get(key, 0) + 1
        try:
            taken = self._run(RESERVE, [counts, alive], [conn.worker_id, limit, now, now + SLOT_TTL, int(SLOT_TTL * 4)])
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            return True
        finally:
            if self._asking[key] <= 1:
                del self._asking[key]
            else:
                self._asking[key] -= 1
        if not taken:
            self._forget(kind, client)
        return bool(taken)

    def release(self, kind: str, client: str) -> None:
        self._forget(kind, client)
        if self.clients.usable():
            # Called from the event loop's callbacks too (a direct delivery's close): no I/O here.
            gevent.spawn(self._release, kind, client)

    def _forget(self, kind: str, client: str) -> None:
        # A count that drops to 0 stays until the next refresh, which clears the worker's field
        # (a release that Redis missed is repaired there).
        key = (kind, client)
        self.counts[key] = max(0, self.counts.get(key, 0) - 1)

    def _release(self, kind: str, client: str) -> None:
        conn = self.clients
        try:
            self._run(RELEASE, [client_slot_keys(client, kind)[0]], [conn.worker_id])
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)

    def _run(self, source: str, keys: list[str], args: list[object]) -> Any:
        conn = self.clients
        try:
            return conn.script(source)(keys=keys, args=args)
        except ReadOnlyError:
            # Trap: after a failover, a connection pooled before it (one whose blocking read was
            # cut) still reaches the old primary, now a replica. Reads there go through, this
            # write does not: drop the idle connections and try once more on a new one (the URL
            # leads to the new primary), rather than take Redis "down" for the whole worker.
            conn.drop_idle()
            return conn.script(source)(keys=keys, args=args)

    def tick(self) -> None:
        """Every SLOT_REFRESH (the listener's tick): tell Redis this worker's counts are current.

        Written as they are here, so Redis converges on the truth: an in-flight reserve or
        release may be off by one until the next refresh, never longer.
        """
        now = time.monotonic()
        if now < self._next_refresh or not self.counts:
            return
        self._next_refresh = now + SLOT_REFRESH
        conn = self.clients
        until = time.time() + SLOT_TTL
        # Not the counts that reserves in flight already raised here: Redis would take them as
        # held and refuse those very reserves (a first burst of requests). Their next refresh.
        snapshot = [(key, n) for key, n in self.counts.items() if key not in self._asking]
        pipe = conn.client.pipeline(transaction=False)
        for (kind, client), n in snapshot:
            counts, alive = client_slot_keys(client, kind)
            if n > 0:
                pipe.hset(counts, conn.worker_id, n)
                pipe.zadd(alive, {conn.worker_id: until})
                pipe.expire(counts, int(SLOT_TTL * 4))
                pipe.expire(alive, int(SLOT_TTL * 4))
            else:
                pipe.hdel(counts, conn.worker_id)
                pipe.zrem(alive, conn.worker_id)
        pipe.execute()
        for key, n in snapshot:
            if n == 0 and self.counts.get(key) == 0:
                del self.counts[key]
