"""Authentication and ownership (CONTRACT "Authentication and ownership"; issue 11)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import sluice_env
from tests.contract.conftest import assert_rejected, check_well_formed, kinds, no_upstream_call, terminal, wait_until
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn, free_port
from tests.support.sse import Stream, open_stream

pytestmark = pytest.mark.timeout(60)

KEY_A = "sluice-test-key-alpha-" + "A1b2C3d4E5f6G7h8"
KEY_B = "sluice-test-key-bravo-" + "Z9y8X7w6V5u4T3s2"
SECRET = "contract-test-signing-secret-" + "q" * 20
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"X-API-Key": KEY_B}


@pytest.fixture(scope="module")
def srv(upstream: FakeUpstream) -> Iterator[Gunicorn]:
    env = sluice_env(
        upstream, SLUICE_API_KEYS=f"{KEY_A},{KEY_B}", SLUICE_SECRET_KEY=SECRET, SLUICE_MAX_STREAMS_PER_CLIENT="2"
    )
    with Gunicorn(env) as server:
        yield server


def key_forms(key: str) -> list[str]:
    return [
        key,
        base64.b64encode(key.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(key.encode()).decode().rstrip("="),
        key.encode().hex(),
    ]


def assert_no_key(blob: str) -> None:
    for key in (KEY_A, KEY_B):
        for form in key_forms(key):
            assert form not in blob, f"a key ({form[:12]}...) was found"


def session(srv: Gunicorn, headers: dict[str, str]) -> requests.Session:
    s = requests.Session()
    resp = s.post(srv.url + "/session", headers=headers, timeout=10)
    assert resp.status_code == 204, resp.text
    return s


# -- who needs a principal -------------------------------------------------------------------------


ROUTES = [
    ("GET", "/stream?prompt=hi"),
    ("POST", "/stream"),
    ("POST", "/streams"),
    ("POST", "/cancel"),
    ("GET", "/streams/unknownStreamId_0123456789"),
    ("GET", "/streams/unknownStreamId_0123456789/events"),
    ("GET", "/metrics"),
    ("GET", "/readyz"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("cred", ["none", "wrong-bearer", "wrong-x-api-key", "basic"])
def test_every_route_but_healthz_needs_a_principal(
    srv: Gunicorn, fresh: FakeUpstream, method: str, path: str, cred: str
) -> None:
    headers = {
        "none": {},
        "wrong-bearer": {"Authorization": "Bearer not-a-key-123456"},
        "wrong-x-api-key": {"X-API-Key": "not-a-key-123456"},
        "basic": {"Authorization": "Basic " + base64.b64encode(f"u:{KEY_A}".encode()).decode()},
    }[cred]
    body = {"stream_id": "unknownStreamId_0123456789"} if path == "/cancel" else {"prompt": "hi"}
    resp = requests.request(
        method, srv.url + path, headers=headers, json=body if method == "POST" else None, timeout=10
    )
    assert_rejected(resp, 401)
    assert "not-a-key-123456" not in resp.text
    no_upstream_call(fresh, settle=0)


def test_healthz_needs_nothing(srv: Gunicorn) -> None:
    resp = requests.get(srv.url + "/healthz", timeout=5)
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [A, B, {"Authorization": f"Bearer {KEY_B}"}, {"X-API-Key": KEY_A}],
    ids=["bearer-a", "x-api-key-b", "bearer-b", "x-api-key-a"],
)
def test_a_key_in_a_header_works(srv: Gunicorn, fresh: FakeUpstream, headers: dict[str, str]) -> None:
    stream = open_stream(srv.url + "/stream", method="POST", json={"prompt": "x [fake tokens=2]"}, headers=headers)
    assert stream.response.status_code == 200
    assert terminal(check_well_formed(stream.rest()))["type"] == "done"
    assert "Set-Cookie" not in stream.response.headers or all(
        f not in stream.response.headers["Set-Cookie"] for f in key_forms(KEY_A) + key_forms(KEY_B)
    )


@pytest.mark.parametrize("param", ["api_key", "token"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/stream"), ("POST", "/stream"), ("POST", "/streams"), ("POST", "/session"), ("GET", "/metrics")],
)
def test_a_key_in_a_url_is_never_accepted(
    srv: Gunicorn, fresh: FakeUpstream, param: str, method: str, path: str
) -> None:
    params = {param: KEY_A}
    if path == "/stream" and method == "GET":
        params["prompt"] = "x [fake tokens=2]"
    resp = requests.request(
        method, srv.url + path, params=params, json={"prompt": "x"} if method == "POST" else None, timeout=10
    )
    assert_rejected(resp, 401)
    assert "Set-Cookie" not in resp.headers
    assert_no_key(resp.text)
    no_upstream_call(fresh, settle=0)


# -- browser sessions ------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [A, B], ids=["bearer", "x-api-key"])
def test_post_session_sets_a_safe_cookie_that_does_not_hold_the_key(
    srv: Gunicorn, fresh: FakeUpstream, headers: dict[str, str]
) -> None:
    resp = requests.post(srv.url + "/session", headers=headers, timeout=10)
    assert resp.status_code == 204, resp.text
    cookie = resp.headers["Set-Cookie"]
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attrs, cookie
    assert "samesite=strict" in attrs, cookie
    assert "secure" not in attrs, "plain HTTP: Secure would make the browser drop it"
    assert_no_key(cookie)
    assert resp.content == b""


def test_a_session_works_for_every_route_and_ends_with_delete(srv: Gunicorn, fresh: FakeUpstream) -> None:
    s = session(srv, A)
    made = s.post(srv.url + "/streams", json={"prompt": "x [fake tokens=3]"}, timeout=10)
    assert made.status_code == 201, made.text
    sid = made.json()["stream_id"]
    wait_until(lambda: s.get(f"{srv.url}/streams/{sid}", timeout=10).json()["state"] == "done", timeout=15)
    events = s.get(f"{srv.url}/streams/{sid}/events", timeout=10)
    assert events.status_code == 200 and "data: [DONE]" in events.text
    assert s.post(srv.url + "/cancel", json={"stream_id": sid}, timeout=10).json()["status"] == "finished"
    assert s.get(srv.url + "/metrics", timeout=10).status_code == 200
    old = dict(s.cookies)
    ended = s.delete(srv.url + "/session", timeout=10)
    assert ended.status_code in (200, 204), ended.text
    # The browser drops the cookie; replaying the old one must not work either.
    replay = requests.get(f"{srv.url}/streams/{sid}", cookies=old, timeout=10)
    assert_rejected(replay, 401)


def test_a_session_started_with_a_key_in_the_url_is_refused(srv: Gunicorn) -> None:
    resp = requests.post(srv.url + "/session", params={"api_key": KEY_A}, timeout=10)
    assert_rejected(resp, 401)
    assert "Set-Cookie" not in resp.headers


@pytest.mark.parametrize("creds", [{}, {"Authorization": "Bearer wrong-key-0000000"}], ids=["none", "wrong"])
def test_post_session_without_a_valid_key_is_401(srv: Gunicorn, creds: dict[str, str]) -> None:
    resp = requests.post(srv.url + "/session", headers=creds, timeout=10)
    assert_rejected(resp, 401)
    assert "Set-Cookie" not in resp.headers


def _tamper(value: str) -> list[str]:
    """Changed cookies. Not the last character: in base64 its low bits may be padding, so a
    changed last character can decode to the very same bytes (not a tampered cookie at all)."""
    near_end = len(value) - 2
    mid = len(value) // 2

    def swap(i: int) -> str:
        return value[:i] + ("z" if value[i] != "z" else "a") + value[i + 1 :]

    return [swap(near_end), swap(mid), swap(0), value + "x", value[:mid]]


def test_forged_and_tampered_cookies_are_401(srv: Gunicorn, fresh: FakeUpstream) -> None:
    s = session(srv, A)
    ((name, value),) = dict(s.cookies).items()
    for bad in [*_tamper(value), "forged-session-value", KEY_A, base64.b64encode(KEY_A.encode()).decode(), ""]:
        resp = requests.post(srv.url + "/streams", json={"prompt": "x"}, cookies={name: bad}, timeout=10)
        assert_rejected(resp, 401)
    no_upstream_call(fresh, settle=0)


def test_an_expired_session_is_401(start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream) -> None:
    server = start_sluice(SLUICE_API_KEYS=KEY_A, SLUICE_SECRET_KEY=SECRET, SLUICE_SESSION_SECONDS="1")
    s = session(server, A)
    time.sleep(2.5)  # the lifetime itself is what is tested: nothing to wait on
    assert_rejected(s.get(server.url + "/streams/unknownStreamId_0123456789", timeout=10), 401)


# -- ownership -------------------------------------------------------------------------------------


def _same_answer(owner_view: requests.Response, unknown: requests.Response) -> None:
    assert owner_view.status_code == unknown.status_code, (owner_view.status_code, unknown.status_code)
    if unknown.content:
        a, b = owner_view.json(), unknown.json()
        a.get("error", {}).pop("message", None)
        b.get("error", {}).pop("message", None)
        assert a.keys() == b.keys()


def test_another_principal_sees_a_generation_as_unknown(srv: Gunicorn, fresh: FakeUpstream) -> None:
    made = requests.post(
        srv.url + "/streams", json={"prompt": "x [fake tokens=30 stall_after=2]"}, headers=A, timeout=10
    )
    assert made.status_code == 201
    sid = made.json()["stream_id"]
    mine = open_stream(f"{srv.url}/streams/{sid}/events", headers=A)
    try:
        _strangers_probe(srv, sid, mine)
    finally:
        requests.post(srv.url + "/cancel", json={"stream_id": sid}, headers=A, timeout=10)
        mine.close()


def _strangers_probe(srv: Gunicorn, sid: str, mine: Stream) -> None:
    unknown = "unknownStreamId_0123456789"
    mine.until("text")
    bs = session(srv, B)
    for who in ({"headers": B}, {"cookies": dict(bs.cookies)}):
        st = requests.get(f"{srv.url}/streams/{sid}", timeout=10, **who)  # type: ignore[arg-type]
        assert st.status_code == 404
        _same_answer(st, requests.get(f"{srv.url}/streams/{unknown}", timeout=10, **who))  # type: ignore[arg-type]
        ev = requests.get(f"{srv.url}/streams/{sid}/events", timeout=10, **who)  # type: ignore[arg-type]
        assert ev.status_code == 404 and "data:" not in ev.text
        h = {"Last-Event-ID": f"{sid}:1", **who.get("headers", {})}
        ev2 = requests.get(f"{srv.url}/streams/{sid}/events", headers=h, cookies=who.get("cookies"), timeout=10)
        h2 = {"Last-Event-ID": f"{unknown}:1", **who.get("headers", {})}
        _same_answer(
            ev2, requests.get(f"{srv.url}/streams/{unknown}/events", headers=h2, cookies=who.get("cookies"), timeout=10)
        )
        assert "data:" not in ev2.text
        c = requests.post(srv.url + "/cancel", json={"stream_id": sid}, timeout=10, **who)  # type: ignore[arg-type]
        assert c.status_code == 202 and c.json()["status"] == "pending", c.text
        assert sid not in c.text or c.json().get("stream_id") == sid
    # The owner's generation is untouched, and the owner can still see and cancel it.
    st = requests.get(f"{srv.url}/streams/{sid}", headers=A, timeout=10)
    assert st.status_code == 200 and st.json()["state"] == "running"
    assert (
        requests.post(srv.url + "/cancel", json={"stream_id": sid}, headers=A, timeout=10).json()["status"]
        == "cancelled"
    )
    end = terminal(check_well_formed(mine.rest(), sid))
    assert end["type"] == "cancelled" and end["reason"] == "user"


def test_a_strangers_early_cancel_does_not_cancel_the_owners_generation(srv: Gunicorn, fresh: FakeUpstream) -> None:
    sid = "owned-by-a-0123456789abc"
    c = requests.post(srv.url + "/cancel", json={"stream_id": sid}, headers=B, timeout=10)
    assert c.status_code == 202
    events = check_well_formed(
        open_stream(
            srv.url + "/stream", method="POST", headers=A, json={"prompt": "x [fake tokens=3]", "stream_id": sid}
        ).rest(),
        sid,
    )
    assert terminal(events)["type"] == "done", kinds(events)


def test_limits_count_per_principal(srv: Gunicorn, fresh: FakeUpstream) -> None:
    held = []
    try:
        for _ in range(2):
            stream = open_stream(
                srv.url + "/stream", method="POST", headers=A, json={"prompt": "x [fake stall_after=1]"}
            )
            stream.until("text")
            held.append(stream)
        third = requests.post(srv.url + "/stream", headers=A, json={"prompt": "x [fake tokens=1]"}, timeout=10)
        assert_rejected(third, 429)
        assert int(third.headers["Retry-After"]) >= 1
        other = open_stream(srv.url + "/stream", method="POST", headers=B, json={"prompt": "x [fake tokens=1]"})
        assert terminal(check_well_formed(other.rest()))["type"] == "done"
    finally:
        for stream in held:
            requests.post(srv.url + "/cancel", json={"stream_id": stream.stream_id}, headers=A, timeout=10)
            stream.close()
    assert fresh.wait_closed(5)


def test_no_key_in_any_response_page_metric_or_log(srv: Gunicorn, fresh: FakeUpstream) -> None:
    blobs = []
    for headers in (A, B):
        s = session(srv, headers)
        for path in ("/", "/examples/eventsource", "/metrics", "/readyz", "/healthz"):
            resp = s.get(srv.url + path, timeout=10)
            blobs.append(str(resp.headers) + resp.text)
        stream = open_stream(srv.url + "/stream", params={"prompt": "x [fake tokens=2]"}, headers=headers)
        blobs.append(str(stream.response.headers) + "".join(e.data for e in stream.rest()))
        blobs.append(str(s.delete(srv.url + "/session", timeout=10).headers))
    blobs.append(srv.log())
    for blob in blobs:
        assert_no_key(blob)


# -- identity from an authenticating proxy ---------------------------------------------------------

SITE = """\
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://127.0.0.1:{app};
        proxy_http_version 1.1;
        proxy_buffering off;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        # Stands for auth_request: the proxy, not the client, decides who the user is.
        proxy_set_header X-Sluice-User $http_x_test_login;
    }}
}}
"""


def test_trusted_user_header_only_through_the_proxy(
    start_sluice: Callable[..., Gunicorn], fresh: FakeUpstream, tmp_path: Path
) -> None:
    from tests.deploy.conftest import Nginx

    app = start_sluice(SLUICE_API_KEYS=KEY_A, SLUICE_TRUSTED_USER_HEADER="X-Sluice-User", SLUICE_PROXY_COUNT="1")
    port = free_port()
    nginx = Nginx(tmp_path, SITE.format(port=port, app=app.port)).start((port,))
    try:
        proxy = f"http://127.0.0.1:{port}"
        # Straight to Sluice, the header is not believed.
        direct = requests.post(
            app.url + "/streams", json={"prompt": "x"}, headers={"X-Sluice-User": "alice"}, timeout=10
        )
        assert_rejected(direct, 401)
        no_upstream_call(fresh, settle=0)
        # Through the proxy, it is the principal: no key needed, and ownership per user.
        made = requests.post(
            proxy + "/streams", json={"prompt": "x [fake tokens=2]"}, headers={"X-Test-Login": "alice"}, timeout=10
        )
        assert made.status_code == 201, made.text
        sid = made.json()["stream_id"]
        alice = requests.get(f"{proxy}/streams/{sid}", headers={"X-Test-Login": "alice"}, timeout=10)
        assert alice.status_code == 200
        bob = requests.get(f"{proxy}/streams/{sid}", headers={"X-Test-Login": "bob"}, timeout=10)
        assert bob.status_code == 404
        anonymous = requests.get(f"{proxy}/streams/{sid}", timeout=10)
        assert anonymous.status_code in (401, 404)
    finally:
        nginx.stop()
