"""The mirror writer: one greenlet per worker that copies local generations into Redis.

    producer ──publish()──▶ mark dirty (a dict insert; never I/O, never blocks)
                                   │
                 writer greenlet ◀─┘ wakes, waits FLUSH_INTERVAL (or not at all for `[DONE]`
                                     or FLUSH_AT queued events), then ONE round trip for every
                                     generation of the worker: MULTI, XADD every new entry,
                                     the progress in the status hash (at most every
                                     PROGRESS_INTERVAL), EXPIREs, EXEC

So a token costs no round trip of its own: one flush carries every event of every stream
that arrived in the last FLUSH_INTERVAL, and only a stream's end is written at once.

Nothing is queued but a reference to a view of the generation (`app.backends.base.Mirrored`):
the entries to write are its events after the last seq written (`MirrorState.written`). So a
failed flush loses nothing and holds no extra memory — the copy is marked unsynced and, once Redis
answers again, the writer asks Redis for the last entry it has (`XREVRANGE + - COUNT 1`) and
writes the rest, status and claim included. That also covers a Redis that restarted empty.

Re-writing an entry that did make it (a pipeline cut half-way) fails alone with "ID equal or
smaller than the target stream top item", which is expected and ignored. Any other refusal
(OOM under `noeviction`, READONLY during a failover) is a failure like a lost connection:
MULTI makes Redis refuse the whole batch at once (no gap in a stream), nothing is counted as
written, and the batch is retried once Redis takes writes again, so a follower on another
worker always gets the terminal event in the end.

A stream that already ends with `[DONE]` when the writer resyncs was ended by a follower that
believed this worker dead (app.backends.redis.feed); nothing is written after it.

A generation's registration (claim, status hash, client count) is written at once, not
batched (`add`): a cancel or status on another worker right after the 201 must find it.

Bounds, for a long outage (docs/deploy.md, "When Redis fails"):
- a flush is cut into transactions of at most BATCH_GENERATIONS generations and about
  BATCH_ENTRIES events (a long backlog takes several rounds), retried with backoff up to 2 s;
- the ended generations the registry has forgotten but Redis has not taken are held for at
  most MAX_HELD of them; past it the oldest is given up, as is a generation whose write fails
  alone for another reason than Redis (a bug must not stall the whole worker's mirror). A
  given-up generation is counted (`sluice_redis_mirror_dropped_total`) and, once Redis takes
  writes, what Redis holds of it is ended with an `error` event and `[DONE]` (never left
  `running`, never a jump in seq).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import gevent
from gevent.event import Event
from redis.exceptions import RedisError, ResponseError

from app import sse
from app.backends.base import Mirrored
from app.backends.redis.clients import Clients
from app.backends.redis.cluster import per_slot
from app.backends.redis.feed import END_ORPHAN
from app.backends.redis.keys import (
    ALIVE_TTL,
    Lifetimes,
    encode_progress,
    encode_status,
    entry_id,
    seq_of,
    stream_key,
    worker_alive,
)
from app.observability import metrics
from app.sse import DONE

log = logging.getLogger("sluice.redis")

FLUSH_INTERVAL = 0.02  # seconds events may wait to share a round trip (followers elsewhere only)
FLUSH_AT = 256  # queued events that trigger a flush at once
PROGRESS_INTERVAL = 0.5  # seconds between updates of a running generation's event count and usage
BATCH_GENERATIONS = 100  # generations per transaction
BATCH_ENTRIES = 2000  # events per transaction (shared out between its generations)
MAX_HELD = 1000  # ended generations forgotten by the registry, still held for a Redis that is down
MAX_LOST = 10000  # given-up generations remembered until their end is written to Redis
BACKOFF_MAX = 2.0
# What a follower elsewhere gets, and a resume there, of a generation whose mirror was given up.
GIVEN_UP = {
    "type": "error",
    "error": {
        "type": "internal",
        "message": "The server that wrote this answer could not share all of it; please ask again",
        "retryable": True,
        "status": None,
    },
}


class MirrorState:
    """How far Redis's copy of one local generation is written (the writer's state of it)."""

    __slots__ = ("view", "written", "synced", "final", "progress_at", "forgotten")

    def __init__(self, view: Mirrored) -> None:
        self.view = view
        self.written = 0  # last seq known to be in the Redis stream
        self.synced = False  # claim/meta written and `written` trustworthy
        self.final = False  # terminal status written (or the stream was ended elsewhere)
        self.progress_at = 0.0  # monotonic time of the last progress update in the status hash
        self.forgotten = False  # the registry forgot it: drop this state once its end is written


class Writer:
    """Batches the mirror writes of every local generation of this worker."""

    def __init__(self, clients: Clients, lifetimes: Lifetimes, max_events: int) -> None:
        self.clients = clients
        self.lifetimes = lifetimes
        self.max_events = max_events  # MAXLEN ~ of each events stream
        self.mirrors: dict[str, MirrorState] = {}
        self.dirty: dict[str, MirrorState] = {}
        self._pending = 0
        self._wake = Event()
        self._urgent = Event()
        self._greenlet: gevent.Greenlet | None = None
        self._closing = False
        self._idle = Event()  # set while nothing is dirty and no flush is under way
        self._idle.set()
        self._held: OrderedDict[str, MirrorState] = OrderedDict()  # forgotten, end not in Redis: MAX_HELD
        self.lost: OrderedDict[str, None] = OrderedDict()  # given up: their end is written once Redis takes it

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._loop)

    # -- the mirror (app.backends.base.Mirror): what the registry hands over -------------------

    def add(self, view: Mirrored) -> None:
        """Mirror a generation that just started: its registration is written now."""
        mirror = MirrorState(view)
        self.mirrors[view.id] = mirror
        conn = self.clients
        if conn.usable():
            try:
                pipe = conn.client.pipeline(transaction=False)
                self._queue_registration(pipe, view)
                pipe.execute()
                mirror.synced = True
            except (RedisError, OSError) as exc:
                conn.mark_down(exc)
        if not mirror.synced:
            self.mark(mirror)

    def changed(self, stream_id: str, urgent: bool) -> None:
        """A mirrored generation appended an event (cheap: called on every event)."""
        mirror = self.mirrors.get(stream_id)
        if mirror is not None:
            self.mark(mirror, urgent=urgent)

    def finished(self, stream_id: str, view: Mirrored) -> None:
        """A mirrored generation ended: write its end now; `view` is what is left of it."""
        mirror = self.mirrors.get(stream_id)
        if mirror is None:
            return
        mirror.view = view
        self.mark(mirror, urgent=True)

    def forget(self, stream_id: str) -> None:
        """The registry forgot an ended generation: drop it once its end is in Redis."""
        mirror = self.mirrors.get(stream_id)
        if mirror is None:
            return
        mirror.forgotten = True
        self._drop_if_done(mirror)
        if self.mirrors.get(stream_id) is mirror:
            # Its end is not in Redis yet (Redis is down): held, but only so many.
            self._held[stream_id] = mirror
            while len(self._held) > MAX_HELD:
                self._give_up(next(iter(self._held.values())), "outage")

    def _drop_if_done(self, mirror: MirrorState) -> None:
        # Until then it stays, so that its end still reaches Redis (a resync rewrites it too).
        if mirror.forgotten and mirror.final and self.mirrors.get(mirror.view.id) is mirror:
            del self.mirrors[mirror.view.id]
            self._held.pop(mirror.view.id, None)

    def _give_up(self, mirror: MirrorState, reason: str) -> None:
        """Stop mirroring `mirror` (counted); what Redis holds of it is ended when it can be."""
        sid = mirror.view.id
        if self.mirrors.get(sid) is mirror:
            del self.mirrors[sid]
        if self.dirty.get(sid) is mirror:
            del self.dirty[sid]
        self._held.pop(sid, None)
        mirror.final = True  # never written again
        self.lost[sid] = None
        while len(self.lost) > MAX_LOST:
            self.lost.popitem(last=False)
        metrics.mirror_dropped(reason)
        log.warning("gave up the redis mirror of %s (%s): other workers cannot replay it in full", sid, reason)

    def holds(self, stream_id: str) -> bool:
        """True while `stream_id` is one of this worker's mirrored generations."""
        return stream_id in self.mirrors

    def resync(self) -> None:
        """Redis answers again, maybe empty: find out again what it holds of each generation."""
        for mirror in self.mirrors.values():
            mirror.synced = mirror.final = False
            self.mark(mirror)

    # -- batching -----------------------------------------------------------------------------

    def mark(self, mirror: MirrorState, urgent: bool = False) -> None:
        """Queue a flush of `mirror` (cheap: called on every event)."""
        self.dirty[mirror.view.id] = mirror
        self._idle.clear()
        self._pending += 1
        if urgent or self._pending >= FLUSH_AT:
            self._urgent.set()
        if not self._wake.is_set():
            self._wake.set()

    def settle(self, timeout: float) -> bool:
        """Wait up to `timeout` s until everything marked is in Redis; True if it is.

        The end of a drain (Backend.settle): while Redis is down the loop below keeps retrying,
        and flushes as soon as it is back. Says in the log what it waits for, and what is lost.
        """
        start, timeout = time.monotonic(), max(0.0, timeout)
        if self._idle.wait(min(timeout, 0.2)):  # the usual case: the last flush is under way
            return True
        timeout -= time.monotonic() - start
        log.warning("waiting for redis to take the mirror of %d generation(s), up to %.1f s", self._unended(), timeout)
        if self._idle.wait(max(0.0, timeout)):
            log.info("redis took this worker's mirror")
            return True
        log.error(
            "redis did not take the endings of %d generation(s) within the drain deadline: clients that"
            " resume them through other workers or hosts will not learn how they ended",
            self._unended(),
        )
        return False

    def _unended(self) -> int:
        """Generations whose end is not (known to be) in Redis."""
        return sum(1 for m in self.mirrors.values() if not m.final) or len(self.dirty)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is left (best effort, bounded), then stop."""
        self._closing = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1.0)
        if self.dirty and self.clients.usable():
            with gevent.Timeout(timeout, False), contextlib.suppress(RedisError, OSError):
                self.flush()

    def _loop(self) -> None:
        backoff = 0.1
        while not self._closing:
            self._wake.wait()
            if not self._urgent.is_set():
                self._urgent.wait(FLUSH_INTERVAL)
            self._wake.clear()
            self._urgent.clear()
            self._pending = 0
            if not self.dirty and not self.lost:
                self._idle.set()
                continue
            try:
                self.flush()
                backoff = 0.1
                if not self.dirty:
                    self._idle.set()
            except (RedisError, OSError) as exc:
                self.clients.mark_down(exc)
                # Keep everything (it is in the generations' logs); retry when Redis is back.
                self.clients.health.up.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                self._wake.set()
            except Exception:  # never let the writer die: local streams do not depend on it
                log.exception("redis writer failed; retrying")
                gevent.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                self._wake.set()

    def flush(self) -> None:
        """Everything dirty, in transactions of at most BATCH_GENERATIONS generations; on a
        Redis failure what is not written stays dirty. A transaction that fails for another
        reason is tried one generation at a time, and a generation that fails alone is given up."""
        batch, self.dirty = self.dirty, {}
        pending = list(batch.values())
        try:
            while pending:
                chunk = pending[:BATCH_GENERATIONS]
                try:
                    self._write(chunk)
                except (RedisError, OSError):
                    raise
                except Exception:
                    self._isolate(chunk)
                del pending[: len(chunk)]
            self._end_lost()
        except BaseException:
            for mirror in pending:
                if not mirror.final or self.mirrors.get(mirror.view.id) is mirror:
                    mirror.synced = False
                    self.dirty.setdefault(mirror.view.id, mirror)
            raise

    def _isolate(self, chunk: Sequence[MirrorState]) -> None:
        for mirror in chunk:
            try:
                self._write([mirror])
            except (RedisError, OSError):
                raise
            except Exception:
                log.exception("redis writer failed on %s", mirror.view.id)
                self._give_up(mirror, "failed")

    def _end_lost(self) -> None:
        """End what Redis holds of given-up generations: an `error` and `[DONE]` after its last
        entry (nothing if Redis holds nothing, or their end already)."""
        if not self.lost:
            return
        script = self.clients.script(END_ORPHAN)
        for sid in list(self.lost)[:BATCH_GENERATIONS]:
            # END_ORPHAN's third key is the owner's alive key: one that nobody writes (the owner
            # gave the generation up), so the end is written.
            keys = [stream_key(sid, "events"), stream_key(sid, "meta"), stream_key(sid, "given-up")]
            try:
                script(keys=keys, args=[sse.dumps(GIVEN_UP), DONE])
            except ResponseError as exc:
                # Refused (OOM, an ACL without scripts): tried again with the next flush, but
                # it never holds up the mirror of the other generations.
                log.warning("redis refused to end the given-up mirror of %s: %s", sid, exc)
                return
            del self.lost[sid]
        if self.lost:
            self._wake.set()

    def _queue_registration(self, pipe: Any, view: Mirrored) -> None:
        """Claim and status hash of a generation, queued on `pipe`. (Its client's count is a
        slot, taken atomically at the start: app.backends.redis.slots.)"""
        worker_id, ttl = self.clients.worker_id, self.lifetimes.of_view(view)
        meta = stream_key(view.id, "meta")
        pipe.set(stream_key(view.id, "claim"), worker_id, ex=ttl)
        pipe.hset(meta, mapping=encode_status(view, worker_id))
        pipe.expire(meta, ttl)

    def _write(self, batch: Sequence[MirrorState]) -> None:
        """One transaction for `batch` (at most BATCH_GENERATIONS), after one read for those
        whose state in Redis is unknown."""
        worker_id = self.clients.worker_id
        r = self.clients.client
        unsynced = [m for m in batch if not m.synced and not m.final]
        if unsynced:
            pipe = r.pipeline(transaction=False)
            for m in unsynced:
                pipe.xrevrange(stream_key(m.view.id, "events"), "+", "-", count=1)
            for m, rows in zip(unsynced, pipe.execute(), strict=True):
                m.written = seq_of(rows[0][0]) if rows else 0
                if rows and rows[0][1].get("d") == DONE:
                    # Ended here or by a follower that thought this worker dead: keep it ended.
                    m.final = True
                    m.synced = True
                    self._drop_if_done(m)
        todo = [m for m in batch if not m.final]
        if not todo:
            return
        share = max(1, BATCH_ENTRIES // len(todo))  # events per generation in this transaction
        now = time.monotonic()
        if self.clients.cluster:
            # A transaction holds one slot's keys: one per slot, the alive key on its own.
            r.set(worker_alive(worker_id), "1", ex=ALIVE_TTL)
            for group in per_slot(todo, lambda m: stream_key(m.view.id, "meta")):
                self._send(r.pipeline(transaction=True), group, now, share)
            return
        pipe = r.pipeline(transaction=True)
        pipe.set(worker_alive(worker_id), "1", ex=ALIVE_TTL)  # a worker that writes is alive
        self._send(pipe, todo, now, share)

    def _send(self, pipe: Any, todo: list[MirrorState], now: float, share: int) -> None:
        """One transaction writing `todo` (new entries, progress or end, `share` events each at
        most); their copies learn what was written once Redis took it all."""
        worker_id = self.clients.worker_id
        plan: list[tuple[MirrorState, int, bool, bool, int | None]] = []
        for m in todo:
            view = m.view
            meta = stream_key(view.id, "meta")
            events = stream_key(view.id, "events")
            if not m.synced:
                self._queue_registration(pipe, view)
            new = view.events_after(m.written, share)
            more = len(new) == share  # the rest goes in the next round
            # A stream that Redis should hold already is only appended to (NOMKSTREAM): if
            # Redis lost it meanwhile (a restart that a reconnect hid, an eviction), appending
            # would make a stream that starts after a hole. Then nothing is added, and the
            # next round writes it again from its first event.
            append_only = m.written > 0
            first = len(pipe)
            for entry in new:
                pipe.xadd(events, {"d": entry.data}, id=entry_id(entry.seq), maxlen=self.max_events,
                          approximate=True, nomkstream=append_only)
            check = first if append_only and new else None
            last = new[-1].seq if new else m.written
            # Ended means `[DONE]` is in, and `new` ran to the end: nothing more will come.
            final = view.ended and not more
            if final:
                # After the XADDs in the same transaction: a reader that sees the end state
                # finds the terminal event and [DONE] in the stream.
                pipe.hset(meta, mapping=encode_status(view, worker_id))
                for part in ("meta", "events", "claim", "subs"):
                    pipe.expire(stream_key(view.id, part), self.lifetimes.replay)
            elif new and (now - m.progress_at >= PROGRESS_INTERVAL or m.written == 0):
                pipe.hset(meta, mapping=encode_progress(last, view.status()["usage"]))
                # Expiries again with each progress update: a Redis that lost its data (a
                # restart) gets these keys back from the XADD/HSET alone, without one.
                for key in (meta, events):
                    pipe.expire(key, self.lifetimes.of_view(view))
                m.progress_at = now
            plan.append((m, last, final, more, check))
        # A refusal at queue time (OOM, READONLY) aborts the transaction: pipe.execute raises
        # it, and flush() keeps the whole batch for the retry.
        results = pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, ResponseError) and "equal or smaller" not in str(result):
                log.warning("redis refused a mirror write: %s", result)
                raise result
            if isinstance(result, RedisError):
                raise result
        for m, last, final, more, check in plan:
            if check is not None and results[check] is None:
                log.warning("redis lost the mirror of %s (restarted or evicted); writing it again", m.view.id)
                m.synced = False
                self.mark(m, urgent=True)
                continue
            m.written = last
            m.synced = True
            m.final = final
            self._drop_if_done(m)
            if more:
                self.mark(m, urgent=True)
