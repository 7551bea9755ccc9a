"""A generation that runs on another worker, followed through its Redis stream.

Replay and live follow are one read: `XREAD BLOCK` from the entry id `0-<seq>` the client has
seen. The block is cut into slices of at most a second, so a client that goes away (the
`interrupt` event) is noticed without a pub/sub wake-up, and a blocked read never meets the
client's `socket_timeout`.

Redis failing mid-follow must not crash the response: the feed sets `interrupt` (the delivery's
"client gone" event), which ends the response cleanly after what was sent; the browser
reconnects with Last-Event-ID and resumes wherever it lands.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from gevent.event import Event
from redis.exceptions import RedisError, ResponseError

from app import sse
from app.backends.redis.clients import Clients
from app.backends.redis.keys import entry_id, seq_of, stream_key, worker_alive
from app.backends.redis.presence import Presence
from app.sse import DONE, Entry, make_entry

log = logging.getLogger("sluice.redis")

READ_COUNT = 500  # entries per read; the response asks again at once when there are more
BLOCK_SLICE = 1.0  # seconds a single XREAD may block
OWNER_CHECK = 3.0  # seconds between checks that the owning worker is still alive
OWNER_GONE = {
    "type": "error",
    "error": {
        "type": "internal",
        "message": "The server that was writing this answer stopped; please ask again",
        "retryable": True,
        "status": None,
    },
}
# A Redis that refuses writes (OOM under noeviction) keeps the owner from writing anything, its
# alive key included, and a follower from writing the owner's end: the follower ends its own
# response with this, so that its client stops instead of waiting (or reconnecting) forever.
OWNER_UNHEARD = {
    "type": "error",
    "error": {
        "type": "internal",
        "message": "The server that is writing this answer cannot share it now; please ask again",
        "retryable": True,
        "status": None,
    },
}

# KEYS: the events stream, the status hash, optionally a key whose presence means "leave it"
# (all of one slot: a Cluster runs a script on one node). ARGV: the error event, DONE, and
# optionally the id of the last entry when its owner was found gone.
# Ends the stream only if that key is absent, the owner wrote nothing since, and its last entry
# is not [DONE]; a last entry that is already a terminal event gets only the [DONE].
END_ORPHAN = """
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 or (ARGV[3] and last[1][1] ~= ARGV[3]) then return 0 end
local data = last[1][2][2]
if data == ARGV[2] then return 0 end
local seq = tonumber(string.match(last[1][1], '%-(%d+)$'))
local ok, event = pcall(cjson.decode, data)
local kind = ok and type(event) == 'table' and event['type'] or nil
if kind == 'done' or kind == 'error' or kind == 'cancelled' then
  redis.call('XADD', KEYS[1], '0-' .. (seq + 1), 'd', ARGV[2])
  return 1
