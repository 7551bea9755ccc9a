"""Who may call, and how many: API keys, same-site POSTs, CORS, per-client and per-worker limits."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, types

pytestmark = pytest.mark.timeout(60)

KEY_A, KEY_B = "sluice-key-a-" + "1" * 16, "sluice-key-b-" + "2" * 16


@pytest.fixture(scope="module")
def locked(upstream: FakeUpstream) -> Gunicorn:  # type: ignore[misc]
    from tests.conftest import sluice_env

    with Gunicorn(sluice_env(upstream, SLUICE_API_KEYS=f"{KEY_A},{KEY_B}",
                             SLUICE_ALLOWED_ORIGINS="https://partner.example")) as server:
        yield server


def test_every_route_but_healthz_needs_a_key(locked: Gunicorn, fresh: FakeUpstream) -> None:
    assert requests.get(f"{locked.url}/healthz", timeout=5).status_code == 200
    for method, path in [("GET", "/"), ("GET", "/stream?prompt=x"), ("POST", "/cancel"), ("GET", "/metrics"),
                         ("GET", "/readyz"), ("GET", "/streams/" + "a" * 22)]:
        resp = requests.request(method, locked.url + path, timeout=5)
        assert resp.status_code == 401, (method, path)
        assert resp.json()["error"]["type"] == "authentication"
        bad = requests.request(method, locked.url + path, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert bad.status_code == 401
    assert fresh.request_count == 0
    # The key is never echoed back.
    assert "nope" not in bad.text


@pytest.mark.parametrize("how", ["bearer", "header"])
def test_a_valid_key_works_in_a_header(locked: Gunicorn, fresh: FakeUpstream, how: str) -> None:
    headers = {"Authorization": f"Bearer {KEY_A}"} if how == "bearer" else {"X-API-Key": KEY_A}
    events = open_stream(f"{locked.url}/stream", params={"prompt": "x [fake tokens=2]"}, headers=headers).rest()
    assert types(events)[-2:] == ["done", "[DONE]"]


def test_a_valid_key_in_the_url_is_refused(locked: Gunicorn, fresh: FakeUpstream) -> None:
    resp = requests.get(f"{locked.url}/stream", params={"prompt": "x", "api_key": KEY_A}, timeout=5)
    assert resp.status_code == 401 and "Set-Cookie" not in resp.headers
    assert fresh.request_count == 0


def test_cancel_by_another_key_has_no_effect(locked: Gunicorn, fresh: FakeUpstream) -> None:
    a = {"Authorization": f"Bearer {KEY_A}"}
    b = {"Authorization": f"Bearer {KEY_B}"}
    stream = open_stream(f"{locked.url}/stream", params={"prompt": "x [fake stall_after=1]"}, headers=a)
    stream.until("text")
    resp = requests.post(f"{locked.url}/cancel", json={"stream_id": stream.stream_id}, headers=b, timeout=5)
    unknown = requests.post(f"{locked.url}/cancel", json={"stream_id": secrets.token_urlsafe(16)}, headers=b,
                            timeout=5)
    assert (resp.status_code, resp.json()["status"]) == (unknown.status_code, unknown.json()["status"]) == (202,
                                                                                                             "pending")
    status = requests.get(f"{locked.url}/streams/{stream.stream_id}", headers=a, timeout=5).json()
    assert status["state"] == "running"
    resp = requests.post(f"{locked.url}/cancel", json={"stream_id": stream.stream_id}, headers=a, timeout=5)
    assert resp.json()["status"] == "cancelled"
    assert types(stream.rest())[-2:] == ["cancelled", "[DONE]"]


def test_cross_site_posts_are_refused(locked: Gunicorn, fresh: FakeUpstream) -> None:
    a = {"Authorization": f"Bearer {KEY_A}"}
    host = locked.url.removeprefix("http://")
    body = {"prompt": "x [fake tokens=1]"}
    cases = [
        ({"Origin": "https://evil.example"}, 403),
        ({"Referer": "https://evil.example/page"}, 403),
        ({"Origin": "https://partner.example"}, 201),
        ({"Origin": f"http://{host}"}, 201),
        ({"Referer": f"http://{host}/"}, 201),
        ({}, 201),
    ]
    for headers, status in cases:
        resp = requests.post(f"{locked.url}/streams", json=body, headers={**a, **headers}, timeout=5)
        assert resp.status_code == status, (headers, resp.text)
        if status == 403:
            assert resp.json()["error"]["type"] == "permission"
    cancel = requests.post(f"{locked.url}/cancel", json={"stream_id": "a" * 22},
                           headers={**a, "Origin": "https://evil.example"}, timeout=5)
    assert cancel.status_code == 403


def test_cors_for_allowed_origins_only(locked: Gunicorn, fresh: FakeUpstream) -> None:
    pre = requests.options(f"{locked.url}/stream", headers={"Origin": "https://partner.example",
                                                            "Access-Control-Request-Method": "GET"}, timeout=5)
    assert pre.headers["Access-Control-Allow-Origin"] == "https://partner.example"
    assert pre.headers["Access-Control-Allow-Methods"] == "GET"
    other = requests.options(f"{locked.url}/stream", headers={"Origin": "https://evil.example"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in other.headers


def test_too_many_streams_for_one_client_is_429(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_MAX_STREAMS_PER_CLIENT="2")
    held = [open_stream(f"{server.url}/stream", params={"prompt": "x [fake stall_after=0]"}) for _ in range(2)]
    for s in held:
        s.until("start")
    resp = requests.get(f"{server.url}/stream", params={"prompt": "x"}, timeout=5)
    assert resp.status_code == 429 and resp.headers["Retry-After"].isdigit()
    assert resp.json()["error"]["type"] == "rate_limit"
    assert fresh.wait_requests(2, 3) and fresh.request_count == 2
    for s in held:
        requests.post(f"{server.url}/cancel", json={"stream_id": s.stream_id}, timeout=5)
        s.rest()
    assert types(open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=1]"}).rest())[-1] == "[DONE]"


def test_at_capacity_is_503_but_attaching_still_works(start_sluice: Callable[..., Gunicorn],
                                                      fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_MAX_STREAMS="1")
    running = open_stream(f"{server.url}/stream", params={"prompt": "x [fake tokens=20 pace=0.05]"})
    running.until("text")
    resp = requests.post(f"{server.url}/stream", json={"prompt": "y"}, timeout=5)
    assert resp.status_code == 503 and resp.headers["Retry-After"].isdigit()
    assert resp.json()["error"]["type"] == "overloaded"
    other = open_stream(f"{server.url}/streams/{running.stream_id}/events")
    assert types(other.rest())[-2:] == ["done", "[DONE]"]
    assert fresh.request_count == 1


def test_pages_carry_a_strict_csp(sluice: Gunicorn) -> None:
    resp = requests.get(f"{sluice.url}/", timeout=5)
    assert resp.status_code == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_a_page_gets_a_session_cookie_that_is_not_the_key(locked: Gunicorn, fresh: FakeUpstream) -> None:
    session = requests.Session()
    resp = session.post(f"{locked.url}/session", headers={"Authorization": f"Bearer {KEY_A}"}, timeout=5)
    assert resp.status_code == 204
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and KEY_A not in cookie
    # The page's own EventSource and fetch calls carry only the cookie.
    resp = session.post(f"{locked.url}/streams", json={"prompt": "x [fake tokens=1]"}, timeout=5)
    assert resp.status_code == 201
