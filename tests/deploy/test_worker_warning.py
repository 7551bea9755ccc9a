"""Issue 9: several workers without Redis are warned about reliably, whatever started them.

The warning used to count the master's children when a worker started, when its siblings
may not exist yet: under plain `gunicorn -w 2 -k gevent wsgi:app` nothing was logged. The
app now asks the worker's own config."""

from __future__ import annotations

import time

import pytest

from tests.support.servers import Gunicorn, base_env

pytestmark = pytest.mark.timeout(90)

WARNING = "run WITHOUT SLUICE_REDIS_URL"


def test_two_workers_without_redis_are_warned_about() -> None:
    with Gunicorn(base_env(), workers=2) as server:  # no config file: plain -w 2 -k gevent
        # Once per worker, as it starts, before any request (the second may still be loading).
        deadline = time.monotonic() + 30
        while server.log().count(WARNING) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log()
    assert log.count(WARNING) == 2, log


def test_one_worker_is_not_warned_about() -> None:
    with Gunicorn(base_env(), workers=1) as server:
        log = server.log()
    assert WARNING not in log, log
