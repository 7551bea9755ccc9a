"""Through real nginx: the shipped site hides its version and sends security headers on static
files; the auth_request snippet of docs/security.md, as written, names the user."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.deploy.conftest import SITE, Nginx, fake, fake_env, make_stack, render, tls_cert  # noqa: F401 (fixtures)
from tests.fake_upstream import FakeUpstream
from tests.support.servers import ROOT, Gunicorn, free_port
from tests.support.sse import open_stream, types

from .conftest import KEY_A, SECRET

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]

DOC = ROOT / "docs" / "security.md"
USERS = {"site_session=alice-cookie": "alice", "site_session=bob-cookie": "bob"}


def test_nginx_hides_its_version_and_guards_static_files(make_stack, fake) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    env = fake_env(fake, SLUICE_API_KEYS=KEY_A, SLUICE_SECRET_KEY=SECRET, SLUICE_PROXY_COUNT="1")
    stack = make_stack(workers=1, env=env)
    (stack.static_root / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>')
    static = requests.get(f"{stack.url}/static/logo.svg", verify=False, timeout=5)
    assert static.status_code == 200
    assert static.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in static.headers["Content-Security-Policy"]
    assert "script-src" not in static.headers["Content-Security-Policy"]
    assert static.headers["Strict-Transport-Security"].startswith("max-age=")  # not lost to add_header
    missing = requests.get(f"{stack.url}/static/nope.js", verify=False, timeout=5)
    proxied = requests.get(f"{stack.url}/healthz", verify=False, timeout=5)
    redirect = requests.get(f"{stack.http_url}/", allow_redirects=False, timeout=5)
    for resp in (static, missing, proxied, redirect):
        assert resp.headers["Server"] == "nginx", resp.headers["Server"]
        assert not re.search(r"nginx/\d", resp.text)


def test_through_tls_the_session_cookie_is_secure(make_stack, fake) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    env = fake_env(fake, SLUICE_API_KEYS=KEY_A, SLUICE_SECRET_KEY=SECRET, SLUICE_PROXY_COUNT="1")
    stack = make_stack(workers=1, env=env)
    browser = requests.Session()
    resp = browser.post(f"{stack.url}/session", headers={"Authorization": f"Bearer {KEY_A}", "Origin": stack.url},
                        verify=False, timeout=5)
    assert resp.status_code == 204
    assert "Secure" in resp.headers["Set-Cookie"] and "HttpOnly" in resp.headers["Set-Cookie"]
    created = browser.post(f"{stack.url}/streams", json={"prompt": "x [fake tokens=2]"},
                           headers={"Origin": stack.url}, verify=False, timeout=5)
    assert created.status_code == 201
    stream = open_stream(stack.url + created.json()["events_url"], cookies=browser.cookies, verify=False)
    assert types(stream.rest())[-2:] == ["done", "[DONE]"]


def test_the_shipped_site_clears_a_clients_user_header(make_stack, fake) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # The trusted user header enabled, but the auth_request snippet not added (yet): fail closed.
    env = fake_env(fake, SLUICE_TRUSTED_USER_HEADER="X-Sluice-User", SLUICE_PROXY_COUNT="1")
    stack = make_stack(workers=1, env=env)
    for path in ("/readyz", "/streams", "/cancel", "/stream"):
        method = "POST" if path in ("/streams", "/cancel") else "GET"
        resp = requests.request(method, f"{stack.url}{path}", json={"prompt": "x", "stream_id": "a" * 22},
                                headers={"X-Sluice-User": "admin"}, verify=False, timeout=5)
        assert resp.status_code == 401, (path, resp.status_code, resp.text)
    assert fake.request_count == 0


def test_the_shipped_site_bounds_open_requests_per_address(tmp_path: Path, tls_cert: tuple[Path, Path],  # noqa: F811
                                                            upstream: FakeUpstream) -> None:
    from tests.conftest import sluice_env

    with Gunicorn(sluice_env(upstream, SLUICE_PROXY_COUNT="1", SLUICE_MAX_STREAMS_PER_CLIENT="20")) as app:
        http_port, https_port = free_port(), free_port()
        cert, key = tls_cert
        site = render(SITE.read_text(), upstream=f"127.0.0.1:{app.port}", http_port=http_port,
                      https_port=https_port, cert=cert, key=key, static_root=tmp_path)
        shipped = "limit_conn sluice_conn 64;"
        assert site.count(shipped) == 1
        nginx = Nginx(tmp_path / "nginx", site.replace(shipped, "limit_conn sluice_conn 3;"))
        nginx.start((http_port, https_port))
        url = f"https://127.0.0.1:{https_port}"
        try:
            held = [open_stream(f"{url}/stream", params={"prompt": "x [fake stall_after=1]"}, verify=False)
                    for _ in range(3)]
            for stream in held:
                stream.until("text")
            over = requests.get(f"{url}/stream", params={"prompt": "y"}, verify=False, timeout=5)
            assert over.status_code == 429
            # Every request counts while those streams are open (a cancel too): close one first.
            held.pop().close()
            deadline = time.monotonic() + 10
            while (cancel := requests.post(f"{url}/cancel", json={"stream_id": held[0].stream_id}, verify=False,
                                           timeout=5)).status_code == 429 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert cancel.json()["status"] == "cancelled"
            assert types(held[0].rest())[-1] == "[DONE]"
            held[1].close()
        finally:
            nginx.stop()


def _snippet() -> str:
    """The nginx block of docs/security.md that sets up auth_request."""
    blocks = re.findall(r"```nginx\n(.*?)```", DOC.read_text(), re.S)
    found = [b for b in blocks if "auth_request /_sluice_auth;" in b]
    assert len(found) == 1, "docs/security.md: the auth_request snippet is missing"
    return found[0]


class _Login(BaseHTTPRequestHandler):
    """The site's "who is this?" endpoint: a user for a known cookie, else 401."""

    def do_GET(self) -> None:  # noqa: N802
        user = USERS.get(self.headers.get("Cookie", ""))
        self.send_response(200 if user else 401)
        if user:
            self.send_header("X-User", user)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def login() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Login)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def fronted(tmp_path: Path, tls_cert: tuple[Path, Path], login: int, upstream: FakeUpstream) -> Iterator[str]:  # noqa: F811
    from tests.conftest import sluice_env

    env = sluice_env(upstream, SLUICE_TRUSTED_USER_HEADER="X-Sluice-User", SLUICE_PROXY_COUNT="1")
    with Gunicorn(env) as app:
        http_port, https_port = free_port(), free_port()
        cert, key = tls_cert
        site = render(SITE.read_text(), upstream=f"127.0.0.1:{app.port}", http_port=http_port,
                      https_port=https_port, cert=cert, key=key, static_root=tmp_path)
        snippet = _snippet()
        assert snippet.count("http://127.0.0.1:9000/auth/whoami;  # EDIT") == 1
        snippet = snippet.replace("http://127.0.0.1:9000/auth/whoami;", f"http://127.0.0.1:{login}/auth/whoami;")
        anchor = "    proxy_connect_timeout 5s;\n"
        assert site.count(anchor) == 1
        nginx = Nginx(tmp_path / "nginx", site.replace(anchor, anchor + snippet))
        nginx.start((http_port, https_port))
        try:
            yield f"https://127.0.0.1:{https_port}"
        finally:
            nginx.stop()


