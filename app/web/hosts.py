"""The `Host` names this server answers (SLUICE_ALLOWED_HOSTS): a defence against DNS rebinding.

A page on evil.example that rebinds its name to 127.0.0.1 is same-origin with a local server as
far as the browser is concerned: its requests carry `Host: evil.example` and `Origin:
http://evil.example`, which the same-site check cannot tell from the server's own page. Only
the Host name tells them apart, so without authentication the server answers only names that
no page elsewhere can own:

    SLUICE_ALLOWED_HOSTS set     those names (`.example.com`: it and its subdomains; `*`: any)
    unset, no authentication     localhost
    unset, keys or a proxy user  any name: a rebound page has no key and no cookie of ours

and in every case the loopback addresses and the addresses this server listens on, written
as IP addresses (what a health probe or Prometheus uses): an address cannot be rebound, and a
page served from it is ours. Listening on every address (0.0.0.0, ::), any IP address is one of
ours. Anything else: 400 JSON, before authentication.
"""

from __future__ import annotations

import ipaddress
import logging

from flask import Flask, request
from werkzeug.sansio.utils import host_is_trusted

from app.config import Settings
from app.errors import RequestError
from app.web.exposure import beyond_loopback, listening_addresses

log = logging.getLogger("sluice.security")

_LOOPBACK_NAMES = ("localhost",)
_ANY = ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AllowedHosts:
    """Decides whether a request's `host[:port]` is one this server answers."""

    def __init__(self, settings: Settings, bound: list[str]) -> None:
        configured = settings.allowed_hosts
        if configured is None:
            configured = ("*",) if settings.auth_on else _LOOPBACK_NAMES
        self.any = "*" in configured
        self.names = tuple(n for n in configured if _address(n) is None)
        self.addresses = {a for a in map(_address, (*configured, *bound)) if a is not None}
        self.every_address = any(a in self.addresses for a in _ANY)

    def allows(self, host: str) -> bool:
        """True for a `Host` header value (port optional) this server answers."""
        if self.any:
            return True
        if not host:
            return False  # werkzeug gives "" for a Host with characters no name has
        # werkzeug has checked the form: a name or IPv4 address, or an [IPv6] one, then a port.
        name = (host[: host.index("]") + 1] if host.startswith("[") else host.partition(":")[0]).lower()
        address = _address(name)
        if address is not None:
            return address.is_loopback or self.every_address or address in self.addresses
        # Trap: host_is_trusted allows every name when given an empty list.
        return bool(self.names) and host_is_trusted(name.rstrip("."), self.names)


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.removeprefix("[").removesuffix("]").split("%")[0])
    except ValueError:
        return None


def refuse() -> RequestError:
    """The 400 for a Host this server does not answer."""
    return RequestError(400, f"This server does not answer for the host {request.host[:100]!r}: its operator "
                             "can add the name to SLUICE_ALLOWED_HOSTS", field="Host")


def init_app(app: Flask) -> None:
    """Check the Host of every request, first; say at start-up what to set where it matters."""
    settings: Settings = app.config["SLUICE_SETTINGS"]
    bound = listening_addresses()
    allowed = AllowedHosts(settings, bound)
    app.extensions["sluice_hosts"] = allowed
    if not allowed.any:
        _tell_the_operator(settings, bound)
    refused_once: list[str] = []

    @app.before_request
    def _check_host() -> None:
        if allowed.allows(request.host):
            return
        if not refused_once:
            refused_once.append(request.host)
            log.warning("Refused a request for the host %r (400): without authentication this server answers "
                        "only the names in SLUICE_ALLOWED_HOSTS (default: localhost and its own addresses). "
                        "Serving that name (behind a proxy, on a LAN)? Add it to SLUICE_ALLOWED_HOSTS.",
                        request.host[:100])
        raise refuse()


def _tell_the_operator(settings: Settings, bound: list[str]) -> None:
    """A warning where the defaults will refuse names clients are likely to use."""
    if settings.allowed_hosts is not None or not (beyond_loopback(bound) or settings.proxy_count > 0):
        return
    log.warning(
        "Authentication is off and SLUICE_ALLOWED_HOSTS is not set: only requests for localhost and this "
        "server's IP addresses are answered, any other Host gets 400 (so that no page elsewhere can reach "
        "it through DNS rebinding). Set SLUICE_ALLOWED_HOSTS to the names clients use "
        "(sluice.example.com, comma-separated), or turn on authentication (docs/security.md)."
    )
