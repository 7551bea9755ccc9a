"""deploy/gunicorn.conf.py on its own: its numbers are read as the app reads them, and its
`child_exit` hook forgets a dead worker's live gauges without loading the app into the master."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.test_metrics import run as python
from tests.observability.test_metrics import value
from tests.support.servers import ROOT, VENV_BIN, Gunicorn, base_env

from .conftest import GUNICORN_CONF

pytestmark = pytest.mark.timeout(60)


def gunicorn_print_config(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", str(GUNICORN_CONF), "--print-config", "tests.deploy.echo_app:app"],
        cwd=ROOT, env=base_env(**env), capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("raw", ["2.5", "two", "-1", "inf"])
def test_a_count_that_is_not_a_whole_number_stops_the_start(raw: str) -> None:
    out = gunicorn_print_config(SLUICE_WORKERS=raw)
    assert out.returncode != 0
    assert f"SLUICE_WORKERS must be a whole number of seconds or a count, got {raw!r}" in out.stderr


def test_a_whole_number_written_as_a_float_is_accepted() -> None:
    out = gunicorn_print_config(SLUICE_WORKERS="3.0")
    assert out.returncode == 0, out.stderr
    assert any(line.replace(" ", "") == "workers=3" for line in out.stdout.splitlines())


def active_generations(prom_dir: Path) -> float:
    text = python("from app.observability import metrics; print(metrics.render()[0].decode())", prom_dir)
    return value(text, "sluice_active_generations")


def test_child_exit_drops_the_dead_workers_live_gauges(tmp_path: Path) -> None:
    worker_pid = int(python(
        "import os; from app.observability import metrics; metrics.generation_started(); print(os.getpid())",
        tmp_path,
    ))
    assert active_generations(tmp_path) == 1
    # The master: loads the config as gunicorn does and runs the hook for the dead worker.
    python(f"""
        import importlib.util, sys, types
        spec = importlib.util.spec_from_file_location("gunicorn_conf", {str(GUNICORN_CONF)!r})
        conf = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(conf)
        conf.child_exit(None, types.SimpleNamespace(pid={worker_pid}))
        assert "app" not in sys.modules, "the master must not import the app (preload trap)"
    """, tmp_path)
    assert active_generations(tmp_path) == 0


# -- gunicorn reached directly (no nginx in front): what the config bounds ----------------------

KEEPALIVE = 5  # deploy/gunicorn.conf.py's keepalive, as docs/security.md states it


def _closed_after(sock: socket.socket, drip: bytes | None, limit: float) -> float:
    """Seconds until the server closes `sock` (sending `drip` every 0.5 s meanwhile); fails past `limit`."""
    start = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - start < limit:
        try:
            if drip is not None:
                sock.sendall(drip)
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:  # reset: closed as well
            return time.monotonic() - start
    raise AssertionError(f"the connection was still open after {limit} s")


@pytest.fixture(scope="module")
def direct() -> Iterator[Gunicorn]:
    with Gunicorn(base_env(), config=GUNICORN_CONF) as server:
        yield server


def test_the_config_bounds_what_a_direct_client_can_hold() -> None:
    cfg = gunicorn_print_config()
    assert cfg.returncode == 0, cfg.stderr
    settings = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in cfg.stdout.splitlines())}
    assert int(settings["keepalive"]) == KEEPALIVE
    assert int(settings["limit_request_fields"]) <= 50
    assert int(settings["limit_request_line"]) <= 4094
    assert int(settings["limit_request_field_size"]) <= 8190


def test_an_idle_keep_alive_connection_is_closed(direct: Gunicorn) -> None:
    with socket.create_connection(("127.0.0.1", direct.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert _closed_after(sock, None, KEEPALIVE + 10) >= KEEPALIVE - 1


def test_headers_dripped_slowly_are_cut_off(direct: Gunicorn) -> None:
    with socket.create_connection(("127.0.0.1", direct.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # One header line every half second, never the end of the headers (slowloris).
        _closed_after(sock, b"X-a: b\r\n", KEEPALIVE + 10)


def test_too_many_header_fields_are_refused(direct: Gunicorn) -> None:
    fields = "".join(f"X-Field-{n}: {n}\r\n" for n in range(60))
    with socket.create_connection(("127.0.0.1", direct.port), timeout=5) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{fields}\r\n".encode())
        assert sock.recv(65536).split(b"\r\n")[0].split(b" ")[1] in (b"400", b"431")
