"""Redis Cluster (`SLUICE_REDIS_URL=redis+cluster://[:password@]host:port[,host:port...]`).

What differs from a single Redis, and nothing else:

- the client is redis-py's `RedisCluster`, bootstrapped from the seed nodes; it follows MOVED and
  ASK redirections and refreshes its slot map after a failover or a slot migration;
- a transaction (MULTI) may only hold keys of one slot: the writer sends one per slot
  (`per_slot`), each holding the generations whose hash tags fall in it;
- a worker's messages travel by sharded pub/sub (SPUBLISH / SSUBSCRIBE, Redis 7+) on a channel in
  the worker's own slot (`{w:<worker id>}`, as its inbox): one node carries them, not all of
  them. `ShardedSubscriber` holds the worker's one subscription on the node that serves that
  slot, and moves it when the slot moves.

redis-py's own `ClusterPubSub` reconciles moved shard channels on a thread of its own while the
caller reads; here one greenlet reads and resubscribes, so nothing reads a socket twice at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

log = logging.getLogger("sluice.redis")

SCHEME = "redis+cluster"
DEFAULT_PORT = 6379

T = TypeVar("T")


def is_cluster_url(url: str) -> bool:
    """True for a `redis+cluster://` URL."""
    return url.split("://", 1)[0].lower() == SCHEME


def cluster_client(url: str, options: dict[str, Any]) -> RedisCluster:
    """A `RedisCluster` bootstrapped from the URL's seed nodes (any one that answers will do)."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    nodes = []
    for seed in hosts.split(","):
        host, sep, port = seed.strip().rpartition(":")
        if not sep:
            host, port = seed.strip(), ""
        if not host:
            raise ValueError(f"SLUICE_REDIS_URL: no host in cluster seed {seed!r}")
        nodes.append(ClusterNode(host.strip("[]"), int(port) if port else DEFAULT_PORT))  # type: ignore[no-untyped-call]
    if not nodes:
        raise ValueError("SLUICE_REDIS_URL: redis+cluster:// needs at least one host:port")
    return RedisCluster(
        startup_nodes=nodes,
        username=unquote(username) or None,
        password=unquote(password) or None,
        **options,
    )


def per_slot(items: Iterable[T], key: Callable[[T], str]) -> list[list[T]]:
    """`items` grouped by the Cluster slot of `key(item)`, in their first-seen order."""
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(key_slot(key(item).encode("utf-8")), []).append(item)
    return list(groups.values())


class ShardedSubscriber:
    """One SSUBSCRIBE of `channel` on the primary that serves its slot, moved with the slot.

    A slot that moves (migration, failover) shows as a `sunsubscribe` pushed by the server, or
    as a different owner in the client's slot map (refreshed by the MOVED answer of any command
    on that slot: the worker's tick writes its alive key there every second). Either way the
    subscription is made again on the new owner; a message published meanwhile is still in the
    worker's inbox, which the tick reads.
    """

    def __init__(self, client: RedisCluster, channel: str) -> None:
        self.client: Any = client  # redis-py's cluster API is only partly typed
        self.channel = channel
        self._node: Any = None
        self._pubsub: Any = None
        self._subscribe(refresh=False)

    def _subscribe(self, refresh: bool) -> None:
        self.close()
        if refresh:
            self.client.nodes_manager.initialize()
        try:
            node = self.client.get_node_from_key(self.channel)
            pubsub = self.client.get_redis_connection(node).pubsub()
            pubsub.ssubscribe(self.channel)
        except (RedisError, OSError):
            # The node may be gone (a failover): ask the cluster again before the next try.
            with contextlib.suppress(RedisError, OSError):
                self.client.nodes_manager.initialize()
            raise
        self._node, self._pubsub = node, pubsub

    def get_message(self, timeout: float) -> dict[str, Any] | None:
        """The next message (type `message`), or None; resubscribes when the slot moved."""
        if self.client.get_node_from_key(self.channel).name != self._node.name:
            log.info("sharded channel %s moved; subscribing on its new node", self.channel)
            self._subscribe(refresh=False)
        message = self._pubsub.get_message(timeout=timeout)
        if message is None:
            return None
        kind = message.get("type")
        if kind == "sunsubscribe":
            # The server dropped us: the slot left this node.
            log.info("sharded channel %s left %s; subscribing again", self.channel, self._node.name)
            self._subscribe(refresh=True)
            return None
        if kind == "smessage":
            return {**message, "type": "message"}
        return None

    def close(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                self._pubsub.close()
            self._pubsub = None
