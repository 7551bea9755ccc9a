"""Fixtures for the Redis backend tests: a private redis-server per module, the fake upstream,
and Sluice under real gunicorn (gevent workers) pointed at both.

Never the system Redis on 6379: each module starts its own on a free port, with no persistence,
and can stop and start it again on the same port (the fault tests).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
import requests

from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn, free_port
from tests.support.sse import Event, open_stream
from tests.support.system import require_binary
from tests.support.wait import wait_for  # noqa: F401  (the redis tests import it from here)


class RedisProcess:
    """A private `redis-server` on a fixed port that can be stopped and started again."""

    def __init__(self, binary: str, *args: str) -> None:
        self.binary = binary
        self.args = args  # more redis-server options (e.g. `--dir` for a replica's RDB files)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisProcess:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)


def start_together(*hosts: Gunicorn) -> None:
    """Boot the hosts at once (the machine is slow); each is checked by the caller."""
    booting = [threading.Thread(target=host.start) for host in hosts]
    for thread in booting:
        thread.start()
    for thread in booting:
        thread.join(90)


@contextlib.contextmanager
def two_hosts(env: dict[str, str], workers: int = 1,
              redis_url: str | None = None) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    """Two Sluice hosts sharing nothing but Redis: `redis_url`, else a private Redis started here."""
    redis_process = None
    if redis_url is None:
        redis_process = RedisProcess(require_binary("redis-server", "/usr/bin/redis-server")).start()
        redis_url = redis_process.url
    env = {**env, "SLUICE_REDIS_URL": redis_url}
    one, two = Gunicorn(env, workers=workers), Gunicorn(env, workers=workers)
    try:
        start_together(one, two)
        for host in (one, two):
            assert requests.get(host.url + "/healthz", timeout=5).status_code == 200, host.log()
        yield one, two
    finally:
        one.stop()
        two.stop()
        if redis_process is not None:
            redis_process.stop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess(require_binary("redis-server", "/usr/bin/redis-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def redis_env(fake: FakeUpstream, redis_url: str | None, **overrides: str) -> dict[str, str]:
    """Sluice pointed at the fake upstream and (when given) at Redis; short timers."""
    if redis_url:
        overrides = {"SLUICE_REDIS_URL": redis_url, **overrides}
    limits = {"SLUICE_MAX_STREAMS_PER_CLIENT": "200", "SLUICE_MAX_RESPONSES_PER_CLIENT": "200"}
    return sluice_env(fake, **{**limits, **overrides})


@pytest.fixture
def start_sluice(fake: FakeUpstream) -> Iterator[Callable[..., Gunicorn]]:
    """Start gunicorns (stopped at the end of the test): start(redis_url, workers=1, **env)."""
    servers: list[Gunicorn] = []

    def start(redis_url: str | None, workers: int = 1, **env: str) -> Gunicorn:
        server = Gunicorn(redis_env(fake, redis_url, **env), workers=workers).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def quiet_fake(fake: FakeUpstream) -> FakeUpstream:
    """The fake with no connection left open by an earlier test, and its counters reset."""
    fake.wait_closed(5)
    fake.reset()
    return fake


def follow_to_end(url: str, sid: str, events: list[Event], seconds: float,
                  headers: dict[str, str] | None = None) -> list[Event]:
    """Read on as EventSource does: resume with Last-Event-ID until `[DONE]` (or time is up)."""
    deadline = time.monotonic() + seconds
    while (not events or events[-1].data != "[DONE]") and time.monotonic() < deadline:
        last = {"Last-Event-ID": events[-1].id} if events else {}
        s = open_stream(f"{url}/streams/{sid}/events", headers={**(headers or {}), **last}, timeout=10)
        assert s.response.status_code == 200, s.response.status_code
        with contextlib.suppress(requests.RequestException):
            s.rest()  # cut short: resumed on the next turn
        events += s.events
        if not s.events:
            time.sleep(0.5)  # "come back later" (`retry`)
    return events
