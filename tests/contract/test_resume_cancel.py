"""Identity, reconnects and cancel (CONTRACT "Identity, reconnects and cancel"; issue 9's freeze)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.conftest import sluice_env
from tests.contract.conftest import (
    attach,
    cancel,
    check_well_formed,
    create,
    expected,
    kinds,
    of,
    post_stream,
    status_of,
    terminal,
    text,
    wait_until,
)
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def srv(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    env = sluice_env(upstream, SLUICE_DISCONNECT_GRACE_SECONDS="1", SLUICE_MAX_STREAMS_PER_CLIENT="50",
                     SLUICE_MAX_RESPONSES_PER_CLIENT="50")
    with Gunicorn(env) as server:
        yield server


def healthy_quickly(srv: Gunicorn, times: int = 3) -> None:
    for _ in range(times):
        t0 = time.monotonic()
        assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 2.0


# -- Last-Event-ID ---------------------------------------------------------------------------------


def test_resume_on_the_events_route_replays_after_the_seq(srv: Gunicorn, fresh: FakeUpstream) -> None:
    sid = create(srv, {"prompt": "x [fake tokens=20 pace=0.04]"})["stream_id"]
    first = attach(srv, sid)
    first.until(lambda e: e.seq >= 5)
    first.close()
    seen = [e for e in first.events if e.seq <= 5]
    second = attach(srv, sid, last=f"{sid}:5")
    rest = second.rest()
    assert rest[0].seq == 6, [e.id for e in rest]
    check_well_formed(seen + rest, sid)
    assert text(seen + rest) == expected(20)
    assert fresh.request_count == 1


def test_an_eventsource_reconnect_to_get_stream_resumes_and_starts_nothing(srv: Gunicorn, fresh: FakeUpstream) -> None:
    params = {"prompt": "x [fake tokens=20 pace=0.04]"}
    first = open_stream(srv.url + "/stream", params=params)
    first.until(lambda e: e.seq >= 4)
    first.close()
    sid = first.stream_id
    seen = [e for e in first.events if e.seq <= 4]
    again = open_stream(srv.url + "/stream", params=params, headers={"Last-Event-ID": f"{sid}:4"})
    assert again.response.status_code == 200
    rest = again.rest()
    check_well_formed(seen + rest, sid)
    assert text(seen + rest) == expected(20)
    assert fresh.request_count == 1


def test_last_event_id_as_a_query_parameter(srv: Gunicorn, fresh: FakeUpstream) -> None:
    sid = create(srv, {"prompt": "x [fake tokens=6]"})["stream_id"]
    wait_until(lambda: status_of(srv, sid).json()["state"] == "done", timeout=15)
    resp = open_stream(f"{srv.url}/streams/{sid}/events", params={"last_event_id": f"{sid}:3"})
    rest = resp.rest()
    assert rest[0].seq == 4 and rest[-1].data == "[DONE]", [e.id for e in rest]


@pytest.mark.parametrize("route", ["stream", "events"])
def test_an_unknown_generation_in_last_event_id_is_204_and_starts_nothing(
    srv: Gunicorn, fresh: FakeUpstream, route: str
) -> None:
    sid = "neverSeenBefore_0123456789"
    if route == "stream":
        url, params = srv.url + "/stream", {"prompt": "x [fake tokens=3]"}
    else:
        url, params = f"{srv.url}/streams/{sid}/events", {}
    resp = requests.get(url, params=params, headers={"Last-Event-ID": f"{sid}:3"}, timeout=10)
    assert resp.status_code == 204, resp.text[:200]
    assert resp.content == b""
    time.sleep(0.3)
    assert fresh.request_count == 0


def test_last_event_id_with_a_post_stream_starts_nothing(srv: Gunicorn, fresh: FakeUpstream) -> None:
    sid = "neverSeenBefore_9876543210"
    resp = requests.post(srv.url + "/stream", json={"prompt": "x"}, headers={"Last-Event-ID": f"{sid}:1"}, timeout=10)
    assert resp.status_code == 204
    time.sleep(0.3)
    assert fresh.request_count == 0


def test_the_client_that_has_the_last_event_or_beyond_gets_204(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=3]"}).rest())
    sid, last = events[0].json["stream_id"], events[-1].seq
    for seq in (last, last + 1, 99999):
        resp = requests.get(f"{srv.url}/streams/{sid}/events", headers={"Last-Event-ID": f"{sid}:{seq}"}, timeout=10)
        assert resp.status_code == 204, (seq, resp.text[:200])
    resp = requests.get(
        srv.url + "/stream", params={"prompt": "x"}, headers={"Last-Event-ID": f"{sid}:{last}"}, timeout=10
    )
    assert resp.status_code == 204
    assert fresh.request_count == 1


def test_a_finished_generation_replays_from_the_start_without_last_event_id(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=5]"}).rest())
    sid = events[0].json["stream_id"]
    replay = check_well_formed(attach(srv, sid).rest(), sid)
    assert [e.data for e in replay] == [e.data for e in events]
    half = attach(srv, sid, last=f"{sid}:2").rest()
    assert [e.data for e in half] == [e.data for e in events[2:]]


def test_a_seq_beyond_a_running_generation_waits_for_the_events_after_it(srv: Gunicorn, fresh: FakeUpstream) -> None:
    sid = create(srv, {"prompt": "x [fake tokens=30 pace=0.05]"})["stream_id"]
    wait_until(lambda: fresh.request_count >= 1, timeout=10)
    ahead = attach(srv, sid, last=f"{sid}:12")
    assert ahead.response.status_code == 200
    rest = ahead.rest()
    assert rest[0].seq == 13, [e.id for e in rest]
    assert rest[-1].data == "[DONE]"
    full = check_well_formed(attach(srv, sid).rest(), sid)
    assert [e.data for e in rest] == [e.data for e in full[12:]]


def test_a_seq_far_beyond_a_running_generation_does_not_freeze_the_worker(
    start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream
) -> None:
    """Issue 9: `Last-Event-ID: <id>:99999` on a running stream spun the worker at 100 % forever.
    (Its own server: a frozen worker must not take the module's other tests with it.)"""
    srv = start_sluice()
    sid = create(srv, {"prompt": "x [fake tokens=15 pace=0.05]"})["stream_id"]
    wait_until(lambda: fresh.request_count >= 1, timeout=10)
    outcome: dict[str, object] = {}

    def far() -> None:
        try:
            resp = requests.get(
                f"{srv.url}/streams/{sid}/events", headers={"Last-Event-ID": f"{sid}:99999"}, timeout=30
            )
            outcome["status"], outcome["body"] = resp.status_code, resp.content
        except requests.RequestException as exc:  # pragma: no cover - reported below
            outcome["exc"] = exc

    thread = threading.Thread(target=far, daemon=True)
    thread.start()
    wait_until(lambda: status_of(srv, sid).json()["state"] == "done", timeout=20)
    thread.join(10)
    assert not thread.is_alive(), "the far-ahead reader must be answered once the generation ended"
    assert "exc" not in outcome, outcome
    assert b"data: {" not in outcome["body"]  # nothing it already had, nothing invented  # type: ignore[operator]
    healthy_quickly(srv, times=5)
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=3]"}).rest())
    assert terminal(events)["type"] == "done"


