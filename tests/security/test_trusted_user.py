"""SLUICE_TRUSTED_USER_HEADER: the principal from the proxy in front, never from a client directly.
(Through real nginx with auth_request: test_nginx_auth_request.py.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, types

from .conftest import KEY_A, bearer

pytestmark = pytest.mark.timeout(60)

PROXIED = {"X-Forwarded-For": "198.51.100.20"}  # what nginx adds (SLUICE_PROXY_COUNT=1)


def as_user(name: str) -> dict[str, str]:
    return {**PROXIED, "X-Sluice-User": name}


@pytest.fixture(scope="module")
def fronted(upstream: FakeUpstream) -> Gunicorn:  # type: ignore[misc]
    from tests.conftest import sluice_env

    with Gunicorn(sluice_env(upstream, SLUICE_TRUSTED_USER_HEADER="X-Sluice-User", SLUICE_PROXY_COUNT="1")) as server:
        yield server


def test_the_proxys_user_is_the_principal(fronted: Gunicorn, fresh: FakeUpstream) -> None:
    stream = open_stream(f"{fronted.url}/stream", params={"prompt": "x [fake stall_after=1]"}, headers=as_user("alice"))
    stream.until("text")
    sid = stream.stream_id
    assert requests.get(f"{fronted.url}/streams/{sid}", headers=as_user("bob"), timeout=5).status_code == 404
    bob = requests.post(f"{fronted.url}/cancel", json={"stream_id": sid}, headers=as_user("bob"), timeout=5)
    assert bob.json()["status"] == "pending"
    mine = requests.get(f"{fronted.url}/streams/{sid}", headers=as_user("alice"), timeout=5)
    assert mine.json()["state"] == "running"
    alice = requests.post(f"{fronted.url}/cancel", json={"stream_id": sid}, headers=as_user("alice"), timeout=5)
    assert alice.json()["status"] == "cancelled"
    assert types(stream.rest())[-2:] == ["cancelled", "[DONE]"]


def test_a_client_that_did_not_come_through_the_proxy_is_not_believed(fronted: Gunicorn, fresh: FakeUpstream) -> None:
    # No X-Forwarded-For: the request did not pass the proxy, whatever header it carries.
    resp = requests.get(f"{fronted.url}/stream", params={"prompt": "x"}, headers={"X-Sluice-User": "alice"}, timeout=5)
    assert resp.status_code == 401
    # Nor is an empty or absurd user.
    for user in ["", "a" * 300]:
        resp = requests.get(f"{fronted.url}/readyz", headers={**PROXIED, "X-Sluice-User": user}, timeout=5)
        assert resp.status_code == 401, repr(user)
    # There are no keys here: a key is no way in, and there are no sessions.
    assert requests.get(f"{fronted.url}/readyz", headers=bearer(KEY_A), timeout=5).status_code == 401
    assert requests.post(f"{fronted.url}/session", headers=as_user("alice"), timeout=5).status_code == 404
    assert fresh.request_count == 0


@pytest.mark.parametrize("env", [{"SLUICE_PROXY_COUNT": "0"}, {"SLUICE_PROXY_COUNT": "2"},
                                 {"FORWARDED_ALLOW_IPS": "10.9.8.7"}])
def test_the_header_needs_the_trusted_proxy(start_sluice: Callable[..., Gunicorn], env: dict[str, str]) -> None:
    # No proxy declared; two proxies declared but one hop seen; a peer that is not the proxy's address.
    server = start_sluice(SLUICE_TRUSTED_USER_HEADER="X-Sluice-User", **{"SLUICE_PROXY_COUNT": "1", **env})
    assert requests.get(f"{server.url}/readyz", headers=as_user("alice"), timeout=5).status_code == 401


def test_keys_and_the_proxy_side_by_side(start_sluice: Callable[..., Gunicorn]) -> None:
    server = start_sluice(SLUICE_TRUSTED_USER_HEADER="X-Sluice-User", SLUICE_PROXY_COUNT="1", SLUICE_API_KEYS=KEY_A)
    assert requests.get(f"{server.url}/readyz", headers=as_user("alice"), timeout=5).status_code == 200
    assert requests.get(f"{server.url}/readyz", headers=bearer(KEY_A), timeout=5).status_code == 200
    # A wrong key is refused even through the proxy: credentials that were sent must be right.
    assert requests.get(f"{server.url}/readyz", headers={**as_user("alice"), **bearer("nope-0000000000")},
                        timeout=5).status_code == 401


def test_the_page_without_a_user_says_where_to_sign_in(fronted: Gunicorn) -> None:
    page = requests.get(f"{fronted.url}/", headers={"Accept": "text/html"}, timeout=5)
    assert page.status_code == 401 and "Sign in there" in page.text and 'id="api-key"' not in page.text


def test_a_sibling_sites_page_cannot_use_the_proxys_login(fronted: Gunicorn, fresh: FakeUpstream) -> None:
    # The proxy's login rests on the site's cookie, which the browser sends by itself.
    sibling = {**as_user("alice"), "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    assert requests.get(f"{fronted.url}/stream", params={"prompt": "x"}, headers=sibling, timeout=5).status_code == 403
    assert fresh.request_count == 0
