"""A Sentinel-managed primary: `redis+sentinel://` and `rediss+sentinel://` URLs.

`redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db][?options]`

The hosts are the sentinels (port 26379 when left out); the user and password are the data
servers' (primary and replicas), as in `redis://`. `rediss+sentinel://` speaks TLS to the
sentinels and to the data servers. Query options: `sentinel_username`, `sentinel_password`
(when the sentinels themselves ask for AUTH), `ssl_ca_certs` (a CA bundle for TLS).

The clients are redis-py's `Sentinel.master_for`: each keeps one pool, and only a NEW connection
asks the sentinels where the primary is (the answer is cached in the pool, which drops its idle
connections when the answer changes). A READONLY answer (the primary was demoted) or a lost
connection closes that connection, so the next one asks the sentinels again. Never build a
client per command: that makes a pool (and a sentinel round trip) per call. When no sentinel
answers, new connections go to the primary last named (it may well be up): losing the sentinels
alone does not stop Sluice, it only stops failovers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

log = logging.getLogger("sluice.redis")

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_PORT = 26379
OPTIONS = ("sentinel_username", "sentinel_password", "ssl_ca_certs")
UNANSWERED_PAUSE = 10.0  # seconds between watches while no sentinel answers


@dataclass(frozen=True)
class SentinelUrl:
    """The parts of a `redis+sentinel://` URL."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict, repr=False)


def is_sentinel_url(url: str) -> bool:
    """True for `redis+sentinel://` and `rediss+sentinel://`."""
    return url.split("://", 1)[0].lower() in SCHEMES


def parse(url: str) -> SentinelUrl:
    """Split a Sentinel URL; ValueError (without the password) when it is malformed."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"not a Sentinel URL (scheme {parts.scheme!r})")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = []
    for item in hostlist.split(","):
        item = item.strip()
        host, colon, port = item.rpartition(":") if not item.endswith("]") and ":" in item else (item, "", "")
        host = host.strip("[]")  # an IPv6 address in brackets
        if not host:
            raise ValueError(f"Sentinel URL: a sentinel address is empty in {hostlist!r}")
        try:
            sentinels.append((host, int(port) if colon else DEFAULT_PORT))
        except ValueError:
            raise ValueError(f"Sentinel URL: bad port in {item!r}") from None
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("Sentinel URL: the path must be /service_name or /service_name/db")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError(f"Sentinel URL: the database must be a number, got {path[1]!r}") from None
    options = {}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in OPTIONS:
            raise ValueError(f"Sentinel URL: unknown option {key!r} (known: {', '.join(OPTIONS)})")
        options[key] = values[-1]
    return SentinelUrl(sentinels, path[0], db, username, password, parts.scheme.lower() == "rediss+sentinel", options)


def master_clients(url: str, options: dict[str, Any]) -> tuple[redis.Redis, redis.Redis, Callable[[], bool]]:
    """Two clients of the service's primary (commands, pub/sub), each with its own pool and one
    `Sentinel` between them, and a check to run once a tick: True when the primary changed."""
    spec = parse(url)
    tls: dict[str, Any] = {}
    if spec.tls:
        tls = {"ssl": True}
        if "ssl_ca_certs" in spec.options:
            tls["ssl_ca_certs"] = spec.options["ssl_ca_certs"]
    socket_options = {k: v for k, v in options.items() if k.startswith("socket_")}
    # No retry (redis-py's default backs off for seconds): a sentinel that does not answer at
    # once is skipped for the next one.
    sentinel_kwargs: dict[str, Any] = {**socket_options, **tls, "decode_responses": True,
                                       "retry": Retry(NoBackoff(), 0)}
    if spec.options.get("sentinel_username"):
        sentinel_kwargs["username"] = spec.options["sentinel_username"]
    if spec.options.get("sentinel_password"):
        sentinel_kwargs["password"] = spec.options["sentinel_password"]
    # `ssl` goes to SentinelConnectionPool, which picks the TLS connection class from it.
    manager = RememberingSentinel(spec.sentinels, sentinel_kwargs=sentinel_kwargs)
    data = {**options, **tls, "db": spec.db, "username": spec.username, "password": spec.password}
    clients = [manager.master_for(spec.service, **data) for _ in range(2)]  # type: ignore[no-untyped-call]
    return clients[0], clients[1], PrimaryWatch(manager, spec.service, clients).check


class PrimaryWatch:
    """Asks the sentinels, once a tick, which server is the primary.

    A failover Sentinel is asked for (`SENTINEL FAILOVER`) leaves the old primary taking writes
    for some seconds, until Sentinel demotes it: pooled connections see no READONLY and no error
    then, and what they write there is lost when it resyncs from the new one. So the pools are
    pointed at the new primary as soon as the sentinels name it (idle connections are closed;
    busy ones when they are given back).
    """

    def __init__(self, manager: RememberingSentinel, service: str, clients: list[redis.Redis]) -> None:
        self.manager = manager
        self.service = service
        self.clients = clients
        self.known: tuple[str, int] | None = None
        self._quiet_until = 0.0

    def check(self) -> bool:
        if time.monotonic() < self._quiet_until:
            return False
        try:
            address = self.manager.ask(self.service)
        except (redis.RedisError, OSError):
            # No sentinel answers: the clients keep the primary they know. Unreachable hosts
            # cost a connect timeout each, so the listener's tick does not wait on them every time.
            self._quiet_until = time.monotonic() + UNANSWERED_PAUSE
            return False
        changed = self.known is not None and address != self.known
        self.known = address
        if changed:
            for client in self.clients:
                client.connection_pool.get_master_address()  # type: ignore[attr-defined]
        return changed


class RememberingSentinel(Sentinel):
    """A `Sentinel` that falls back to the primary it last found when no sentinel names one."""

    def __init__(self, sentinels: list[tuple[str, int]], **kwargs: Any) -> None:
        super().__init__(sentinels, **kwargs)  # type: ignore[no-untyped-call]
        self._known: dict[str, tuple[str, int]] = {}
        self._falling_back = False

    def discover_master(self, service_name: str) -> tuple[str, int]:
        try:
            return self.ask(service_name)
        except MasterNotFoundError as exc:
            known = self._known.get(service_name)
            if known is None:
                raise
            if not self._falling_back:
                self._falling_back = True
                # No password here: the sentinels' errors name hosts and ports only.
                log.warning("no sentinel names a primary for %r (%s); using the last one, %s:%s",
                            service_name, exc, *known)
            return known

    def ask(self, service_name: str) -> tuple[str, int]:
        """The sentinels' answer, remembered (MasterNotFoundError when none names a primary)."""
        address: tuple[str, int] = super().discover_master(service_name)  # type: ignore[no-untyped-call]
        if self._falling_back or self._known.get(service_name) != address:
            log.info("sentinel: the primary of %r is %s:%s", service_name, *address)
        self._falling_back = False
        self._known[service_name] = address
        return address