# -- cancel ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["json", "form", "query"])
def test_cancel_a_running_generation(srv: Gunicorn, fresh: FakeUpstream, how: str) -> None:
    stream = post_stream(srv, {"prompt": "x [fake tokens=50 stall_after=3]"})
    stream.until(lambda e: e.data != "[DONE]" and e.type == "text" and e.json["content"] == "t2 ")
    sid = stream.stream_id
    assert fresh.wait_open(1, 5)
    if how == "json":
        resp = requests.post(srv.url + "/cancel", json={"stream_id": sid}, timeout=10)
    elif how == "form":
        resp = requests.post(srv.url + "/cancel", data={"stream_id": sid}, timeout=10)
    else:
        resp = requests.post(srv.url + "/cancel", params={"stream_id": sid}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"stream_id": sid, "status": "cancelled"} or (
        resp.json()["status"] == "cancelled" and resp.json()["stream_id"] == sid
    )
    events = check_well_formed(stream.rest(), sid)
    end = terminal(events)
    assert end["type"] == "cancelled" and end["reason"] == "user", end
    assert isinstance(end["usage"]["input_tokens"], int) and isinstance(end["usage"]["output_tokens"], int)
    assert text(events) == expected(3)
    assert fresh.wait_closed(3), "a cancelled generation closes its upstream connection"
    assert status_of(srv, sid).json()["state"] == "cancelled"


