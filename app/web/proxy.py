"""X-Forwarded-* from the proxy in front, and from nobody else.

werkzeug's ProxyFix believes the last SLUICE_PROXY_COUNT hops of X-Forwarded-For (and -Proto,
-Host) on every request. A client that reaches gunicorn directly could then pick its own address
(and so its own per-client limits) with a new header on each request. `TrustedProxyFix` applies
ProxyFix only when the TCP peer is a trusted proxy: an address in FORWARDED_ALLOW_IPS (gunicorn's
own setting, loopback by default), or a unix socket.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def trusted_peer(peer: str, allowed: tuple[str, ...]) -> bool:
    """True when `peer` (a REMOTE_ADDR) is one of `allowed` (addresses or networks; `*`: any)."""
    if not peer or peer.startswith("unix:") or "*" in allowed:
        return True  # a unix socket: only this host's proxy can connect
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if address in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


class TrustedProxyFix:
    """ProxyFix for requests whose TCP peer is a trusted proxy; the others are left as they came."""

    def __init__(self, app: WSGIApp, count: int, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.fixed = ProxyFix(app, x_for=count, x_proto=count, x_host=count)
        self.allowed = allowed

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if trusted_peer(environ.get("REMOTE_ADDR") or "", self.allowed):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)
