"""The deploy files agree with each other and with the contract, and behave as their comments
say: checked with the real gunicorn and nginx, serving a tiny echo app (no Sluice core)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support.servers import ROOT, VENV_BIN, base_env
from tests.support.sse import open_stream

from .conftest import GUNICORN_CONF, SITE

pytestmark = pytest.mark.timeout(90)

UNIT = ROOT / "deploy" / "systemd" / "sluice.service"
ECHO = "tests.deploy.echo_app:app"


def seconds(value: str) -> float:
    """An nginx / systemd time ("60s", "1h", "640") in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", value.strip())
    assert m, value
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def print_config(**env: str) -> dict[str, str]:
    """gunicorn's effective settings with deploy/gunicorn.conf.py and `env`."""
    out = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", str(GUNICORN_CONF), "--print-config", ECHO],
        cwd=ROOT, env=base_env(**env), capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in out.stdout.splitlines()) if v}


def test_gunicorn_settings_from_the_environment() -> None:
    cfg = print_config(SLUICE_WORKERS="3", SLUICE_BIND="127.0.0.1:9123", SLUICE_GRACEFUL_TIMEOUT="45")
    assert cfg["worker_class"] == "<Worker()>"  # app/process/worker.py's, loaded from its file
    assert cfg["workers"] == "3"
    assert cfg["bind"] == "['127.0.0.1:9123']"
    assert cfg["graceful_timeout"] == "45"
    assert cfg["preload_app"] == "False"
    assert print_config(WEB_CONCURRENCY="5")["workers"] == "5"
    defaults = print_config()
    assert defaults["bind"] == "['127.0.0.1:8000']"
    # Matched to the longest stream: SLUICE_MAX_DURATION (600 by default) + a margin.
    assert int(defaults["graceful_timeout"]) > 600
    assert int(print_config(SLUICE_MAX_DURATION="120")["graceful_timeout"]) > 120
    # More connections than streams, so that the app can answer 503 itself.
    assert int(print_config(SLUICE_MAX_STREAMS="50")["worker_connections"]) > 50


def test_keepalives_and_timeouts_agree() -> None:
    site = SITE.read_text()
    cfg = print_config()
    upstream_idle = seconds(re.search(r"keepalive_timeout (\S+);", site).group(1))  # type: ignore[union-attr]
    assert int(cfg["keepalive"]) > upstream_idle, "gunicorn must not close idle upstream connections first"
    read = seconds(re.search(r"proxy_read_timeout (\S+);", site).group(1))  # type: ignore[union-attr]
    assert read >= 10 * 15, "proxy_read_timeout must be well above the 15 s heartbeat"
    assert "client_max_body_size 1m;" in site

    unit = UNIT.read_text()
    stop = seconds(re.search(r"^TimeoutStopSec=(\S+)$", unit, re.M).group(1))  # type: ignore[union-attr]
    assert stop > int(cfg["graceful_timeout"]), "systemd would SIGKILL workers still draining"
    for line in ("KillMode=mixed", "ExecReload=/bin/kill -s HUP $MAINPID", "Restart=on-failure",
                 "EnvironmentFile=/etc/sluice/env", "-c deploy/gunicorn.conf.py"):
        assert line in unit, line
    prom = re.search(r"^Environment=PROMETHEUS_MULTIPROC_DIR=/run/(\S+)$", unit, re.M)
    assert prom and prom.group(1) in re.search(r"^RuntimeDirectory=(.*)$", unit, re.M).group(1).split()  # type: ignore[union-attr]


def test_hooks_prepare_the_workers(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=2, app=ECHO, graceful_timeout=9)
    prom_dir = Path(stack.gunicorn.env["PROMETHEUS_MULTIPROC_DIR"])
    echo = requests.get(stack.url + "/echo", verify=False, timeout=5).json()
    assert echo["env"]["PROMETHEUS_MULTIPROC_DIR"] == str(prom_dir)
    assert prom_dir.is_dir()
    log = stack.gunicorn.log()
    assert "no SLUICE_REDIS_URL" in log  # 2 workers, no shared backend: warned loudly


def test_proxy_headers_reach_the_app(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=1, app=ECHO)
    echo = requests.get(
        stack.url + "/echo", verify=False, timeout=5, headers={"X-Forwarded-For": "6.6.6.6"}
    ).json()
    h = echo["headers"]
    assert h["x-forwarded-for"] == "127.0.0.1", "a client's own X-Forwarded-For must be replaced"
    assert h["x-forwarded-proto"] == "https"
    # The host as the browser named it, port included (the same-site check compares it to Origin).
    assert h["x-forwarded-host"] == stack.url.removeprefix("https://")
    assert h["host"] == stack.url.removeprefix("https://")
    assert echo["scheme"] == "https", "gunicorn trusts X-Forwarded-Proto from nginx"
    assert h.get("connection", "") != "close", "upstream keep-alive needs an empty Connection header"


def test_http_redirects_to_https(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=1, app=ECHO)
    r = requests.get(stack.http_url + "/stream?prompt=hi", allow_redirects=False, timeout=5)
    assert r.status_code == 301
    assert r.headers["Location"].startswith("https://127.0.0.1") and r.headers["Location"].endswith("/stream?prompt=hi")


def test_static_files_from_nginx_with_caching(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=1, app=ECHO)
    r = requests.get(stack.url + "/static/sluice-test.css", verify=False, timeout=5)
    assert r.status_code == 200
    assert r.text == "body { color: teal; }\n"
    assert r.headers["Content-Type"].startswith("text/css")
    assert re.search(r"max-age=\d+", r.headers["Cache-Control"])
    assert requests.get(stack.url + "/static/nope.css", verify=False, timeout=5).status_code == 404


def test_body_over_1_mib_is_refused_by_nginx(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=1, app=ECHO)
    body = b"x" * (1024 * 1024 + 1)
    r = requests.post(stack.url + "/stream", data=body, verify=False, timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "nginx" in r.headers.get("Server", "")
    ok = requests.post(stack.url + "/echo", data=b"x" * 1024 * 1000, verify=False, timeout=10)
    assert ok.status_code == 200  # under the limit: passed on


def test_sse_is_not_buffered(make_stack) -> None:  # type: ignore[no-untyped-def]
    # Lock step: the app writes event i+1 only after the client has acknowledged event i, so
    # every event must reach the browser alone, as written; a proxy that buffers or compresses
    # holds event 0 until the app gives up ("no ack"). No clock is read: a slow machine passes.
    stack = make_stack(workers=1, app=ECHO)
    stream = open_stream(stack.url + "/stream/lockstep?key=k1", verify=False, timeout=30,
                         headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in stream.response.headers
    seen = []
    for event in stream:
        seen.append(event.data)
        if event.data.isdigit():
            r = requests.get(stack.url + f"/ack?key=k1&i={event.data}", verify=False, timeout=10)
            assert r.status_code == 204
    assert seen == ["0", "1", "2", "[DONE]"]


def test_http2_through_nginx(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=1, app=ECHO)
    out = subprocess.run(
        ["curl", "-sk", "-N", "--http2", "-o", "-", "-w", "\\nHTTP/%{http_version}", stack.url + "/stream/tick"],
        capture_output=True, text=True, timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("HTTP/2")
    assert "data: [DONE]" in out.stdout
