"""Issue 4: two Sluice instances (two "hosts") sharing one Redis answer every route the same way."""

from __future__ import annotations

import time

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.script import answer_tokens
from tests.support.servers import Gunicorn
from tests.support.sse import Event, open_stream, text_of

from .conftest import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def hosts(redis_server, fake: FakeUpstream):
    """Host A and host B: one worker each, so that B never holds A's generations."""
    from .conftest import redis_env

    a = Gunicorn(redis_env(fake, redis_server.url), workers=1).start()
    b = Gunicorn(redis_env(fake, redis_server.url), workers=1).start()
    yield a, b
    a.stop()
    b.stop()


def assert_continuous(events: list[Event], tokens: int) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1)), seqs
    assert events[0].type == "start"
    assert [e.type for e in events[-2:]] == ["done", "[DONE]"]
    assert text_of(events) == "".join(answer_tokens(tokens))


def test_cancel_on_b_stops_generation_on_a(hosts, quiet_fake: FakeUpstream) -> None:
    a, b = hosts
    s = open_stream(a.url + "/stream", params={"prompt": "x [fake stall_after=2]"})
    s.until("text")
    t0 = time.monotonic()
    resp = requests.post(b.url + "/cancel", json={"stream_id": s.stream_id}, timeout=5)
    assert resp.status_code == 200 and resp.json() == {"stream_id": s.stream_id, "status": "cancelled"}
    events = s.rest()
    assert [e.type for e in events[-2:]] == ["cancelled", "[DONE]"]
    assert events[-2].json["reason"] == "user"
    assert events[-2].at - t0 < 2.0
    assert quiet_fake.wait_closed(5)
    again = requests.post(b.url + "/cancel", json={"stream_id": s.stream_id}, timeout=5)
    assert again.status_code == 200 and again.json()["status"] == "finished"


def test_reconnect_on_b_mid_stream_no_gap_no_duplicate(hosts, quiet_fake: FakeUpstream) -> None:
    a, b = hosts
    s = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=40 pace=0.03]"})
    first = []
    for ev in s:
        first.append(ev)
        if len(first) == 12:
            break
    s.close()  # the browser's connection drops; it reconnects, and lands on host B
    r = open_stream(b.url + "/stream", params={"prompt": "ignored"}, headers={"Last-Event-ID": first[-1].id})
    assert r.response.status_code == 200
    assert_continuous(first + r.rest(), 40)
    assert quiet_fake.request_count == 1


def test_attach_from_b_follows_a_and_status_and_204(hosts, quiet_fake: FakeUpstream) -> None:
    a, b = hosts
    created = requests.post(a.url + "/streams", json={"prompt": "x [fake tokens=30 pace=0.03]"}, timeout=5)
    assert created.status_code == 201
    sid = created.json()["stream_id"]
    status = requests.get(b.url + f"/streams/{sid}", timeout=5).json()
    assert status["stream_id"] == sid and status["state"] == "running" and status["provider"] == "anthropic"
    events = open_stream(b.url + f"/streams/{sid}/events").rest()
    assert_continuous(events, 30)
    final = requests.get(b.url + f"/streams/{sid}", timeout=5).json()
    assert final["state"] == "done" and final["events"] == len(events) and final["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] == 30
    # The client has everything: B answers 204 so EventSource stops reconnecting.
    gone = requests.get(b.url + f"/streams/{sid}/events", headers={"Last-Event-ID": events[-1].id}, timeout=5)
    assert gone.status_code == 204
    assert requests.get(b.url + "/stream", headers={"Last-Event-ID": events[-1].id}, timeout=5).status_code == 204
    # A replay of the finished generation from B, from the middle.
    tail = open_stream(b.url + f"/streams/{sid}/events", headers={"Last-Event-ID": events[9].id}).rest()
    assert [e.seq for e in tail] == [e.seq for e in events[10:]]
    assert quiet_fake.request_count == 1


def test_follower_on_b_keeps_generation_alive_then_its_leaving_cancels(hosts, quiet_fake: FakeUpstream) -> None:
    a, b = hosts
    s = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=400 pace=0.02]"})
    s.until("text")
    sid = s.stream_id
    follower = open_stream(b.url + f"/streams/{sid}/events")
    first = follower.until("text").seq
    s.close()  # nobody left on A; the grace (1 s) passes, but B's follower is present
    # 125 more tokens at 0.02 s each: 2.5 s of the generation going on with only B following.
    follower.until(lambda e: e.type == "text" and e.seq >= first + 125)
    assert requests.get(b.url + f"/streams/{sid}", timeout=5).json()["state"] == "running"
    follower.close()  # the last follower anywhere leaves: the owner cancels after the grace
    assert wait_for(lambda: requests.get(b.url + f"/streams/{sid}", timeout=5).json()["state"] != "running", 8)
    replay = open_stream(b.url + f"/streams/{sid}/events").rest()
    assert replay[-2].type == "cancelled" and replay[-2].json["reason"] == "disconnect"
    assert quiet_fake.wait_closed(5)


def test_early_cancel_on_b_tombstones_a_stream_started_on_a(hosts, quiet_fake: FakeUpstream) -> None:
    a, b = hosts
    sid = "early-cancel-0123456789abcdef"
    resp = requests.post(b.url + "/cancel", json={"stream_id": sid}, timeout=5)
    assert resp.status_code == 202 and resp.json()["status"] == "pending"
    events = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=5]", "stream_id": sid}).rest()
    assert [e.type for e in events] == ["start", "cancelled", "[DONE]"]
    assert events[1].json["reason"] == "user"
    assert quiet_fake.request_count == 0


def test_client_chosen_id_is_not_started_twice_across_hosts(hosts, quiet_fake: FakeUpstream) -> None:
    a, b = hosts
    sid = "same-id-on-two-hosts-0123456"
    first = open_stream(a.url + "/stream", params={"prompt": "x [fake tokens=20 pace=0.03]", "stream_id": sid})
    first.until("start")
    # The same id again, on B (a retried request): it attaches, it does not run a second answer.
    second = open_stream(b.url + "/stream", params={"prompt": "x [fake tokens=20 pace=0.03]", "stream_id": sid})
    assert_continuous(second.rest(), 20)
    first.rest()
    assert quiet_fake.request_count == 1


def test_follower_on_b_gets_a_terminal_event_when_a_is_killed(redis_server, fake: FakeUpstream) -> None:
    """A worker killed outright (SIGKILL, OOM) never writes its ending: a follower elsewhere does."""
    import os
    import signal

    from .conftest import redis_env

    a = Gunicorn(redis_env(fake, redis_server.url), workers=1).start()
    b = Gunicorn(redis_env(fake, redis_server.url), workers=1).start()
    try:
        s = open_stream(a.url + "/stream", params={"prompt": "x [fake stall_after=2]"})
        s.until("text")
        follower = open_stream(f"{b.url}/streams/{s.stream_id}/events", timeout=30)
        follower.until("text")
        assert a.proc is not None
        # The master and its worker, with no chance to clean up.
        for pid in (a.proc.pid, *_children(a.proc.pid)):
            os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        events = follower.rest()
        assert [e.type for e in events[-2:]] == ["error", "[DONE]"]
        assert events[-2].json["error"]["retryable"] is True
        assert time.monotonic() - t0 < 20
        status = requests.get(f"{b.url}/streams/{s.stream_id}", timeout=5).json()
        assert status["state"] == "error"
    finally:
        a.stop()
        b.stop()


def _children(pid: int) -> list[int]:
    from pathlib import Path

    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out