end
redis.call('XADD', KEYS[1], '0-' .. (seq + 1), 'd', ARGV[1])
redis.call('XADD', KEYS[1], '0-' .. (seq + 2), 'd', ARGV[2])
redis.call('HSET', KEYS[2], 'state', 'error')
return 1
"""


class RedisFeed:
    """The `Feed` of a generation owned by another worker (see app.backends.base.Feed)."""

    def __init__(
        self,
        clients: Clients,
        presence: Presence,
        stream_id: str,
        worker: str | None,
        closed: bool,
        *,
        owner: str | None = None,
    ) -> None:
        self.clients = clients
        self.presence = presence
        self.stream_id = stream_id
        self.worker = worker
        self.owner = owner  # the principal that started it (the registry checks it)
        self._key = stream_key(stream_id, "events")
        self._closed = closed
        self._failed = False
        self.lost = False  # events the client has not seen were trimmed (MAXLEN): never a jump
        self._unheard = False  # the owner is silent and Redis refuses to record its end
        self._member: str | None = None
        self._next_owner_check = time.monotonic() + OWNER_CHECK

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_after(self, seq: int, timeout: float | None, interrupt: Event | None = None) -> list[Entry]:
        """Entries after `seq`; blocks (in slices) up to `timeout` when there are none yet."""
        if self._failed or self.lost:
            if interrupt is not None:
                interrupt.set()
            return []
        try:
            rows = self._read(seq, timeout, interrupt)
        except (RedisError, OSError) as exc:
            self._failed = True
            self.clients.mark_down(exc)
            log.warning("redis failed while following %s; ending this response (the client resumes)", self.stream_id)
            if interrupt is not None:
                interrupt.set()
            return []
        entries = [make_entry(self.stream_id, seq_of(rid), fields["d"]) for rid, fields in rows]
        if entries and entries[0].seq != seq + 1:
            # MAXLEN trimmed events after the client's seq: the gap is never silent. The
            # response ends; the client's resume is then answered as for an unknown id.
            self.lost = True
            log.info("events of %s after seq %d were trimmed from redis; ending this response", self.stream_id, seq)
            if interrupt is not None:
                interrupt.set()
            return []
        for i in range(1, len(entries)):
            if entries[i].seq != entries[i - 1].seq + 1:
                # A hole inside the stream (never written by the owner): what comes before it
                # is sent, then the response ends there, as above, never with a jump in seq.
                self.lost = True
                log.warning("events of %s after seq %d are missing from redis; ending this response",
                            self.stream_id, entries[i - 1].seq)
                entries = entries[:i]
                break
        if not entries and self._unheard and not self._closed:
            # Not written to Redis (it refuses writes): this client alone gets this end.
            entries = [
                make_entry(self.stream_id, seq + 1, sse.dumps(OWNER_UNHEARD)),
                make_entry(self.stream_id, seq + 2, DONE),
            ]
        if entries and entries[-1].done:
            self._closed = True
        return entries

    def _read(self, seq: int, timeout: float | None, interrupt: Event | None) -> list[tuple[str, dict[str, str]]]:
        r = self.clients.client
        if self._closed or timeout is None or timeout <= 0:
            rows: list[tuple[str, dict[str, str]]] = r.xrange(self._key, min=f"({entry_id(seq)}", count=READ_COUNT)
            return rows
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (interrupt is not None and interrupt.is_set()):
                return []
            block_ms = max(1, int(min(left, BLOCK_SLICE) * 1000))
            found: Any = r.xread({self._key: entry_id(seq)}, count=READ_COUNT, block=block_ms)
            if found:
                # RESP2: [[key, rows]]; RESP3: {key: [rows]}
                if isinstance(found, dict):
                    return list(next(iter(found.values()))[0])
                return list(found[0][1])
            if time.monotonic() >= self._next_owner_check:
                self._next_owner_check = time.monotonic() + OWNER_CHECK
                self._end_if_owner_died()
                if self._closed or self._unheard:
                    return []

    def _end_if_owner_died(self) -> None:
        """The owner was killed outright (SIGKILL, OOM): write the terminal event it never will.

        The owner's alive key is read after the last entry, and the script writes only if that
        entry is still the last: an owner that wrote since (it refreshes its alive key whenever
        it writes) is never followed by our `[DONE]`, and its state is never overwritten. The
        alive key lives in the worker's slot, not the generation's, so it is not in the script.
        """
        r = self.clients.client
        last = r.xrevrange(self._key, "+", "-", count=1)
        if last and last[0][1].get("d") == DONE:
            # It ended, and this reader (a Last-Event-ID beyond its end) has seen all there is:
            # closed, so the response ends instead of waiting for events that will never come.
            self._closed = True
            return
        if not self.worker or not last or r.exists(worker_alive(self.worker)):
            return
        script = self.clients.script(END_ORPHAN)
        try:
            ended = script(
                keys=[self._key, stream_key(self.stream_id, "meta")],
                args=[sse.dumps(OWNER_GONE), DONE, last[0][0]],
            )
        except ResponseError:
            # The script tried to write the end (the owner's alive key has expired) and Redis
            # refused. Whether the owner died or only cannot write, nothing will come: end here.
            if not r.exists(worker_alive(self.worker)):
                log.warning("worker %s is silent and redis refuses writes; ending %s for this follower",
                            self.worker, self.stream_id)
                self._unheard = True
            return
        if ended:
            log.warning("worker %s stopped without ending %s; ended it for its followers", self.worker, self.stream_id)

    # -- presence: the owner must not cancel for "disconnect" while we follow from here ---------

    def attach(self) -> None:
        self._member = f"{self.clients.worker_id}:{uuid.uuid4().hex[:12]}"
        self.presence.add(self.stream_id, self._member)

    def detach(self) -> None:
        if self._member is not None:
            member, self._member = self._member, None
            self.presence.remove(self.stream_id, member, self.worker)
