"""Issue 19, item 3 (the chaos test's cut stream): a stream request that an old worker had read
when a reload's SIGTERM arrived, and that was waiting on Redis (looking its stream id up,
claiming it) while the drain ran. The drain found no generation running and ended at once: it
closed the Redis backend under the request (a 500), or, when Redis answered first, refused the
generation (503 "restarting", long before the drain deadline), or started it after the drain had
looked and let the worker exit under its stream, written from the event loop (no connection of
gunicorn's held the worker): cut without its last chunk, as the chaos test saw it.

Made deterministic with a proxy in front of Redis that holds the request's first Redis command
naming the stream's id until the drain has had its chance to end: the stream must still run to
its end, `done` then `[DONE]`, and the old worker leave after it. (On main: 500.)
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import Event, open_stream
from tests.support.tcp_proxy import HoldingProxy

from .conftest import redis_env, wait_for

pytestmark = pytest.mark.timeout(120)

STREAM_ID = "drain-admission-0123456789"


def workers_of(master: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()}
    except OSError:
        return set()


def test_a_stream_read_as_the_worker_starts_draining_runs_to_its_end(redis_server, quiet_fake: FakeUpstream) -> None:
    proxy = HoldingProxy(redis_server.port, marker=STREAM_ID.encode())
    # Plain `gunicorn -k gevent` (no config file): the old worker drains on SIGTERM at once.
    env = redis_env(quiet_fake, f"redis://127.0.0.1:{proxy.port}/0")
    server = Gunicorn(env, workers=1, graceful_timeout=20).start()
    outcome: dict[str, object] = {}

    def client() -> None:
        try:
            stream = open_stream(server.url + "/stream", timeout=30,
                                 params={"prompt": "x [fake tokens=20 pace=0.05]", "stream_id": STREAM_ID})
            outcome["status"] = stream.response.status_code
            if stream.response.status_code != 200:
                outcome["body"] = stream.response.text[:300]
                return
            outcome["events"] = stream.rest()
        except requests.RequestException as exc:
            outcome["error"] = repr(exc)

    try:
        assert server.proc is not None
        old = workers_of(server.proc.pid)
        thread = threading.Thread(target=client)
        thread.start()
        assert proxy.held.wait(20), "the stream's claim never reached Redis"
        server.signal(signal.SIGHUP)  # a reload: the old worker, admitting the stream, drains
        assert wait_for(lambda: "draining" in server.log(), 20), server.log()[-3000:]
        # The bug: the drain ended at once and closed the backend (the held claim's connection
        # with it). A drain that waits for the admission holds it open.
        wait_for(proxy.closed_while_held.is_set, 3)
        proxy.release()
        thread.join(30)
        assert not thread.is_alive()
        assert outcome.get("status") == 200, (outcome, server.log()[-3000:])
        events: list[Event] = outcome.get("events", [])  # type: ignore[assignment]
        assert "error" not in outcome and [e.type for e in events[-2:]] == ["done", "[DONE]"], (
            outcome.get("error"), [e.type for e in events][-4:], server.log()[-4000:])
        assert wait_for(lambda: workers_of(server.proc.pid).isdisjoint(old), 20)  # the old worker left
    finally:
        server.close()
        proxy.close()
