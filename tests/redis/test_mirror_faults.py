"""Issue 9, found by reading: what the mirror writer and the presence refresh do when Redis
refuses a write or loses its data, and how many round trips the mirror costs (issue 10)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.script import answer_tokens
from tests.support.sse import Stream, open_stream, text_of
from tests.support.tcp_proxy import CuttableProxy

from .conftest import wait_for

pytestmark = pytest.mark.timeout(120)


def read_within(stream: Stream, seconds: float) -> list[str]:
    """The stream's event types, read to its end; fails if it does not end in time."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(stream.rest)
        try:
            future.result(timeout=seconds)
        except TimeoutError:
            stream.close()
            pytest.fail(f"the follower never got the end: {[e.type for e in stream.events][-5:]}")
    return [e.type for e in stream.events]


@pytest.fixture
def hosts(redis_server, start_sluice, quiet_fake: FakeUpstream):  # type: ignore[no-untyped-def]
    """Host A and host B on one Redis, one worker each: B never runs A's generations."""
    return start_sluice(redis_server.url, workers=1), start_sluice(redis_server.url, workers=1)


def test_a_refused_mirror_write_is_retried_until_followers_get_the_end(redis_server, hosts) -> None:  # type: ignore[no-untyped-def]
    # Host A runs the generation, host B follows it through Redis. While A's writes are
    # refused for another reason than a duplicate (here: XADD not permitted; OOM under
    # noeviction and READONLY during a failover are refused the same way), the generation
    # ends on A. Once Redis takes writes again, B must get every event and the end.
    a, b = hosts
    tokens = 30
    local = open_stream(a.url + "/stream", params={"prompt": f"x [fake tokens={tokens} pace=0.05]"})
    local.until("text")
    follower = open_stream(b.url + f"/streams/{local.stream_id}/events")
    follower.until("text")
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "default", "-xadd")
    try:
        assert [e.type for e in local.rest()][-2:] == ["done", "[DONE]"]  # local clients never wait on Redis
        # The writer's last flush is refused (it says so), before Redis takes writes again.
        assert wait_for(lambda: "redis refuses writes" in a.log(), 10)
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+xadd")
    kinds = read_within(follower, 20)
    assert kinds[-2:] == ["done", "[DONE]"] and kinds.count("done") == 1
    assert text_of(follower.events) == "".join(answer_tokens(tokens))
    assert [e.seq for e in follower.events] == list(range(1, len(follower.events) + 1))
    assert "redis refuses writes" in a.log()


def test_presence_keeps_its_expiry_when_redis_lost_its_data(redis_server, hosts) -> None:  # type: ignore[no-untyped-def]
    a, b = hosts
    owner = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=300 pace=0.05]"})
    owner.until("text")
    follower = open_stream(b.url + f"/streams/{owner.stream_id}/events")
    follower.until("text")
    r = redis_server.client()
    subs = f"sluice:{{{owner.stream_id}}}:subs"
    assert wait_for(lambda: r.exists(subs), 5)
    r.flushall()  # as a restart without persistence leaves it: every key gone
    # B's presence refresh (every few seconds) writes the key again: with an expiry.
    assert wait_for(lambda: r.exists(subs), 12), "presence was not refreshed"
    assert r.ttl(subs) > 0, "presence key without expiry: it would stay forever"
    events = stream_key_ttls(r, owner.stream_id)
    assert wait_for(lambda: all(t > 0 for t in stream_key_ttls(r, owner.stream_id).values()), 5), events
    follower.close()
    owner.close()


def stream_key_ttls(r, stream_id: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """TTL of each of the generation's keys that exist (-1: no expiry)."""
    out = {}
    for part in ("meta", "events", "subs"):
        key = f"sluice:{{{stream_id}}}:{part}"
        if r.exists(key):
            out[part] = r.ttl(key)
    return out


class CountingProxy(CuttableProxy):
    """The loopback proxy, to Redis, counting the writes Sluice makes (its round trips)."""

    sends = 0

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    chunk = 1 << 20

    def _forward(self, src: socket.socket, dst: socket.socket, data: bytes) -> bool:
        if src.getpeername()[1] != self.target_port:  # not Redis's answers
            self.sends += 1  # one thread per connection: a lost race only miscounts by one
        return super()._forward(src, dst, data)


def test_the_mirror_costs_no_round_trip_per_token(redis_server, start_sluice, quiet_fake: FakeUpstream) -> None:
    proxy = CountingProxy(redis_server.port)
    try:
        server = start_sluice(proxy.redis_url, workers=1)
        assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
        streams, tokens = 8, 60
        opened = [
            open_stream(server.url + "/stream", params={"prompt": f"s{i} [fake tokens={tokens} pace=0.02]"})
            for i in range(streams)
        ]
        for s in opened:
            s.until("start")
        before = proxy.sends
        with ThreadPoolExecutor(streams) as pool:
            results = list(pool.map(lambda s: s.rest(), opened))
        sent = proxy.sends - before
        events = sum(len(r) for r in results)
        assert all(text_of(r) == "".join(answer_tokens(tokens)) for r in results)
        # Every event of every stream is in Redis (a follower elsewhere can replay it) ...
        r = redis_server.client()
        assert wait_for(lambda: sum(r.xlen(f"sluice:{{{s.stream_id}}}:events") for s in opened) == events, 5)
        # ... for far fewer round trips than events (ticks and the streams' ends included).
        assert sent < events / 4, f"{sent} round trips for {events} events"
    finally:
        proxy.close()


def test_a_reconnect_while_redis_is_down_is_told_to_come_back(redis_server, hosts) -> None:  # type: ignore[no-untyped-def]
    # B does not run the generation and cannot ask Redis: 204 (or 404, 503) would make the
    # browser's EventSource give up on a stream that may well be running on A. An empty 200
    # with a `retry` makes it reconnect, and once Redis is back the resume goes through.
    a, b = hosts
    tokens = 60
    owner = open_stream(a.url + "/stream", params={"prompt": f"x [fake tokens={tokens} pace=0.05]"})
    seen = [owner.until("text")]
    owner.close()  # the tab went away; A keeps the generation for the disconnect grace
    redis_server.stop()
    try:
        for headers in ({"Last-Event-ID": seen[-1].id}, {}):
            r = requests.get(b.url + f"/streams/{owner.stream_id}/events", headers=headers, timeout=5)
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream"), r.text
            assert r.text.startswith("retry:") and "data:" not in r.text
    finally:
        redis_server.start()
    assert wait_for(lambda: requests.get(b.url + "/readyz", timeout=5).status_code == 200, 15)
    resumed = open_stream(b.url + f"/streams/{owner.stream_id}/events", headers={"Last-Event-ID": seen[-1].id})
    events = resumed.rest()
    assert events[0].seq == seen[-1].seq + 1 and [e.type for e in events][-1] == "[DONE]"
