"""Issue 22 item 2: the mirror writer under a long or odd Redis outage.

Before: it held every touched generation while Redis was down and sent them all in one
unbounded MULTI when it returned; a write that failed for a reason other than Redis was
retried every 0.1 s forever and stalled the worker's whole mirror; and a Redis that lost its
data behind a silent reconnect got a stream that started after a hole. The writer runs here in
this process against a real Redis; the generation it mirrors is a stand-in for the registry's
view (app.backends.base.Mirrored), with real encoded events.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from app.backends.redis import writer as writer_module
from app.backends.redis.clients import Clients
from app.backends.redis.keys import Lifetimes
from app.backends.redis.writer import MAX_HELD, Writer
from app.config import Settings
from app.observability import metrics
from app.sse import DONE, Entry, make_entry

pytestmark = pytest.mark.timeout(60)


class View:
    """A generation of `n` events; ended (terminal `done` and `[DONE]` in) when `ended`."""

    def __init__(self, sid: str, n: int, ended: bool = True) -> None:
        self.id, self.owner, self.client = sid, None, "c"
        self.entries: list[Entry] = [make_entry(sid, 1, json.dumps({"type": "start"}))]
        self.entries += [make_entry(sid, i, json.dumps({"type": "text", "i": i})) for i in range(2, n + 1)]
        self.ended = False
        if ended:
            self.end()

    def add(self, count: int) -> None:
        n = len(self.entries)
        self.entries += [make_entry(self.id, i, json.dumps({"type": "text", "i": i}))
                         for i in range(n + 1, n + 1 + count)]

    def end(self) -> None:
        n = len(self.entries)
        self.entries += [make_entry(self.id, n + 1, json.dumps({"type": "done"})), make_entry(self.id, n + 2, DONE)]
        self.ended = True

    @property
    def running(self) -> bool:
        return not self.ended

    def events_after(self, seq: int, limit: int | None = None) -> Sequence[Entry]:
        return self.entries[seq: None if limit is None else seq + limit]

    def status(self) -> dict[str, Any]:
        return {"state": "done" if self.ended else "running", "provider": "demo", "model": "m", "created_at": 1.0,
                "events": len(self.entries), "usage": {}, "stop_reason": None}


class Broken(View):
    """A generation whose events cannot be read (a bug): the writer must not stall on it."""

    def events_after(self, seq: int, limit: int | None = None) -> Sequence[Entry]:
        raise ValueError("broken view")


def make_writer(url: str) -> Writer:
    conn = Clients(url)
    conn.open()
    return Writer(conn, Lifetimes.of(Settings.from_env({"SLUICE_PROVIDER": "demo"})), 20000)


def written(w: Writer, view: View) -> None:
    """`view` started, and the writer took it into Redis."""
    w.add(view)
    w.mark(w.mirrors[view.id])
    w.flush()


def flush_all(w: Writer, rounds: int) -> None:
    """Flush until nothing is left to write (a long backlog takes several rounds)."""
    for _ in range(rounds):
        if not (w.dirty or w.lost):
            return
        w.flush()


def seqs(r: redis.Redis, sid: str) -> list[int]:
    return [int(rid.split("-")[1]) for rid, _ in r.xrange(f"sluice:{{{sid}}}:events")]


def kinds(r: redis.Redis, sid: str) -> list[str]:
    return [f["d"] if f["d"] == DONE else json.loads(f["d"])["type"] for _, f in r.xrange(f"sluice:{{{sid}}}:events")]


def execs(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_exec", {}).get("calls", 0))


def dropped(reason: str) -> float:
    text = metrics.render()[0].decode()
    for line in text.splitlines():
        if line.startswith(f'sluice_redis_mirror_dropped_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def r(redis_server) -> redis.Redis:  # type: ignore[no-untyped-def]
    client = redis_server.client()
    client.flushall()
    client.config_resetstat()
    return client


def test_a_long_backlog_goes_in_bounded_transactions_and_arrives_whole(redis_server, r) -> None:  # type: ignore[no-untyped-def]
    w = make_writer(redis_server.url)
    views = [View(f"backlog-{i:02d}-aaaaaaaaaaaa", 900) for i in range(5)]
    for view in views:
        w.mirrors[view.id] = writer_module.MirrorState(view)
        w.mark(w.mirrors[view.id])
    flush_all(w, 50)
    assert not w.dirty, "the backlog was never all written"
    for view in views:
        assert seqs(r, view.id) == list(range(1, 903)), "every event, in order, no hole"
        assert r.hget(f"sluice:{{{view.id}}}:meta", "state") == "done"
    # ~4 500 events: more than one transaction of at most BATCH_ENTRIES events each.
    assert execs(r) >= 4500 // writer_module.BATCH_ENTRIES, execs(r)


def test_a_generation_that_cannot_be_written_does_not_stall_the_others(redis_server, r) -> None:  # type: ignore[no-untyped-def]
    w = make_writer(redis_server.url)
    good, bad = View("good-aaaaaaaaaaaaaaaa", 10), Broken("bad-aaaaaaaaaaaaaaaaa", 10)
    before = dropped("failed")
    for view in (bad, good):
        w.mirrors[view.id] = writer_module.MirrorState(view)
        w.mark(w.mirrors[view.id])
    w.flush()
    assert kinds(r, good.id)[-2:] == ["done", DONE], "the good generation waited on the broken one"
    assert not w.dirty and bad.id not in w.mirrors, "the broken one is retried forever"
    assert dropped("failed") == before + 1


def test_memory_is_bounded_while_redis_is_down_and_what_is_given_up_ends_honestly(redis_server, r) -> None:  # type: ignore[no-untyped-def]
    w = make_writer(redis_server.url)
    # One generation half-written before the outage: Redis holds its start and first events.
    first = View("first-aaaaaaaaaaaaaaaa", 5, ended=False)
    written(w, first)
    assert seqs(r, first.id) == [1, 2, 3, 4, 5]
    r.execute_command("ACL", "SETUSER", "default", "-@write")  # Redis refuses every write (OOM alike)
    try:
        first.add(3)
        first.end()
        w.finished(first.id, first)
        with pytest.raises(redis.RedisError):
            w.flush()
        w.forget(first.id)  # the registry let it go (replay cap); its end is not in Redis
        before = dropped("outage")
        for i in range(MAX_HELD + 50):
            view = View(f"outage-{i:05d}-aaaaaaaaaa", 3)
            w.add(view)  # not written: Redis is down
            w.finished(view.id, view)
            w.forget(view.id)
        assert len(w.mirrors) <= MAX_HELD, len(w.mirrors)
        assert dropped("outage") == before + 51
    finally:
        r.execute_command("ACL", "SETUSER", "default", "+@all")
    w.clients.health.mark_up()
    flush_all(w, 100)
    # The given-up generation Redis held part of is not left `running` nor resumed across a
    # hole: its stream ends, after what Redis has, with an error and [DONE].
    assert kinds(r, first.id) == ["start", "text", "text", "text", "text", "error", DONE]
    assert r.hget(f"sluice:{{{first.id}}}:meta", "state") == "error"
    ids = [f"outage-{i:05d}-aaaaaaaaaa" for i in range(MAX_HELD + 50)]
    kept = [sid for sid in ids if r.exists(f"sluice:{{{sid}}}:events")]
    assert len(kept) == MAX_HELD and all(kinds(r, sid)[-1] == DONE for sid in kept)


def test_a_redis_that_lost_its_data_behind_a_reconnect_gets_the_stream_from_its_start(redis_server, r) -> None:  # type: ignore[no-untyped-def]
    w = make_writer(redis_server.url)
    view = View("hole-aaaaaaaaaaaaaaaaa", 4, ended=False)
    written(w, view)
    assert seqs(r, view.id) == [1, 2, 3, 4]
    r.flushall()  # a restart the client's reconnect hid: the writer never saw Redis down
    view.add(3)
    w.changed(view.id, urgent=True)
    flush_all(w, 5)
    assert seqs(r, view.id) == list(range(1, 8)), "a stream that starts after a hole"
