"""Issue 9: the app takes its drain deadline from the gunicorn worker it runs in, whatever
started it. `gunicorn -k gevent --graceful-timeout 4 wsgi:app` (no config file) + TERM: every
open stream ends with `cancelled` (reason `shutdown`) then `[DONE]` before gunicorn kills the
worker at 4 s -- with the shipped config file too, and with an operator's grace that is longer
than gunicorn's."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.servers import Gunicorn, base_env
from tests.support.sse import Stream, open_stream

from .conftest import GUNICORN_CONF, fake_env

pytestmark = pytest.mark.timeout(90)


def read_types(stream: Stream) -> list[str]:
    """Every event type received, and "CUT" if the connection broke before the end."""
    try:
        stream.rest()
    except requests.RequestException:
        return [e.type for e in stream.events] + ["CUT"]
    return [e.type for e in stream.events]


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        (None, {}),
        (None, {"SLUICE_SHUTDOWN_GRACE_SECONDS": "30"}),
        (GUNICORN_CONF, {}),
    ],
    ids=["no-config", "no-config-longer-app-grace", "config-file"],
)
def test_term_ends_every_stream_inside_gunicorns_graceful_timeout(fake, config, extra) -> None:  # type: ignore[no-untyped-def]
    env = base_env(**fake_env(fake, **extra))
    with Gunicorn(env, workers=1, config=config, graceful_timeout=4) as server:
        # Warm-up: the first upstream call imports the SDK (seconds on a loaded machine).
        assert read_types(open_stream(server.url + "/stream", params={"prompt": "w [fake tokens=1]"}))[-1] == "[DONE]"
        streams = [
            open_stream(server.url + "/stream", params={"prompt": f"long {i} [fake tokens=400 pace=0.05]"}, timeout=15)
            for i in range(3)
        ]
        for s in streams:
            s.until("text")
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        with ThreadPoolExecutor(len(streams)) as pool:
            seen = list(pool.map(read_types, streams))
        for s, kinds in zip(streams, seen, strict=True):
            assert kinds[-2:] == ["cancelled", "[DONE]"], kinds
            assert s.events[-2].json["reason"] == "shutdown"
            assert kinds.count("cancelled") == 1
        assert time.monotonic() - t0 < 4.5, "the app ended its streams after gunicorn's deadline"
        assert server.proc is not None and server.proc.wait(10) == 0
    assert fake.wait_closed(timeout=3)