def test_cancel_is_idempotent_and_a_finished_generation_answers_finished(srv: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(srv, {"prompt": "x [fake tokens=2]"}).rest())
    sid = events[0].json["stream_id"]
    for _ in range(2):
        resp = cancel(srv, sid)
        assert resp.status_code == 200 and resp.json()["status"] == "finished", resp.text
    assert status_of(srv, sid).json()["state"] == "done"
    stream = post_stream(srv, {"prompt": "x [fake stall_after=1]"})
    stream.until("text")
    first, second = cancel(srv, stream.stream_id), cancel(srv, stream.stream_id)
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    assert second.status_code == 200 and second.json()["status"] in ("cancelled", "finished")
    assert kinds(stream.rest()).count("cancelled") == 1


@pytest.mark.parametrize("route", ["post", "get", "streams"])
def test_an_early_cancel_is_remembered_and_the_generation_never_calls_upstream(
    srv: Gunicorn, fresh: FakeUpstream, route: str
) -> None:
    sid = f"early-cancel-{route}-0123456789"
    resp = cancel(srv, sid)
    assert resp.status_code == 202 and resp.json()["status"] == "pending", resp.text
    body = {"prompt": "x [fake tokens=5]", "stream_id": sid}
    if route == "post":
        stream = post_stream(srv, body)
    elif route == "get":
        stream = open_stream(srv.url + "/stream", params=body)
    else:
        made = requests.post(srv.url + "/streams", json=body, timeout=10)
        assert made.status_code == 201
        stream = attach(srv, sid)
    events = check_well_formed(stream.rest(), sid)
    assert kinds(events) == ["start", "cancelled", "[DONE]"], kinds(events)
    assert terminal(events)["reason"] == "user"
    time.sleep(0.3)
    assert fresh.request_count == 0


@pytest.mark.parametrize(
    "payload",
    [{"stream_id": "bad id!"}, {"stream_id": "short"}, {"stream_id": 12345678901234567}, {}, {"stream_id": "x" * 65}],
)
def test_a_malformed_cancel_is_400(srv: Gunicorn, fresh: FakeUpstream, payload: dict) -> None:
    resp = requests.post(srv.url + "/cancel", json=payload, timeout=10)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request"


def test_a_client_that_goes_away_stops_its_generation_after_the_grace(srv: Gunicorn, fresh: FakeUpstream) -> None:
    stream = post_stream(srv, {"prompt": "x [fake tokens=50 stall_after=2]"})
    stream.until("text")
    sid = stream.stream_id
    assert fresh.wait_open(1, 5)
    stream.close()
    t0 = time.monotonic()
    assert fresh.wait_closed(8), "the upstream must be closed once the grace (1 s) has passed"
    assert time.monotonic() - t0 >= 0.5, "not before the grace"
    wait_until(lambda: status_of(srv, sid).json()["state"] == "cancelled", timeout=5)
    end = terminal(check_well_formed(attach(srv, sid).rest(), sid))
    assert end["type"] == "cancelled" and end["reason"] == "disconnect"


