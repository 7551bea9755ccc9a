"""X-Forwarded-* are believed only from a trusted proxy's address (FORWARDED_ALLOW_IPS), whatever
SLUICE_PROXY_COUNT says: a client that reaches gunicorn directly cannot pick its own address."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable

import pytest

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(60)


def post_streams(server: Gunicorn, source: str, forwarded_for: str) -> int:
    """POST /streams from the local address `source`, claiming to come from `forwarded_for`."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(source, 0))
    try:
        body = json.dumps({"prompt": "x [fake stall_after=0]"})
        conn.request("POST", "/streams", body=body, headers={"Content-Type": "application/json",
                                                            "X-Forwarded-For": forwarded_for})
        return conn.getresponse().status
    finally:
        conn.close()


def test_an_untrusted_peer_cannot_pick_its_address(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_PROXY_COUNT="1", SLUICE_MAX_STREAMS_PER_CLIENT="2")
    # 127.0.0.2 is not in FORWARDED_ALLOW_IPS (loopback's 127.0.0.1 and ::1): a new address each time
    # is no new client.
    statuses = [post_streams(server, "127.0.0.2", f"198.51.100.{n}") for n in range(1, 4)]
    assert statuses == [201, 201, 429]


def test_the_trusted_proxy_still_names_the_client(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_PROXY_COUNT="1", SLUICE_MAX_STREAMS_PER_CLIENT="1")
    # From 127.0.0.1 (the proxy): each X-Forwarded-For is its own client.
    statuses = [post_streams(server, "127.0.0.1", f"198.51.100.{n}") for n in range(1, 4)]
    assert statuses == [201, 201, 201]
    assert post_streams(server, "127.0.0.1", "198.51.100.1") == 429
