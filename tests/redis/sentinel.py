"""A Sentinel topology for tests: a primary, its replica and three `redis-sentinel`s (Debian's),
all private, on free ports, under one temporary directory (Sentinel rewrites its config file)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from tests.support.servers import free_port
from tests.support.system import require_binary

from .conftest import RedisProcess, wait_for

SERVICE = "sluice-primary"


class SentinelProcess:
    """One `redis-sentinel` watching SERVICE (quorum 2 of 3, a failed primary noticed in 1 s)."""

    def __init__(self, binary: str, workdir: Path, primary_port: int) -> None:
        self.binary = binary
        self.port = free_port()
        self.config = workdir / f"sentinel-{self.port}.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        self.proc = subprocess.Popen([self.binary, str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_for(self._answers, 10):
            raise RuntimeError(f"redis-sentinel did not start on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1, decode_responses=True)

    def master_port(self) -> int | None:
        try:
            addr = self.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        except redis.RedisError:
            return None
        return int(addr[1]) if addr else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class SentinelTopology:
    """A primary, a replica and three sentinels; `url` is Sluice's `redis+sentinel://` URL."""

    def __init__(self, workdir: Path) -> None:
        server = require_binary("redis-server", "/usr/bin/redis-server")
        sentinel = require_binary("redis-sentinel", "/usr/bin/redis-sentinel")
        for name in ("one", "two"):
            (workdir / name).mkdir()
        self.servers = [RedisProcess(server, "--dir", str(workdir / name)) for name in ("one", "two")]
        self.sentinels = [SentinelProcess(sentinel, workdir, self.servers[0].port) for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelTopology:
        primary, replica = self.servers
        primary.start()
        replica.start()
        replica.client().execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        for s in self.sentinels:
            s.start()
        self.wait_settled(primary, replica)
        return self

    def primary(self) -> RedisProcess:
        port = self.sentinels[0].master_port()
        return next(s for s in self.servers if s.port == port)

    def wait_settled(self, primary: RedisProcess, replica: RedisProcess, timeout: float = 30) -> None:
        """Until every sentinel names `primary`, knows the other sentinels and a healthy replica."""

        def settled() -> bool:
            try:
                if replica.client().info("replication").get("master_link_status") != "up":
                    return False
                for s in self.sentinels:
                    if s.master_port() != primary.port:
                        return False
                    c = s.client()
                    if len(c.execute_command("SENTINEL", "SENTINELS", SERVICE)) != 2:
                        return False
                    replicas = c.execute_command("SENTINEL", "REPLICAS", SERVICE)
                    if not any(_flags(r) == {"slave"} and int(_field(r, "port")) == replica.port for r in replicas):
                        return False
            except redis.RedisError:
                return False
            return True

        if not wait_for(settled, timeout, interval=0.1):
            raise RuntimeError("the sentinel topology did not settle")

    def failover(self) -> tuple[RedisProcess, RedisProcess]:
        """`SENTINEL FAILOVER`; returns (new primary, old primary) once every sentinel names the
        new one. The old primary is a replica again soon after (not waited for here)."""
        old = self.primary()
        new = next(s for s in self.servers if s is not old)
        self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", SERVICE)
        assert wait_for(lambda: all(s.master_port() == new.port for s in self.sentinels), 30, interval=0.1)
        return new, old

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        for r in self.servers:
            r.stop()


def _field(reply: object, name: str) -> str:
    """A field of a SENTINEL REPLICAS entry (a flat list, or a dict with RESP3)."""
    if isinstance(reply, dict):
        return str(reply.get(name, ""))
    items = list(reply)  # type: ignore[call-overload]
    return str(dict(zip(items[::2], items[1::2], strict=True)).get(name, ""))


def _flags(reply: object) -> set[str]:
    return set(_field(reply, "flags").split(","))


def wait_writable(server: RedisProcess, timeout: float = 30) -> bool:
    """Until `server` says it is a primary (a promotion takes a moment after Sentinel names it)."""

    def master() -> bool:
        try:
            return server.client().info("replication").get("role") == "master"
        except redis.RedisError:
            return False

    return wait_for(master, timeout)
