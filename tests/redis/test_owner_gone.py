"""Issue 9, found by reading: the cleanup a follower does for an owner that died (SIGKILL, OOM
killer) must never write after a living owner's event, nor overwrite its state.

The follower decides and writes in one step inside Redis. The test lets the "owner" write at
the worst moment for a read-then-write cleanup: right after the cleanup read the stream."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from app.backends.redis.clients import Clients
from app.backends.redis.feed import RedisFeed
from app.backends.redis.keys import Lifetimes
from app.backends.redis.presence import Presence
from app.config import Settings

pytestmark = pytest.mark.timeout(30)

DONE = "[DONE]"


class OwnerWritesAfterRead:
    """A Redis client through which the owner's `write` lands just after the stream is read."""

    def __init__(self, client: redis.Redis, write: Any) -> None:
        self._client = client
        self._write = write

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name != "xrevrange":
            return attr

        def read_then_owner_writes(*args: Any, **kwargs: Any) -> Any:
            rows = attr(*args, **kwargs)
            self._write()
            return rows

        return read_then_owner_writes


def setup_stream(r: redis.Redis, sid: str, seqs: int) -> None:
    r.delete(f"sluice:{{{sid}}}:events", f"sluice:{{{sid}}}:meta")
    r.xadd(f"sluice:{{{sid}}}:events", {"d": json.dumps({"type": "start"})}, id="0-1")
    for seq in range(2, seqs + 1):
        r.xadd(f"sluice:{{{sid}}}:events", {"d": json.dumps({"type": "text", "content": "x"})}, id=f"0-{seq}")
    r.hset(f"sluice:{{{sid}}}:meta", mapping={"state": "running", "worker": "w-owner"})


def ending(r: redis.Redis, sid: str) -> tuple[list[str], str]:
    rows = r.xrange(f"sluice:{{{sid}}}:events")
    kinds = [DONE if f["d"] == DONE else json.loads(f["d"])["type"] for _, f in rows]
    return kinds, r.hget(f"sluice:{{{sid}}}:meta", "state") or ""


def assert_one_clean_end(kinds: list[str], state: str) -> None:
    assert kinds.count(DONE) == 1 and kinds[-1] == DONE, kinds
    terminal = [k for k in kinds if k in ("done", "error", "cancelled")]
    assert len(terminal) == 1 and kinds[-2] == terminal[0], kinds
    assert state == terminal[0], f"state {state!r} but the stream ended with {terminal[0]!r}"


@pytest.fixture
def backend(redis_server) -> Clients:  # type: ignore[no-untyped-def]
    b = Clients(redis_server.url)
    b.client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    return b


def follower(conn: Clients, sid: str) -> RedisFeed:
    """A follower (on another worker) of `sid`, owned by the worker `w-owner`."""
    settings = Settings.from_env({"SLUICE_PROVIDER": "demo"})
    return RedisFeed(conn, Presence(conn, Lifetimes.of(settings)), sid, "w-owner", closed=False)


def test_owner_that_finished_meanwhile_keeps_its_end_and_state(backend: Clients) -> None:
    r = backend.client
    sid = "owner-finished-meanwhile"
    setup_stream(r, sid, 3)

    def owner_finishes() -> None:
        r.xadd(f"sluice:{{{sid}}}:events", {"d": json.dumps({"type": "done"})}, id="0-4")
        r.xadd(f"sluice:{{{sid}}}:events", {"d": DONE}, id="0-5")
        r.hset(f"sluice:{{{sid}}}:meta", "state", "done")

    owner_finishes_once = once(owner_finishes)
    backend.client = OwnerWritesAfterRead(r, owner_finishes_once)
    follower(backend, sid)._end_if_owner_died()
    if ending(r, sid)[0][-1] != DONE:
        owner_finishes_once()  # the cleanup read nothing in between: the owner ends now
    kinds, state = ending(r, sid)
    assert_one_clean_end(kinds, state)


def test_owner_that_wrote_meanwhile_is_not_followed_by_done(backend: Clients) -> None:
    r = backend.client
    sid = "owner-wrote-meanwhile"
    setup_stream(r, sid, 3)
    owner_writes = once(lambda: r.xadd(f"sluice:{{{sid}}}:events", {"d": json.dumps({"type": "text"})}, id="0-4"))
    backend.client = OwnerWritesAfterRead(r, owner_writes)
    follower(backend, sid)._end_if_owner_died()
    kinds, state = ending(r, sid)
    if DONE in kinds:  # ended by the cleanup: then after everything the owner wrote
        assert_one_clean_end(kinds, state)
        assert state == "error"


def test_dead_owner_gets_one_ending_and_a_last_terminal_event_only_done(backend: Clients) -> None:
    r = backend.client
    sid = "owner-dead"
    setup_stream(r, sid, 3)
    feed = follower(backend, sid)
    feed._end_if_owner_died()
    feed._end_if_owner_died()  # a second follower: nothing more
    kinds, state = ending(r, sid)
    assert_one_clean_end(kinds, state)
    assert kinds[-2:] == ["error", DONE]

    sid = "owner-dead-after-its-end"
    setup_stream(r, sid, 3)
    r.xadd(f"sluice:{{{sid}}}:events", {"d": json.dumps({"type": "cancelled"})}, id="0-4")
    r.hset(f"sluice:{{{sid}}}:meta", "state", "cancelled")
    follower(backend, sid)._end_if_owner_died()
    kinds, state = ending(r, sid)
    assert_one_clean_end(kinds, state)


def test_living_owner_is_left_alone(backend: Clients) -> None:
    r = backend.client
    sid = "owner-alive"
    setup_stream(r, sid, 3)
    r.set("sluice:{w:w-owner}:alive", "1", ex=10)
    follower(backend, sid)._end_if_owner_died()
    r.delete("sluice:{w:w-owner}:alive")
    assert ending(r, sid) == (["start", "text", "text"], "running")


def once(fn: Any) -> Any:
    done = [False]

    def run() -> None:
        if not done[0]:
            done[0] = True
            fn()

    return run
