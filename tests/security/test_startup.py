"""At start-up: a warning when authentication is off and the server listens beyond loopback."""

from __future__ import annotations

import pytest

from app.web.exposure import beyond_loopback
from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn, free_port

from .conftest import KEY_A

pytestmark = pytest.mark.timeout(60)

WARNING = "Authentication is off and the server listens on"


def _started(upstream: FakeUpstream, *, everywhere: bool, **env: str) -> str:
    args = ("-b", f"0.0.0.0:{free_port()}") if everywhere else ()
    with Gunicorn(sluice_env(upstream, **env), args=args) as server:
        return server.log()


def test_open_and_reachable_from_the_network_warns(upstream: FakeUpstream) -> None:
    log = _started(upstream, everywhere=True)
    assert WARNING in log and "0.0.0.0" in log and "SLUICE_API_KEYS" in log


@pytest.mark.parametrize(("everywhere", "env"), [(False, {}), (True, {"SLUICE_API_KEYS": KEY_A})])
def test_loopback_only_or_with_keys_does_not(upstream: FakeUpstream, everywhere: bool, env: dict[str, str]) -> None:
    log = _started(upstream, everywhere=everywhere, **env)
    assert WARNING not in log
    assert "Traceback" not in log


def test_a_trusted_header_on_an_open_socket_warns_too(upstream: FakeUpstream) -> None:
    log = _started(upstream, everywhere=True, SLUICE_TRUSTED_USER_HEADER="X-Sluice-User", SLUICE_PROXY_COUNT="1")
    assert "X-Sluice-User is believed from the proxy in front" in log


def test_a_user_header_without_a_proxy_warns(upstream: FakeUpstream) -> None:
    log = _started(upstream, everywhere=False, SLUICE_TRUSTED_USER_HEADER="X-Sluice-User")
    assert "X-Sluice-User is never believed" in log


def test_a_missing_secret_warns_when_sessions_are_possible(upstream: FakeUpstream) -> None:
    assert "SLUICE_SECRET_KEY is not set" in _started(upstream, everywhere=False, SLUICE_API_KEYS=KEY_A)
    assert "SLUICE_SECRET_KEY is not set" not in _started(upstream, everywhere=False)


def test_which_addresses_are_beyond_loopback() -> None:
    assert beyond_loopback(["127.0.0.1", "::1", "127.0.0.5"]) == []
    assert beyond_loopback(["0.0.0.0", "::", "10.0.0.5", "127.0.0.1"]) == ["0.0.0.0", "::", "10.0.0.5"]
