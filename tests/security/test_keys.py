"""Keys: only in headers, compared in constant time; a key in any URL form is 401."""

from __future__ import annotations

import pytest
import requests

from app.web.security import match_key, principal_for_key
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, types

from .conftest import KEY_A, KEY_B, bearer

pytestmark = pytest.mark.timeout(60)

URL_FORMS = ["api_key", "token", "access_token", "API_KEY", "apikey", "key"]
ROUTES = [
    ("GET", "/stream?prompt=x"),
    ("POST", "/stream"),
    ("GET", "/streams/" + "a" * 22 + "/events"),
    ("GET", "/streams/" + "a" * 22),
    ("POST", "/cancel"),
    ("GET", "/"),
    ("GET", "/metrics"),
    ("POST", "/session"),
]


@pytest.mark.parametrize("param", URL_FORMS)
def test_a_key_in_any_url_form_is_401(locked: Gunicorn, fresh: FakeUpstream, param: str) -> None:
    for method, path in ROUTES:
        sep = "&" if "?" in path else "?"
        # Even a valid key, even with a valid header beside it: the URL is the leak.
        resp = requests.request(method, f"{locked.url}{path}{sep}{param}={KEY_A}", headers=bearer(KEY_A),
                                json={"prompt": "x"} if method == "POST" else None, timeout=5)
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.json()["error"]["type"] == "authentication"
        assert KEY_A not in resp.text and "Set-Cookie" not in resp.headers
    assert fresh.request_count == 0


@pytest.mark.parametrize("how", ["bearer", "x-api-key", "bearer-lowercase"])
def test_a_key_in_a_header_works(locked: Gunicorn, fresh: FakeUpstream, how: str) -> None:
    headers = {"bearer": bearer(KEY_B), "x-api-key": {"X-API-Key": KEY_B},
               "bearer-lowercase": {"authorization": f"bearer {KEY_B}"}}[how]
    events = open_stream(f"{locked.url}/stream", params={"prompt": "x [fake tokens=2]"}, headers=headers).rest()
    assert types(events)[-2:] == ["done", "[DONE]"]


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {KEY_A}x"},
    {"Authorization": f"Bearer {KEY_A[:-1]}"},
    {"X-API-Key": "nope"},
    {"Authorization": f"Basic {KEY_A}"},  # not a key scheme: as if nothing was sent
    {"Cookie": f"sluice_api_key={KEY_A}"},  # the old key cookie is gone
])
def test_missing_or_wrong_keys_are_401_json(locked: Gunicorn, fresh: FakeUpstream, headers: dict[str, str]) -> None:
    resp = requests.get(f"{locked.url}/stream", params={"prompt": "x"}, headers=headers, timeout=5)
    assert resp.status_code == 401
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["error"]["type"] == "authentication"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert KEY_A not in resp.text and KEY_A[:-1] not in resp.text
    assert fresh.request_count == 0


def test_healthz_stays_open_and_static_files_are_public(locked: Gunicorn) -> None:
    assert requests.get(f"{locked.url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{locked.url}/static/js/sluice.js", timeout=5).status_code == 200


def test_match_key_compares_every_key() -> None:
    keys = ("short", KEY_A, KEY_B)
    assert match_key(KEY_B, keys) == KEY_B
    assert match_key(KEY_A, keys) == KEY_A
    assert match_key("shor", keys) is None and match_key("short ", keys) is None
    assert match_key("", keys) is None


def test_a_principal_is_not_the_key_and_is_the_same_on_every_host() -> None:
    assert principal_for_key(KEY_A) == principal_for_key(KEY_A) != principal_for_key(KEY_B)
    assert KEY_A not in principal_for_key(KEY_A)
