"""Issue 25, item 4: the `Host` names a server answers (SLUICE_ALLOWED_HOSTS), against DNS rebinding.

A page on evil.example that rebinds its name to 127.0.0.1 makes the browser send `Host:
evil.example` (and `Origin: http://evil.example`) to a Sluice serving on loopback with no
authentication: same-site to the app's Origin check, so it would start and read streams on the
operator's provider key. Without authentication only the loopback names and this server's own
addresses are answered; with keys or a trusted proxy, any name (a rebound page has no key).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn, free_port

from .conftest import KEY_A, bearer

pytestmark = pytest.mark.timeout(60)

PROMPT = "x [fake tokens=2]"


def _as_host(server: Gunicorn, method: str, path: str, host: str, **kwargs: object) -> requests.Response:
    """A request to `server` with `host` in its Host header (and as its Origin, for a POST)."""
    headers = {"Host": host, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    if method == "POST":
        headers.setdefault("Origin", f"http://{host}")
    return requests.request(method, server.url + path, headers=headers, timeout=5, **kwargs)  # type: ignore[arg-type]


def test_a_rebound_page_gets_400_and_starts_nothing(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    port = sluice.port
    for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}", f"127.0.0.1.nip.io:{port}"):
        created = _as_host(sluice, "POST", "/streams", host, json={"prompt": PROMPT})
        assert created.status_code == 400, (host, created.text)
        error = created.json()["error"]
        assert error["type"] == "invalid_request" and "SLUICE_ALLOWED_HOSTS" in error["message"]
        assert _as_host(sluice, "GET", "/stream", host, params={"prompt": PROMPT}).status_code == 400
        assert _as_host(sluice, "POST", "/cancel", host, json={"stream_id": "A" * 22}).status_code == 400
        assert _as_host(sluice, "GET", "/", host).status_code == 400
    assert fresh.request_count == 0, "no upstream call for a refused host"


def test_the_loopback_names_and_the_bound_address_are_answered(sluice: Gunicorn, fresh: FakeUpstream) -> None:
    port = sluice.port
    for name in ("localhost", "127.0.0.1", "[::1]", "LocalHost"):
        for host in (name, f"{name}:{port}"):
            assert _as_host(sluice, "GET", "/healthz", host).status_code == 200, host
            created = _as_host(sluice, "POST", "/streams", host, json={"prompt": PROMPT})
            assert created.status_code == 201, (host, created.text)


def test_with_keys_any_host_is_answered(locked: Gunicorn, fresh: FakeUpstream) -> None:
    created = _as_host(locked, "POST", "/streams", "sluice.example.com", json={"prompt": PROMPT},
                       headers=bearer(KEY_A))
    assert created.status_code == 201, created.text
    # Without a key: the usual 401, not a 400 about the host.
    assert _as_host(locked, "GET", "/streams/" + "A" * 22, "sluice.example.com").status_code == 401


def test_with_a_trusted_user_header_any_host_is_answered(start_sluice: Callable[..., Gunicorn]) -> None:
    server = start_sluice(SLUICE_TRUSTED_USER_HEADER="X-Sluice-User", SLUICE_PROXY_COUNT="1")
    as_user = {"X-Sluice-User": "alice", "X-Forwarded-For": "203.0.113.9"}
    created = _as_host(server, "POST", "/streams", "sluice.example.com", json={"prompt": PROMPT}, headers=as_user)
    assert created.status_code == 201, created.text


def test_allowed_hosts_names_them(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_ALLOWED_HOSTS="sluice.example.com, .corp.example")
    for host in ("sluice.example.com", "SLUICE.example.com:8443", "chat.corp.example", "a.b.corp.example:443"):
        created = _as_host(server, "POST", "/streams", host, json={"prompt": PROMPT})
        assert created.status_code == 201, (host, created.text)
    for host in ("evil.example", "example.com", "corp.example.evil", "sluice.example.com.evil"):
        assert _as_host(server, "POST", "/streams", host, json={"prompt": PROMPT}).status_code == 400, host
    # Loopback and this server's own address are never names a page elsewhere can rebind: a
    # probe or Prometheus on the bound address still gets through.
    assert _as_host(server, "GET", "/healthz", f"127.0.0.1:{server.port}").status_code == 200


def test_a_star_answers_any_host(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_ALLOWED_HOSTS="*")
    assert _as_host(server, "POST", "/streams", "anything.example", json={"prompt": PROMPT}).status_code == 201


def test_serving_on_every_address_without_auth_says_what_to_set(upstream: FakeUpstream) -> None:
    from tests.conftest import sluice_env

    port = free_port()
    # A second listener on every address (the helper's own stays on 127.0.0.1 for its probe).
    with Gunicorn(sluice_env(upstream), args=("-b", f"0.0.0.0:{port}")) as server:
        log = server.log()
        assert "SLUICE_ALLOWED_HOSTS" in log, log
        # Bound to every address: a probe's (or a load balancer's) IP address is one of ours,
        # and an address cannot be rebound; a name still is refused.
        for host in ("10.11.12.13", f"192.0.2.7:{port}", "[fd00::5]:8000"):
            assert _as_host(server, "GET", "/healthz", host).status_code == 200, host
        assert _as_host(server, "GET", "/healthz", f"evil.example:{port}").status_code == 400


def test_the_setting_is_read_and_checked() -> None:
    from app.config import ConfigError, Settings

    assert Settings.from_env({}).allowed_hosts is None
    s = Settings.from_env({"SLUICE_ALLOWED_HOSTS": " Sluice.Example.com., .corp.example,[fd00::1], *"})
    assert s.allowed_hosts == ("sluice.example.com", ".corp.example", "[fd00::1]", "*")
    for bad in ("https://sluice.example.com", "sluice.example.com:8443", "sluice.example.com/chat"):
        with pytest.raises(ConfigError, match="SLUICE_ALLOWED_HOSTS"):
            Settings.from_env({"SLUICE_ALLOWED_HOSTS": bad})
