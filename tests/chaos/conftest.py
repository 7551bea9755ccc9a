"""The chaos test's stack: the deploy stack (nginx + gunicorn from the shipped files, the fake
upstream) with a private Redis that the test can restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.conftest import (  # noqa: F401 (fixtures and hooks)
    fake,
    make_stack,
    pytest_configure,
    pytest_runtest_makereport,
    tls_cert,
)
from tests.redis.conftest import RedisProcess
from tests.support.system import require_binary


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess(require_binary("redis-server", "/usr/bin/redis-server")).start()
    yield server
    server.stop()
