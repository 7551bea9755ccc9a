"""The real deploy stack for tests: nginx from deploy/nginx/sluice.conf in front of gunicorn
from deploy/gunicorn.conf.py, and the fake LLM upstream behind both.

The site file is used as shipped except for the values marked "# EDIT" in it, which `render`
swaps for test ports and paths by exact string replacement (each must be found exactly as
often as expected, so an edit to the shipped file that breaks the test's rendering fails
loudly rather than testing something else).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3

from tests.support.servers import ROOT, Gunicorn, base_env, free_port
from tests.support.system import require_binary

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

SITE = ROOT / "deploy" / "nginx" / "sluice.conf"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
MIME_TYPES = Path("/etc/nginx/mime.types")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def render(
    site: str,
    *,
    upstream: str,
    http_port: int,
    https_port: int,
    cert: Path,
    key: Path,
    static_root: Path,
    read_timeout: str | None = None,
) -> str:
    """The shipped site file with its "# EDIT" values replaced for a test."""
    v6 = _ipv6_loopback()
    http6 = f"[::1]:{http_port}" if v6 else f"127.0.0.2:{http_port}"
    https6 = f"[::1]:{https_port}" if v6 else f"127.0.0.2:{https_port}"
    swaps: list[tuple[str, str, int]] = [
        ("server 127.0.0.1:8000;", f"server {upstream};", 1),
        ("listen 80;", f"listen 127.0.0.1:{http_port};", 1),
        ("listen [::]:80;", f"listen {http6};", 1),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;", 1),
        ("listen [::]:443 ssl http2;", f"listen {https6} ssl http2;", 1),
        ("ssl_certificate /etc/letsencrypt/live/sluice.example.com/fullchain.pem;", f"ssl_certificate {cert};", 1),
        ("ssl_certificate_key /etc/letsencrypt/live/sluice.example.com/privkey.pem;", f"ssl_certificate_key {key};", 1),
        ("alias /srv/sluice/static/;", f"alias {static_root}/;", 1),
    ]
    if read_timeout is not None:
        swaps.append(("proxy_read_timeout 1h;", f"proxy_read_timeout {read_timeout};", 1))
    for old, new, count in swaps:
        found = site.count(old)
        assert found == count, f"deploy/nginx/sluice.conf: expected {old!r} {count}x, found {found}x"
        site = site.replace(old, new)
    return site


MAIN_CONF = """\
worker_processes 1;
{user}
events {{ worker_connections 1024; }}
http {{
    {mime}
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/sluice.conf;
}}
"""


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost."""
    require_binary("openssl", "/usr/bin/openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


class Nginx:
    """A private nginx (own prefix, pid, logs) serving the rendered site file."""

    def __init__(self, prefix: Path, site: str) -> None:
        self.binary = require_binary("nginx", "/usr/sbin/nginx")
        self.prefix = prefix
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        (prefix / "sluice.conf").write_text(site)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(
            MAIN_CONF.format(
                prefix=prefix,
                # As root, nginx's workers would run as nobody and could not read the test's
                # private temporary directories.
                user="user root;" if os.geteuid() == 0 else "",
                mime=f"include {MIME_TYPES};" if MIME_TYPES.exists() else "",
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def _cmd(self, *extra: str) -> list[str]:
        g = f"daemon off; pid {self.prefix}/nginx.pid; error_log {self.prefix}/error.log info;"
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-g", g, *extra]

    def start(self, ports: tuple[int, ...]) -> Nginx:
        test = subprocess.run(self._cmd("-t"), capture_output=True, text=True)
        assert test.returncode == 0, f"nginx -t failed:\n{test.stderr}\n{(self.prefix / 'sluice.conf').read_text()}"
        self.proc = subprocess.Popen(self._cmd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                assert self.proc.poll() is None, f"nginx exited:\n{self.log()}"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"nginx did not listen on {port}:\n{self.log()}"
                    time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""


class AppGunicorn(Gunicorn):
    """`Gunicorn` serving another WSGI app than wsgi:app (the echo app)."""

    def __init__(self, *args: object, app: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.app = app

    def command(self) -> list[str]:
        return [*super().command()[:-1], self.app]

    def start(self, timeout: float = 20.0) -> Gunicorn:
        assert self.app.startswith("tests.deploy.echo_app")
        self.proc = self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gunicorn exited:\n{self.log()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"gunicorn did not listen:\n{self.log()}")


@dataclass
class Stack:
    nginx: Nginx
    gunicorn: Gunicorn
    url: str  # https://127.0.0.1:<port>
    http_url: str  # http://127.0.0.1:<port> (the redirect)
    static_root: Path
    fake: object | None = None


@pytest.fixture
def make_stack(
    tmp_path: Path, tls_cert: tuple[Path, Path], request: pytest.FixtureRequest
) -> Iterator[object]:
    """`make_stack(workers=2, env={...}, read_timeout="3s", app=None, graceful_timeout=None)`.

    Starts gunicorn (deploy/gunicorn.conf.py) and nginx (deploy/nginx/sluice.conf, rendered);
    everything stops at the end of the test, and the logs are printed if the test failed.
    """
    stacks: list[Stack] = []
    request.node._sluice_stacks = stacks  # for the failure report (pytest_runtest_makereport)
    with ExitStack() as cleanup:

        def make(
            *,
            workers: int = 2,
            env: Mapping[str, str] | None = None,
            read_timeout: str | None = None,
            app: str | None = None,
            graceful_timeout: float | None = None,
        ) -> Stack:
            n = len(stacks)
            static_root = tmp_path / f"static{n}"
            static_root.mkdir()
            (static_root / "sluice-test.css").write_text("body { color: teal; }\n")
            full_env = base_env(**(env or {}))
            full_env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / f"prometheus{n}")
            if app and graceful_timeout is None and "SLUICE_GRACEFUL_TIMEOUT" not in full_env:
                # The echo app has no Sluice drain: with the config's default graceful timeout
                # (SLUICE_MAX_DURATION + 10 s) its worker would outwait the test's stop.
                full_env["SLUICE_GRACEFUL_TIMEOUT"] = "3"
            cls_kwargs: dict[str, object] = {
                "workers": workers, "config": GUNICORN_CONF, "graceful_timeout": graceful_timeout,
            }
            g: Gunicorn = AppGunicorn(full_env, app=app, **cls_kwargs) if app else Gunicorn(full_env, **cls_kwargs)  # type: ignore[arg-type]
            cleanup.callback(g.close)  # quick: a TERM would wait out the drain of what a test left
            g.start(timeout=30)
            http_port, https_port = free_port(), free_port()
            cert, key = tls_cert
            site = render(
                SITE.read_text(), upstream=f"127.0.0.1:{g.port}", http_port=http_port,
                https_port=https_port, cert=cert, key=key, static_root=static_root,
                read_timeout=read_timeout,
            )
            ngx = Nginx(tmp_path / f"nginx{n}", site)
            cleanup.callback(ngx.stop)
            ngx.start((http_port, https_port))
            stack = Stack(ngx, g, f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", static_root)
            stacks.append(stack)
            return stack

        yield make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach the servers' logs to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for i, s in enumerate(getattr(item, "_sluice_stacks", [])):
            rep.sections.append((f"gunicorn log (stack {i})", s.gunicorn.log()[-10000:]))
            rep.sections.append((f"nginx error.log (stack {i})", s.nginx.log()))


@pytest.fixture
def fake() -> Iterator[object]:
    """The wire-level fake LLM upstream (tests/fake_upstream)."""
    from tests.fake_upstream import FakeUpstream

    with FakeUpstream() as upstream:
        yield upstream


def fake_env(fake: object, **extra: str) -> dict[str, str]:
    """Environment for a Sluice that talks to the fake Anthropic upstream."""
    return {
        "SLUICE_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "sk-ant-test-0000000000000000",
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,  # type: ignore[attr-defined]
        **extra,
    }


def pytest_configure(config: pytest.Config) -> None:
    # The tests' certificate is self-signed: requests run with verify=False on purpose.
    config.addinivalue_line("filterwarnings", "ignore::urllib3.exceptions.InsecureRequestWarning")
