"""Browser sessions: POST /session with a key in a header, a signed expiring cookie, DELETE ends it."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pytest
import requests
from itsdangerous import URLSafeTimedSerializer

from app.web.security import principal_for_key
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn
from tests.support.sse import open_stream, types

from .conftest import KEY_A, KEY_B, SECRET, bearer, cookie_payload, locked_env, sign_in

pytestmark = pytest.mark.timeout(60)


def _cookie(resp: requests.Response) -> str:
    return resp.headers["Set-Cookie"]


def test_sign_in_sets_a_strict_httponly_cookie_that_never_holds_the_key(locked: Gunicorn) -> None:
    resp = requests.post(f"{locked.url}/session", headers=bearer(KEY_A), timeout=5)
    assert resp.status_code == 204 and resp.content == b""
    header = _cookie(resp)
    assert header.startswith("sluice_session=")
    attributes = [a.strip().lower() for a in header.split(";")[1:]]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    assert "secure" not in attributes  # plain HTTP here; see the HTTPS test below
    assert "max-age=43200" in attributes
    value = resp.cookies["sluice_session"]
    assert KEY_A not in header and KEY_A not in str(cookie_payload(value))
    payload = cookie_payload(value)
    assert payload["p"] == principal_for_key(KEY_A) and len(str(payload["sid"])) >= 22
    assert resp.headers["Cache-Control"] == "no-store"


def test_the_session_works_for_every_route_of_the_page(locked: Gunicorn, fresh: FakeUpstream) -> None:
    browser = sign_in(locked.url, KEY_A)
    page = browser.get(f"{locked.url}/", headers={"Accept": "text/html"}, timeout=5)
    assert page.status_code == 200 and 'id="prompt"' in page.text and 'id="signout"' in page.text
    created = browser.post(f"{locked.url}/streams", json={"prompt": "x [fake tokens=3]"}, timeout=5).json()
    events = open_stream(locked.url + created["events_url"], cookies=browser.cookies).rest()
    assert types(events)[-2:] == ["done", "[DONE]"]
    assert browser.get(locked.url + created["status_url"], timeout=5).json()["state"] == "done"
    get = open_stream(f"{locked.url}/stream", params={"prompt": "x [fake tokens=1]"}, cookies=browser.cookies)
    assert types(get.rest())[-1] == "[DONE]"
    cancel = browser.post(f"{locked.url}/cancel", json={"stream_id": created["stream_id"]}, timeout=5)
    assert cancel.json()["status"] == "finished"


@pytest.mark.parametrize("credentials", ["none", "wrong key", "session cookie"])
def test_a_session_needs_a_key_in_a_header(locked: Gunicorn, credentials: str) -> None:
    headers: dict[str, str] = {}
    if credentials == "wrong key":
        headers = bearer("not-a-key-0000000000")
    elif credentials == "session cookie":
        # A session cannot renew itself: a stolen cookie would never expire.
        value = sign_in(locked.url, KEY_A).cookies["sluice_session"]
        headers = {"Cookie": f"sluice_session={value}"}
    resp = requests.post(f"{locked.url}/session", headers=headers, timeout=5)
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication"
    assert "Set-Cookie" not in resp.headers


def _forged(principal: str, secret: str = "not-the-server-secret-0000", lifetime: float = 3600) -> str:
    """A cookie made as the server makes them (app.web.session), with any secret and content."""
    serializer = URLSafeTimedSerializer(secret, salt="sluice.session.v1",
                                        signer_kwargs={"digest_method": hashlib.sha256})
    return serializer.dumps({"sid": "x" * 22, "p": principal, "exp": time.time() + lifetime})


def test_forged_and_tampered_cookies_are_401(locked: Gunicorn, fresh: FakeUpstream) -> None:
    good = sign_in(locked.url, KEY_A).cookies["sluice_session"]
    body, stamp, sig = good.rsplit(".", 2)
    bad_values = {
        "forged with another secret": _forged(principal_for_key(KEY_A)),
        "signature flipped": f"{body}.{stamp}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}",
        "principal swapped": f"{_forged(principal_for_key(KEY_B)).split('.')[0]}.{stamp}.{sig}",
        "timestamp moved": f"{body}.{stamp[:-1]}{'A' if stamp[-1] != 'A' else 'B'}.{sig}",
        "unsigned": body,
        "garbage": "definitely-not-a-session",
        # Signed with the right secret: a principal that is no key of this server; an expired one.
        "right secret, unknown principal": _forged("key:" + "0" * 32, SECRET),
        "right secret, expired": _forged(principal_for_key(KEY_A), SECRET, lifetime=-1),
    }
    for name, value in bad_values.items():
        for method, path in [("GET", "/streams/" + "a" * 22), ("GET", "/stream?prompt=x"), ("POST", "/streams")]:
            resp = requests.request(method, locked.url + path, cookies={"sluice_session": value},
                                    json={"prompt": "x"} if method == "POST" else None, timeout=5)
            assert resp.status_code == 401, (name, path)
            assert resp.json()["error"]["type"] == "authentication"
    assert fresh.request_count == 0


def test_a_cookie_made_with_the_servers_secret_is_accepted(locked: Gunicorn) -> None:
    # The counterpart of the forgeries above: what makes them fail is the secret, nothing else.
    made = _forged(principal_for_key(KEY_A), SECRET)
    assert requests.get(f"{locked.url}/readyz", cookies={"sluice_session": made}, timeout=5).status_code == 200


def test_sign_out_ends_the_session_and_a_copy_of_its_cookie(locked: Gunicorn) -> None:
    browser = sign_in(locked.url, KEY_A)
    value = browser.cookies["sluice_session"]
    assert browser.get(f"{locked.url}/readyz", timeout=5).status_code == 200
    resp = browser.delete(f"{locked.url}/session", timeout=5)
    assert resp.status_code == 204
    assert "sluice_session=" in _cookie(resp) and "Max-Age=0" in _cookie(resp)
    assert "sluice_session" not in browser.cookies
    # Someone who copied the cookie before the sign-out gets nothing from it.
    stolen = requests.get(f"{locked.url}/readyz", cookies={"sluice_session": value}, timeout=5)
    assert stolen.status_code == 401
    # Signing out again, or without a session, is harmless.
    assert requests.delete(f"{locked.url}/session", timeout=5).status_code == 204
    # Another session of the same key is not affected.
    other = sign_in(locked.url, KEY_A)
    assert other.get(f"{locked.url}/readyz", timeout=5).status_code == 200


def test_sessions_expire(start_sluice: Callable[..., Gunicorn], upstream: FakeUpstream) -> None:
    server = start_sluice(**{k: v for k, v in locked_env(upstream).items() if k.startswith("SLUICE_")},
                          SLUICE_SESSION_SECONDS="1")
    browser = sign_in(server.url, KEY_A)
    assert "Max-Age=1" in browser.post(f"{server.url}/session", headers=bearer(KEY_A), timeout=5).headers["Set-Cookie"]
    value = browser.cookies["sluice_session"]
    assert requests.get(f"{server.url}/readyz", cookies={"sluice_session": value}, timeout=5).status_code == 200
    # The cookie's own Max-Age makes the browser drop it; a client that keeps it anyway is refused.
    time.sleep(1.3)
    resp = requests.get(f"{server.url}/readyz", cookies={"sluice_session": value}, timeout=5)
    assert resp.status_code == 401 and "expired" in resp.json()["error"]["message"]


def test_secure_cookie_over_https_from_the_trusted_proxy(start_sluice: Callable[..., Gunicorn],
                                                         upstream: FakeUpstream) -> None:
    server = start_sluice(**{k: v for k, v in locked_env(upstream).items() if k.startswith("SLUICE_")},
                          SLUICE_PROXY_COUNT="1")
    through_tls = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    resp = requests.post(f"{server.url}/session", headers={**bearer(KEY_A), **through_tls}, timeout=5)
    assert resp.status_code == 204 and "Secure" in resp.headers["Set-Cookie"]
    plain = requests.post(f"{server.url}/session", headers={**bearer(KEY_A), "X-Forwarded-For": "203.0.113.7",
                                                            "X-Forwarded-Proto": "http"}, timeout=5)
    assert "Secure" not in plain.headers["Set-Cookie"]
    ended = requests.delete(f"{server.url}/session", headers=through_tls, timeout=5)
    assert "Secure" in ended.headers["Set-Cookie"]


def test_sessions_are_refused_when_their_key_is_removed(start_sluice: Callable[..., Gunicorn],
                                                        upstream: FakeUpstream) -> None:
    env = {k: v for k, v in locked_env(upstream).items() if k.startswith("SLUICE_")}
    first = start_sluice(**env)
    value_a = sign_in(first.url, KEY_A).cookies["sluice_session"]
    value_b = sign_in(first.url, KEY_B).cookies["sluice_session"]
    # The same secret, KEY_A rotated out: a restart, or another host with the new list.
    second = start_sluice(**{**env, "SLUICE_API_KEYS": KEY_B})
    assert requests.get(f"{second.url}/readyz", cookies={"sluice_session": value_a}, timeout=5).status_code == 401
    assert requests.get(f"{second.url}/readyz", cookies={"sluice_session": value_b}, timeout=5).status_code == 200


def test_without_keys_there_are_no_sessions(sluice: Gunicorn) -> None:
    assert requests.post(f"{sluice.url}/session", headers=bearer(KEY_A), timeout=5).status_code == 404


def test_a_page_from_a_sibling_site_cannot_use_the_session(locked: Gunicorn, fresh: FakeUpstream) -> None:
    # SameSite=Strict does not tell sibling origins of one site apart; Sec-Fetch-Site does.
    browser = sign_in(locked.url, KEY_A)
    sibling = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"}
    resp = browser.get(f"{locked.url}/stream", params={"prompt": "x"}, headers=sibling, timeout=5)
    assert resp.status_code == 403
    assert fresh.request_count == 0
    # An allowed origin may (CORS with credentials), and a navigation to the page may.
    allowed = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors", "Origin": "https://partner.example"}
    stream = open_stream(f"{locked.url}/stream", params={"prompt": "x [fake tokens=1]"}, headers=allowed,
                         cookies=browser.cookies)
    assert types(stream.rest())[-1] == "[DONE]"
    nav = browser.get(f"{locked.url}/", headers={"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate"},
                      timeout=5)
    assert nav.status_code == 200
