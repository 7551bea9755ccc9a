"""At start-up: warn when the server is open to anyone who can reach it.

The app does not choose where it listens (gunicorn's `bind`, SLUICE_BIND), but it runs inside
the process that holds the listening sockets: gunicorn binds in its master and forks the
workers, which create the app. So the sockets this process listens on tell where requests
can come from, whatever command line or config file set them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import stat

from app.config import Settings

log = logging.getLogger("sluice.security")


def listening_addresses() -> list[str]:
    """The IP addresses of the TCP sockets this process listens on (Linux; [] elsewhere)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    found: list[str] = []
    for name in names:
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            # A duplicate, closed at once: the listener itself is never touched.
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    continue
                found.append(str(sock.getsockname()[0]))
        except OSError:
            continue
    return found


def beyond_loopback(addresses: list[str]) -> list[str]:
    """The addresses that are not loopback (0.0.0.0 and :: listen on every interface)."""
    out = []
    for address in addresses:
        try:
            if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
                out.append(address)
        except ValueError:
            out.append(address)
    return out


def warn_if_exposed(settings: Settings) -> None:
    """Log a warning when authentication is off and the server listens beyond loopback; and
    when a trusted user header is believed on a socket that clients may reach directly (or is
    never believed at all)."""
    if settings.trusted_user_header and settings.proxy_count < 1:
        log.warning("SLUICE_TRUSTED_USER_HEADER is set but SLUICE_PROXY_COUNT is 0: with no proxy "
                    "declared in front, %s is never believed.", settings.trusted_user_header)
    exposed = beyond_loopback(listening_addresses())
    if not exposed:
        return
    where = ", ".join(sorted(set(exposed)))
    if not settings.auth_on:
        log.warning(
            "Authentication is off and the server listens on %s, beyond loopback: anyone who can "
            "reach it can start generations on this server's provider accounts, and read or cancel "
            "any of them. Set SLUICE_API_KEYS (and SLUICE_SECRET_KEY), or bind to 127.0.0.1 behind "
            "a proxy that authenticates (docs/security.md).", where,
        )
    elif settings.trusted_user_header:
        log.warning(
            "%s is believed from the proxy in front, and the server listens on %s: make sure only "
            "that proxy can reach it (firewall), and that it overwrites the header on every request "
            "(docs/security.md).", settings.trusted_user_header, where,
        )
