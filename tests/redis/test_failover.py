"""Issue 9: a Redis failover. The primary becomes a replica (it answers every write with
READONLY) and another server is promoted; the address Sluice uses (a DNS name, a proxy, a
cloud endpoint; here a TCP proxy) now leads to the new primary, but only for new connections.
Sluice must drop its pooled connections on READONLY and reconnect, or it never writes again:
a follower on another host would wait for an end that never comes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import redis
import requests

from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.script import answer_tokens
from tests.support.sse import open_stream, text_of
from tests.support.system import require_binary
from tests.support.tcp_proxy import CuttableProxy

from .conftest import RedisProcess, follow_to_end, wait_for

pytestmark = pytest.mark.timeout(120)

TOKENS = 100


@pytest.fixture
def pair(tmp_path) -> Iterator[tuple[RedisProcess, RedisProcess]]:  # type: ignore[no-untyped-def]
    """A primary and its replica (private servers; a full sync writes its RDB file under tmp_path)."""
    binary = require_binary("redis-server", "/usr/bin/redis-server")
    servers = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        servers.append(RedisProcess(binary, "--dir", str(tmp_path / name)).start())
    primary, replica = servers
    replica.client().execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
    assert wait_for(lambda: replica.client().info("replication").get("master_link_status") == "up", 10)
    yield primary, replica
    primary.stop()
    replica.stop()


def test_followers_get_the_end_after_a_failover(pair, start_sluice, quiet_fake: FakeUpstream) -> None:
    primary, replica = pair
    proxy = CuttableProxy(primary.port)
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        a, b = start_sluice(url), start_sluice(url)
        local = open_stream(a.url + "/stream", params={"prompt": f"x [fake tokens={TOKENS} pace=0.05]"}, timeout=20)
        local.until("text")
        follower = open_stream(f"{b.url}/streams/{local.stream_id}/events", timeout=10)
        follower.until("text")

        # The failover, as Sentinel or a cloud service does it: promote the replica, point the
        # address at it, demote the old primary (it stays up, and answers writes with READONLY).
        replica.client().execute_command("REPLICAOF", "NO", "ONE")
        proxy.target_port = replica.port
        primary.client().execute_command("REPLICAOF", "127.0.0.1", str(replica.port))
        with pytest.raises(redis.exceptions.ReadOnlyError):
            primary.client().set("probe", "1")

        events = local.rest()
        assert [e.type for e in events[-2:]] == ["done", "[DONE]"]
        with contextlib.suppress(requests.RequestException):
            follower.rest()  # cut short, or ended
        seen = follow_to_end(b.url, local.stream_id, list(follower.events), 30)
        assert [e.type for e in seen[-2:]] == ["done", "[DONE]"], [e.type for e in seen[-4:]]
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        assert text_of(seen) == "".join(answer_tokens(TOKENS))
        # b's blocking read was cut by the failover ("UNBLOCKED ... master -> replica"): b drops
        # every pooled connection then, not only on a later READONLY, which would take Redis
        # "down" for b a second time, and this status with it (a 404).
        status = requests.get(f"{b.url}/streams/{local.stream_id}", timeout=5).json()
        assert status.get("state") == "done", status
    finally:
        proxy.close()
