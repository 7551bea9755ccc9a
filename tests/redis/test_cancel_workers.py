"""Issue 4: with `gunicorn -w 4` and Redis, POST /cancel on any worker stops a generation on any other."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.sse import open_stream

pytestmark = pytest.mark.timeout(90)

STREAMS = 40


def test_forty_cancels_on_fresh_connections_all_land(redis_server, start_sluice, quiet_fake: FakeUpstream) -> None:
    server = start_sluice(redis_server.url, workers=4)
    streams = [None] * STREAMS
    errors: list[BaseException] = []

    def open_one(i: int) -> None:
        try:
            s = open_stream(server.url + "/stream", params={"prompt": f"q{i} [fake stall_after=1]"}, timeout=15)
            s.until("text")  # upstream open and streaming, then silent
            streams[i] = s
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(STREAMS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert quiet_fake.open_connections == STREAMS

    latencies: list[float] = [0.0] * STREAMS
    outcomes: list[object] = [None] * STREAMS

    def cancel_one(i: int) -> None:
        s = streams[i]
        assert s is not None
        t0 = time.monotonic()
        # requests.post without a Session: a fresh TCP connection, so the kernel picks the worker.
        resp = requests.post(server.url + "/cancel", json={"stream_id": s.stream_id}, timeout=10)
        try:
            # rest(), not until(): the helper keeps no events parsed past the one until() returns.
            events = s.rest()
            ev = next(e for e in events if e.type in ("cancelled", "done", "error"))
            latencies[i] = ev.at - t0
            outcomes[i] = (resp.status_code, resp.json()["status"], ev.type, ev.json.get("reason"), events[-1].type)
        except BaseException as exc:  # noqa: BLE001
            outcomes[i] = exc

    threads = [threading.Thread(target=cancel_one, args=(i,)) for i in range(STREAMS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(o == (200, "cancelled", "cancelled", "user", "[DONE]") for o in outcomes), outcomes
    assert max(latencies) < 2.0, sorted(latencies)[-5:]
    assert quiet_fake.wait_for(lambda f: f.open_connections == 0, timeout=5), quiet_fake.open_connections
    for s in streams:
        s.close()  # type: ignore[union-attr]
