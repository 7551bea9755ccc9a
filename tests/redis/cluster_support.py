"""A private Redis Cluster for the tests: three primaries and a replica each, made by
`redis-server --cluster-enabled yes` and `redis-cli --cluster create`, on free ports (the
cluster bus listens on port + 10000, so every port stays at or below 55535)."""

from __future__ import annotations

import random
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from tests.redis.conftest import RedisProcess

PRIMARIES = 3
BUS_OFFSET = 10000


def _cluster_port() -> int:
    """A port that is free, and whose bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 55535 - 1)
        try:
            for p in (port, port + BUS_OFFSET):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterProcess:
    """Six nodes (three primaries, three replicas); `url` is Sluice's `redis+cluster://`."""

    def __init__(self, binary: str, cli: str) -> None:
        self.binary, self.cli = binary, cli
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-cluster-"))
        self.nodes: list[RedisProcess] = []

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        return f"redis+cluster://{seeds}"

    def start(self) -> RedisClusterProcess:
        for i in range(PRIMARIES * 2):
            node = RedisProcess(
                self.binary, "--cluster-enabled", "yes", "--cluster-config-file", str(self.dir / f"nodes-{i}.conf"),
                "--cluster-node-timeout", "2000", "--dir", str(self.dir), "--maxmemory-policy", "noeviction",
            )
            node.port = _cluster_port()
            self.nodes.append(node.start())
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run([self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says the cluster is ok and every slot's primary has its replica."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ok = all("cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO") for n in self.nodes)
                if ok and all(self._replica_synced(n) for n in self.nodes):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become ok")

    @staticmethod
    def _replica_synced(node: RedisProcess) -> bool:
        info = node.client().info("replication")
        return info["role"] == "master" or info.get("master_link_status") == "up"

    def primary_of(self, key: str) -> RedisProcess:
        """The node that serves `key`'s slot now."""
        slot = key_slot(key.encode())
        for start, end, primary, *_ in self.nodes[0].client().execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise RuntimeError(f"no primary for slot {slot}")

    def shard_channels(self, node: RedisProcess | None = None) -> list[str]:
        """The sharded pub/sub channels subscribed on `node` (or on any node)."""
        nodes = [node] if node is not None else self.nodes
        return [ch for n in nodes for ch in n.client().execute_command("PUBSUB", "SHARDCHANNELS")]

    def plain_channels(self) -> list[str]:
        """The (unsharded) pub/sub channels subscribed on any node."""
        return [ch for n in self.nodes for ch in n.client().execute_command("PUBSUB", "CHANNELS")]

    def fail_over(self, key: str, timeout: float = 20.0) -> tuple[RedisProcess, RedisProcess]:
        """`CLUSTER FAILOVER` on the replica of `key`'s primary; (old primary, new primary)."""
        old = self.primary_of(key)
        old_id = old.client().execute_command("CLUSTER", "MYID")
        replica = next(n for n in self.nodes
                       if n.client().info("replication").get("master_port") == old.port)
        assert replica.client().execute_command("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        force_at = time.monotonic() + timeout / 2
        while time.monotonic() < deadline:
            if time.monotonic() > force_at:
                # A manual failover the old primary did not agree to in time (a loaded machine).
                replica.client().execute_command("CLUSTER", "FAILOVER", "FORCE")
                force_at = deadline
            if replica.client().info("replication")["role"] == "master" and \
                    old.client().info("replication").get("master_port") == replica.port:
                self.wait_ok()
                return old, replica
            time.sleep(0.05)
        raise RuntimeError(f"no failover from {old.port} ({old_id}) to {replica.port}")

    def migrate_slot(self, key: str) -> tuple[RedisProcess, RedisProcess]:
        """Move `key`'s slot, with its keys, to another primary, as `redis-cli --cluster reshard`
        does (IMPORTING / MIGRATING, MIGRATE in batches, SETSLOT NODE); (source, target)."""
        slot = key_slot(key.encode())
        source = self.primary_of(key)
        target = next(n for n in self.nodes if n is not source and n.client().info("replication")["role"] == "master")
        src, dst = source.client(), target.client()
        src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            time.sleep(0.2)  # one key at a time, slowly: the writer meets the slot half-moved
        for node in self.nodes:
            if node.client().info("replication")["role"] == "master":
                node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        return source, target

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
