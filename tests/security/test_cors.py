"""CORS: the GET streams only, for SLUICE_ALLOWED_ORIGINS only, with credentials as Fetch requires."""

from __future__ import annotations

import pytest
import requests

from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, types

from .conftest import KEY_A, PARTNER, bearer, sign_in

pytestmark = pytest.mark.timeout(60)


def test_an_allowed_origin_reads_the_get_streams_with_credentials(locked: Gunicorn, fresh: FakeUpstream) -> None:
    browser = sign_in(locked.url, KEY_A)
    stream = open_stream(f"{locked.url}/stream", params={"prompt": "x [fake tokens=2]"},
                         headers={"Origin": PARTNER}, cookies=browser.cookies)
    headers = stream.response.headers
    assert types(stream.rest())[-1] == "[DONE]"
    # Fetch: with credentials the origin is echoed exactly, never "*", and caches vary on it.
    assert headers["Access-Control-Allow-Origin"] == PARTNER
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in headers["Vary"]
    events = requests.get(f"{locked.url}/streams/{stream.stream_id}/events", headers={"Origin": PARTNER},
                          cookies=browser.cookies, timeout=5)
    assert events.status_code == 200
    assert events.headers["Access-Control-Allow-Origin"] == PARTNER
    assert events.headers["Access-Control-Allow-Credentials"] == "true"


def test_errors_of_the_get_streams_are_readable_by_an_allowed_origin(locked: Gunicorn) -> None:
    resp = requests.get(f"{locked.url}/stream", params={"prompt": "x"}, headers={"Origin": PARTNER}, timeout=5)
    assert resp.status_code == 401 and resp.headers["Access-Control-Allow-Origin"] == PARTNER


@pytest.mark.parametrize("origin", ["https://evil.example", "https://partner.example.evil.example",
                                    "http://partner.example", "null"])
def test_other_origins_get_no_cors(locked: Gunicorn, fresh: FakeUpstream, origin: str) -> None:
    resp = requests.get(f"{locked.url}/stream", params={"prompt": "x [fake tokens=1]"},
                        headers={**bearer(KEY_A), "Origin": origin}, timeout=5)
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert "Origin" in resp.headers["Vary"]


def test_preflight_allows_get_only(locked: Gunicorn) -> None:
    ok = requests.options(f"{locked.url}/streams/{'a' * 22}/events",
                          headers={"Origin": PARTNER, "Access-Control-Request-Method": "GET",
                                   "Access-Control-Request-Headers": "last-event-id"}, timeout=5)
    assert ok.status_code < 300
    assert ok.headers["Access-Control-Allow-Origin"] == PARTNER
    assert ok.headers["Access-Control-Allow-Methods"] == "GET"
    assert "Last-Event-ID" in ok.headers["Access-Control-Allow-Headers"]
    post = requests.options(f"{locked.url}/stream", headers={"Origin": PARTNER,
                                                             "Access-Control-Request-Method": "POST"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in post.headers


@pytest.mark.parametrize(("method", "path"), [("POST", "/streams"), ("POST", "/cancel"),
                                              ("GET", "/streams/" + "a" * 22), ("GET", "/metrics"),
                                              ("POST", "/session"), ("GET", "/")])
def test_no_cors_on_other_routes(locked: Gunicorn, fresh: FakeUpstream, method: str, path: str) -> None:
    resp = requests.request(method, locked.url + path, headers={**bearer(KEY_A), "Origin": PARTNER},
                            json={"stream_id": "a" * 22} if path == "/cancel" else None, timeout=5)
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_cross_site_posts_and_deletes_stay_403(locked: Gunicorn, fresh: FakeUpstream) -> None:
    browser = sign_in(locked.url, KEY_A)
    evil = {"Origin": "https://evil.example"}
    for method, path, body in [("POST", "/streams", {"prompt": "x"}), ("POST", "/cancel", {"stream_id": "a" * 22}),
                               ("POST", "/stream", {"prompt": "x"}), ("DELETE", "/session", None),
                               ("POST", "/session", None)]:
        resp = browser.request(method, locked.url + path, json=body, headers=evil, timeout=5)
        assert resp.status_code == 403, (method, path)
        assert resp.json()["error"]["type"] == "permission"
    # The session was not ended by the cross-site DELETE.
    assert browser.get(f"{locked.url}/readyz", timeout=5).status_code == 200
    # An allowed origin may POST (it is not cross-site for Sluice), but gets no CORS to read it.
    resp = browser.post(f"{locked.url}/streams", json={"prompt": "x [fake tokens=1]"}, headers={"Origin": PARTNER},
                        timeout=5)
    assert resp.status_code == 201 and "Access-Control-Allow-Origin" not in resp.headers
    assert fresh.wait_requests(1, 5)