def test_a_reconnect_within_the_grace_keeps_the_generation(srv: Gunicorn, fresh: FakeUpstream) -> None:
    stream = post_stream(srv, {"prompt": "x [fake tokens=40 pace=0.05]"})
    stream.until(lambda e: e.seq >= 3)
    stream.close()
    sid = stream.stream_id
    seen = [e for e in stream.events if e.seq <= 3]
    rest = attach(srv, sid, last=f"{sid}:3").rest()
    events = check_well_formed(seen + rest, sid)
    assert terminal(events)["type"] == "done"
    assert text(events) == expected(40)


def test_the_cancelled_event_has_usage_marked_estimated_where_unreported(srv: Gunicorn, fresh: FakeUpstream) -> None:
    stream = post_stream(srv, {"prompt": "x [fake tokens=50 stall_after=4]"})
    stream.until(lambda e: e.type == "text" and e.json["content"] == "t3 ")
    cancel(srv, stream.stream_id)
    end = terminal(stream.rest())
    # Anthropic reports output tokens only at the end: the count here is Sluice's estimate.
    assert end["usage"].get("estimated") is True, end
    assert end["usage"]["output_tokens"] >= 1


def test_several_tabs_see_the_same_cancel(srv: Gunicorn, fresh: FakeUpstream) -> None:
    sid = create(srv, {"prompt": "x [fake tokens=50 stall_after=2]"})["stream_id"]
    tabs = [attach(srv, sid) for _ in range(3)]
    for tab in tabs:
        tab.until("text")
    assert cancel(srv, sid).json()["status"] == "cancelled"
    ends = [terminal(check_well_formed(tab.rest(), sid)) for tab in tabs]
    assert all(e["type"] == "cancelled" and e["reason"] == "user" for e in ends)
    assert of(attach(srv, sid).rest(), "cancelled")


# -- how long things are remembered (and coalescing, on the same tuned server) ----------------------------


@pytest.fixture(scope="module")
def short(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    env = sluice_env(
        upstream, SLUICE_REPLAY_TTL_SECONDS="2", SLUICE_CANCEL_TOMBSTONE_SECONDS="1", SLUICE_COALESCE_MS="300"
    )
    with Gunicorn(env) as server:
        yield server


def test_a_finished_generation_is_forgotten_after_the_replay_ttl(short: Gunicorn, fresh: FakeUpstream) -> None:
    events = check_well_formed(post_stream(short, {"prompt": "x [fake tokens=2]"}).rest())
    sid = events[0].json["stream_id"]
    assert status_of(short, sid).status_code == 200
    wait_until(lambda: status_of(short, sid).status_code == 404, timeout=15)
    assert requests.get(f"{short.url}/streams/{sid}/events", timeout=10).status_code == 404
    gone = requests.get(f"{short.url}/streams/{sid}/events", headers={"Last-Event-ID": f"{sid}:2"}, timeout=10)
    assert gone.status_code == 204


def test_an_early_cancel_is_forgotten_after_the_tombstone_time(short: Gunicorn, fresh: FakeUpstream) -> None:
    sid = "tombstone-expires-0123456789"
    assert cancel(short, sid).status_code == 202
    time.sleep(2.5)  # the remembered time itself is under test: nothing to wait on
    events = check_well_formed(post_stream(short, {"prompt": "x [fake tokens=2]", "stream_id": sid}).rest(), sid)
    assert terminal(events)["type"] == "done" and fresh.request_count == 1


def test_coalescing_merges_text_deltas_without_changing_the_text(short: Gunicorn, fresh: FakeUpstream) -> None:
    """SLUICE_COALESCE_MS=300 on this server: fragments that arrive within it share one `text` event."""
    events = check_well_formed(post_stream(short, {"prompt": "x [fake tokens=40 pace=0.02]"}, timeout=30).rest())
    texts = of(events, "text")
    assert "".join(t["content"] for t in texts) == "".join(f"t{i} " for i in range(40))
    assert len(texts) < 20, len(texts)
    assert terminal(events)["type"] == "done"
