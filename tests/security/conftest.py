"""Sluice with authentication on, under real gunicorn, and helpers to call it as a principal."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

# Fake keys: long enough to be searched for in every output, each its own principal.
KEY_A = "sluice-test-key-A-" + "a1" * 12
KEY_B = "sluice-test-key-B-" + "b2" * 12
SECRET = "sluice-test-secret-" + "s3" * 16
PARTNER = "https://partner.example"


def locked_env(upstream: FakeUpstream, **overrides: str) -> dict[str, str]:
    """Two keys, a shared secret and one allowed origin."""
    return sluice_env(upstream, SLUICE_API_KEYS=f"{KEY_A},{KEY_B}", SLUICE_SECRET_KEY=SECRET,
                      SLUICE_ALLOWED_ORIGINS=PARTNER, **overrides)


@pytest.fixture(scope="module")
def locked(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    """One Sluice with keys A and B for the module."""
    with Gunicorn(locked_env(upstream)) as server:
        yield server


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sign_in(url: str, key: str, **headers: str) -> requests.Session:
    """A browser-like session signed in with `key` (POST /session, key in a header)."""
    session = requests.Session()
    resp = session.post(f"{url}/session", headers={**bearer(key), **headers}, timeout=10)
    assert resp.status_code == 204, resp.text
    return session


def assert_sign_out_spreads(a: str, b: str, key: str, path: str) -> None:
    """A session made on host `a` works on host `b` (GET `path`) until it is ended on `a`."""
    browser = sign_in(a, key)
    value = browser.cookies["sluice_session"]
    assert requests.get(f"{b}{path}", cookies={"sluice_session": value}, timeout=5).status_code == 200
    assert browser.delete(f"{a}/session", timeout=5).status_code == 204
    assert requests.get(f"{b}{path}", cookies={"sluice_session": value}, timeout=5).status_code == 401


def cookie_payload(value: str) -> dict[str, object]:
    """The (signed, not encrypted) JSON inside a session cookie, as anyone holding it can read it."""
    compressed = value.startswith(".")  # itsdangerous zlib-compresses a payload when that is shorter
    body = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return json.loads(zlib.decompress(raw) if compressed else raw)
