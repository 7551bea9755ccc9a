"""Budget counters in Redis (`app.backends.base.Ledger`): shared by every worker and host.

A reservation reads and raises the counters in one Lua script, so parallel generations on any
number of hosts can never together reserve more than a budget holds. The keys of one principal
share a hash tag (`{b:<digest>}`), so a script over several of them stays on one Cluster node.
With Redis down, no budget can be checked: a generation that needs one is refused (503).
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.exceptions import RedisError

from app.backends.redis.clients import Clients
from app.errors import RequestError

# KEYS: the counters (hashes of used, reserved). ARGV: want, least, ttl, then one budget per key.
RESERVE = """
local want, least, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local left = nil
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('HGET', key, 'used') or '0')
  local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
  local here = tonumber(ARGV[3 + i]) - used - reserved
  if left == nil or here < left then left = here end
end
local room = math.min(want, left)
if room < least or room <= 0 then return {0, left} end
for _, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'reserved', room)
  redis.call('EXPIRE', key, ttl)
end
return {room, left}
"""

# KEYS: the counters. ARGV: reserved (given back), charged (used), ttl.
SETTLE = """
for _, key in ipairs(KEYS) do
  local reserved = redis.call('HINCRBY', key, 'reserved', -tonumber(ARGV[1]))
  if reserved < 0 then redis.call('HSET', key, 'reserved', 0) end
  redis.call('HINCRBY', key, 'used', tonumber(ARGV[2]))
  redis.call('EXPIRE', key, tonumber(ARGV[3]))
end
return 1
"""


def _unavailable() -> RequestError:
    return RequestError(503, "Budgets cannot be checked right now (the shared backend is unreachable); "
                        "try again in a moment", type="overloaded", headers={"Retry-After": "2"})


class RedisLedger:
    """Budget counters as Redis hashes, changed only by the two scripts above."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients

    def reserve(self, keys: Sequence[str], budgets: Sequence[int], want: int, least: int,
                ttl: int) -> tuple[int, int]:
        conn = self.clients
        if not conn.usable():
            raise _unavailable()
        try:
            granted, left = conn.script(RESERVE)(keys=list(keys), args=[want, least, ttl, *budgets])
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            raise _unavailable() from None
        return int(granted), max(0, int(left))

    def settle(self, keys: Sequence[str], reserved: int, charged: int, ttl: int) -> None:
        conn = self.clients
        try:
            conn.script(SETTLE)(keys=list(keys), args=[reserved, charged, ttl])
        except (RedisError, OSError) as exc:
            # The reservation stays held until the window's keys expire: never over budget.
            conn.mark_down(exc)

    def read(self, key: str) -> tuple[int, int]:
        conn = self.clients
        if not conn.usable():
            raise _unavailable()
        try:
            values = conn.client.hmget(key, "used", "reserved")
        except (RedisError, OSError) as exc:
            conn.mark_down(exc)
            raise _unavailable() from None
        return int(values[0] or 0), int(values[1] or 0)
