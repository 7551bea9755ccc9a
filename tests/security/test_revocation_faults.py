"""Sign-out while Redis is unreachable: the worker that ended a session still refuses it, and
other sessions keep working (refusing them all would sign everybody out for the outage)."""

from __future__ import annotations

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.redis.conftest import RedisProcess, redis_server  # noqa: F401 (a fixture)
from tests.support.servers import Gunicorn

from .conftest import KEY_A, locked_env, sign_in

pytestmark = pytest.mark.timeout(90)


def test_sessions_while_redis_is_down(redis_server: RedisProcess, upstream: FakeUpstream) -> None:  # noqa: F811
    with Gunicorn(locked_env(upstream, SLUICE_REDIS_URL=redis_server.url)) as host:
        ended = sign_in(host.url, KEY_A)
        value = ended.cookies["sluice_session"]
        assert ended.delete(f"{host.url}/session", timeout=5).status_code == 204
        keep = sign_in(host.url, KEY_A)
        assert redis_server.client().keys("sluice:{s:*}:revoked")  # the list is shared while Redis is up
        redis_server.stop()
        try:
            assert requests.get(f"{host.url}/readyz", cookies={"sluice_session": value}, timeout=5).status_code == 401
            created = keep.post(f"{host.url}/streams", json={"prompt": "x [fake tokens=1]"}, timeout=10)
            assert created.status_code == 201
            assert keep.get(f"{host.url}{created.json()['status_url']}", timeout=5).status_code == 200
        finally:
            redis_server.start()
