"""The Redis clients of one worker (commands, and pub/sub) and its worker id.

Whether Redis answers is their `health` (app.backends.redis.health). Redis is never on the
path that keeps a local stream alive: when a call through the clients fails, `mark_down`, and
request-path calls skip Redis at once (`usable()` is False: local behaviour only, cross-worker
features pause). No connection is opened before `open()` (the first request).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

import gevent
import redis
from gevent.event import Event
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from app.backends.redis.cluster import cluster_client, is_cluster_url
from app.backends.redis.health import Health
from app.backends.redis.keys import redacted_url
from app.backends.redis.sentinel import is_sentinel_url, master_clients
from app.backends.redis.sentinel import parse as parse_sentinel_url

log = logging.getLogger("sluice.redis")

SOCKET_TIMEOUT = 3.0  # > the feed's BLOCK_SLICE, so a blocking XREAD never trips it
CONNECT_TIMEOUT = 1.0
HEALTH_CHECK_INTERVAL = 10


class Clients:
    """The two clients (commands, and pub/sub) of one worker, its id, and their `health`."""

    def __init__(self, url: str) -> None:
        self.url = url
        if is_sentinel_url(url):
            parse_sentinel_url(url)  # a malformed URL fails at boot, not on the first request
        self.worker_id = ""
        self.client: Any = None  # redis.Redis, created in open()
        self.pubsub_client: Any = None
        self.health = Health(redacted_url(url))
        self._scripts: dict[str, Any] = {}
        self.cluster = is_cluster_url(url)  # a Redis Cluster (app.backends.redis.cluster)
        self._cluster_options: dict[str, Any] = {}
        self._opening: Event | None = None  # set once the Cluster client is made (or failed)
        self._primary_changed: Callable[[], bool] | None = None  # Sentinel: a new primary was named

    def open(self) -> None:
        """Name this worker and create the clients (they connect on their first command)."""
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        options: dict[str, Any] = {
            "decode_responses": True,
            # redis-py's default socket_timeout (5 s) would cut blocking reads: every blocking
            # call here (XREAD BLOCK, pub/sub get_message) uses a shorter timeout of its own.
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "health_check_interval": HEALTH_CHECK_INTERVAL,
            # One quick retry (a pooled connection that died with a Redis restart), no backoff:
            # a request must learn fast that Redis is gone, and fall back to local behaviour.
            "retry": Retry(NoBackoff(), 1),
        }
        if self.cluster:
            self._open_cluster(options)
        elif is_sentinel_url(self.url):
            self.client, self.pubsub_client, self._primary_changed = master_clients(self.url, options)
        else:
            self.client = redis.Redis.from_url(self.url, **options)
            self.pubsub_client = redis.Redis.from_url(self.url, **options)
        log.info("shared backend: Redis at %s (worker %s)", redacted_url(self.url), self.worker_id)

    def _open_cluster(self, options: dict[str, Any]) -> None:
        # One client: the subscriber takes a connection of its own from the node's pool. A
        # few quick retries: a redirection after a failover costs a refresh of the slot map.
        self._cluster_options = {**options, "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3)}
        self._opening = Event()
        with contextlib.suppress(RedisError, OSError):
            self.open_cluster()

    def open_cluster(self) -> None:
        """Create the Cluster client if there is none yet (the listener retries a failed one).

        Trap: unlike `redis.Redis`, `RedisCluster` asks the seed nodes for the slot map as it is
        made, which yields to other requests: they wait for it (`usable`) rather than find no
        client and count their places on this worker alone.
        """
        if self.client is not None:
            return
        try:
            self.client = self.pubsub_client = cluster_client(self.url, self._cluster_options)
        except (RedisClusterException, ValueError) as exc:  # not RedisErrors: no seed answered, a bad URL
            error = RedisConnectionError(f"redis cluster: {exc}")
            self.mark_down(error)
            raise error from exc
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            raise
        finally:
            if self._opening is not None:
                self._opening.set()

    def drop_idle(self) -> None:
        """Drop pooled connections after a failover (they may lead to the old primary). A
        Cluster client needs none of it: the old primary answers MOVED, which it follows."""
        if self.cluster:
            return
        for c in (self.client, self.pubsub_client):
            if c is not None:
                c.connection_pool.disconnect(inuse_connections=False)

    def close(self) -> None:
        for c in {id(c): c for c in (self.client, self.pubsub_client) if c is not None}.values():
            with contextlib.suppress(RedisError, OSError):
                c.close()

    def ready(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz: a PING, unless Redis is known down or just came back."""
        if self.client is None:
            return False, "redis backend not started"
        health = self.health
        if health.down:
            return False, health.reason
        if health.resyncing():
            # Redis came back (maybe empty): until every worker has written its generations
            # again, "not found" may only mean "not rewritten yet".
            return False, "redis is back; workers are resyncing their generations"
        try:
            self.client.ping()
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return False, health.reason
        return True, "redis"

    def usable(self) -> bool:
        """False while Redis is known to be down: request paths then skip it at once."""
        if self.client is None and self._opening is not None and not self._opening.is_set() and \
                gevent.getcurrent() is not gevent.get_hub():
            self._opening.wait(CONNECT_TIMEOUT * 3)  # a Cluster client being made (open_cluster)
        return self.client is not None and not self.health.down

    def mark_down(self, exc: BaseException) -> None:
        """A call through these clients failed: Redis is down (see `Health.mark_down`)."""
        self.health.mark_down(exc)
        if isinstance(exc, ReadOnlyError) or (isinstance(exc, ResponseError) and str(exc).startswith("UNBLOCKED")):
            # A failover made this server a replica: writes say READONLY, and a blocking read
            # (XREAD BLOCK) is cut with "UNBLOCKED ... (master -> replica?)". The URL's name (DNS,
            # proxy, cloud endpoint) leads new connections to the new primary; pooled ones would
            # ask the old one (stale reads, then READONLY again, a second outage) until they fail.
            self.drop_idle()

    def follow_primary(self) -> bool:
        """Once a tick: True when Sentinel names a new primary. The clients then point at it, and
        this worker writes its generations there again (what went to the old one is lost)."""
        if self._primary_changed is None or not self._primary_changed():
            return False
        log.warning("sentinel named a new primary; reconnecting and writing this worker's generations again")
        if self.health.on_return is not None:
            self.health.on_return()
        return True

    def script(self, source: str) -> Any:
        """A Lua script registered once (redis-py runs it by hash, loading it again if needed)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script
