"""A whole session with fake keys: every response body and header, every page, /metrics and every
log line (app and access log) is searched for any key or secret. None is found."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from tests.conftest import UPSTREAM_KEY
from tests.deploy.conftest import GUNICORN_CONF
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

from .conftest import KEY_A, KEY_B, PARTNER, SECRET, bearer, locked_env

pytestmark = pytest.mark.timeout(120)

SECRETS = [KEY_A, KEY_B, SECRET, UPSTREAM_KEY]


def _forms(secret: str) -> list[str]:
    """The secret as it could appear: verbatim, URL-encoded, base64 (also URL-safe, unpadded)."""
    raw = secret.encode()
    b64, urlsafe = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    return [secret, quote(secret, safe=""), b64.rstrip("="), urlsafe.rstrip("=")]


class Recorder:
    """Makes requests and keeps every response as text (status line, headers, body)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.browser = requests.Session()
        self.seen: list[str] = []

    def __call__(self, method: str, path: str, *, browser: bool = False, **kwargs: object) -> requests.Response:
        client = self.browser if browser else requests
        resp = client.request(method, self.url + path, timeout=15, **kwargs)  # type: ignore[arg-type]
        head = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
        self.seen.append(f"{resp.status_code}\n{head}\n\n{resp.text}")  # the response only, not our URL
        return resp


@pytest.fixture
def server(upstream: FakeUpstream, tmp_path: object) -> Iterator[Gunicorn]:
    env = locked_env(upstream, SLUICE_ACCESS_LOG="-", SLUICE_LOG_LEVEL="debug",
                     PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    with Gunicorn(env, workers=2, config=GUNICORN_CONF) as running:
        yield running


def test_no_key_or_secret_anywhere(server: Gunicorn, fresh: FakeUpstream) -> None:
    call = Recorder(server.url)
    html = {"Accept": "text/html"}
    # A browser arrives, signs in with A, uses the page, signs out.
    assert call("GET", "/", headers=html).status_code == 401
    for asset in ("js/sluice.js", "js/signin.js", "js/chat.js", "css/sluice.css"):
        call("GET", f"/static/{asset}")
    assert call("POST", "/session", browser=True, headers=bearer(KEY_A)).status_code == 204
    assert call("GET", "/", browser=True, headers=html).status_code == 200
    assert call("GET", "/examples/eventsource", browser=True, headers=html).status_code == 200
    created = call("POST", "/streams", browser=True, json={"prompt": "hello [fake tokens=5]"}).json()
    call("GET", created["events_url"], browser=True)
    call("GET", created["status_url"], browser=True)
    call("POST", "/cancel", browser=True, json={"stream_id": created["stream_id"]})
    call("GET", "/stream", browser=True, params={"prompt": "x [fake tokens=3]"}, headers={"Origin": PARTNER})
    # Scripts with keys in headers, including a provider error and a stranger.
    call("GET", "/stream", params={"prompt": "x [fake tokens=2]"}, headers=bearer(KEY_B))
    call("POST", "/stream", json={"prompt": "x [fake status=401]"}, headers={"X-API-Key": KEY_B})
    call("POST", "/stream", json={"prompt": "x [fake status=500]"}, headers={"X-API-Key": KEY_B})
    call("GET", created["status_url"], headers=bearer(KEY_B))
    call("OPTIONS", "/stream", headers={"Origin": PARTNER, "Access-Control-Request-Method": "GET"})
    # Mistakes: keys in URLs, wrong and mangled keys, bad cookies.
    for path in ("/stream?prompt=x&api_key=" + KEY_A, "/?token=" + KEY_B, "/cancel?api_key=" + KEY_A,
                 f"/streams/{created['stream_id']}/events?token={KEY_A}", "/healthz?api_key=" + SECRET):
        assert call("POST" if path.startswith("/cancel") else "GET", path).status_code == 401
    call("GET", "/stream", params={"prompt": "x"}, headers=bearer(KEY_A + "x"))
    call("GET", "/stream", params={"prompt": "x"}, headers={"X-API-Key": KEY_B[:-3]})
    call("GET", "/readyz", cookies={"sluice_session": KEY_A})
    # Operations.
    call("GET", "/metrics", headers=bearer(KEY_A))
    call("GET", "/readyz", headers=bearer(KEY_A))
    call("GET", "/healthz")
    assert call("DELETE", "/session", browser=True).status_code == 204

    log = server.log()
    everything = call.seen + log.splitlines()
    for secret in SECRETS:
        for form in _forms(secret):
            hits = [text[:300] for text in everything if form in text]
            assert not hits, f"a secret was found: {hits}"
    # The scan saw what it should have: app log lines, access log lines, the metrics page.
    assert '"logger":"sluice.generation"' in log
    assert '"GET /stream HTTP/1.1" 401' in log and "api_key" not in log
    assert any("sluice_generations_total" in text for text in call.seen)


def test_wrong_keys_are_never_echoed(server: Gunicorn) -> None:
    # A wrong key may be a real key of something else: it must not come back either.
    wrong = "sk-ant-api03-" + "Z" * 40
    for headers in (bearer(wrong), {"X-API-Key": wrong}):
        resp = requests.get(f"{server.url}/stream", params={"prompt": "x"}, headers=headers, timeout=5)
        assert resp.status_code == 401 and wrong not in resp.text and wrong not in str(resp.headers)
    assert wrong not in server.log()