def _as(cookie: str, **headers: str) -> dict[str, str]:
    return {"Cookie": cookie, **headers}


def test_the_documented_auth_request_snippet_names_the_user(fronted: str, fresh: FakeUpstream) -> None:
    alice, bob = _as("site_session=alice-cookie"), _as("site_session=bob-cookie")
    # Not signed in on the site: nginx refuses before Sluice sees anything.
    assert requests.get(f"{fronted}/stream", params={"prompt": "x"}, verify=False, timeout=5).status_code == 401
    assert requests.get(f"{fronted}/healthz", verify=False, timeout=5).status_code == 200
    # Alice's generation is Alice's.
    stream = open_stream(f"{fronted}/stream", params={"prompt": "x [fake stall_after=1]"}, headers=alice, verify=False)
    stream.until("text")
    sid = stream.stream_id
    assert requests.get(f"{fronted}/streams/{sid}", headers=bob, verify=False, timeout=5).status_code == 404
    # Bob claiming to be Alice in the header: nginx replaces it with who the site says he is.
    forged = _as("site_session=bob-cookie", **{"X-Sluice-User": "alice"})
    assert requests.get(f"{fronted}/streams/{sid}", headers=forged, verify=False, timeout=5).status_code == 404
    cancel = requests.post(f"{fronted}/cancel", json={"stream_id": sid}, headers=forged, verify=False, timeout=5)
    assert cancel.json()["status"] == "pending"
    # And Alice claiming to be Bob still gets her own answer.
    posing = _as("site_session=alice-cookie", **{"X-Sluice-User": "bob"})
    mine = requests.get(f"{fronted}/streams/{sid}", headers=posing, verify=False, timeout=5)
    assert mine.json()["state"] == "running"
    stop = requests.post(f"{fronted}/cancel", json={"stream_id": sid}, headers=alice, verify=False, timeout=5)
    assert stop.json()["status"] == "cancelled"
    assert types(stream.rest())[-2:] == ["cancelled", "[DONE]"]
