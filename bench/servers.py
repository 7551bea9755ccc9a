"""The four servers `bench.compare` measures, and how to start, find and stop each one.

Each is started alone, pinned to one core (`taskset -c 0`), on a free port, pointed at the
fake upstream with `ANTHROPIC_BASE_URL`. `pid()` is the process whose CPU and memory count:
the gunicorn worker (not its idle master), or the single uvicorn / pywsgi process.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import ROOT, worker_pids
from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import free_port

BIN = Path(sys.executable).parent
# More than the largest step's streams + their upstream connections, with room.
WORKER_CONNECTIONS = "4000"
SLUICE_OVERRIDES = {
    "SLUICE_WORKERS": "1",
    "SLUICE_MAX_STREAMS": "3000",
    "SLUICE_WORKER_CONNECTIONS": WORKER_CONNECTIONS,
    "SLUICE_MAX_STREAMS_PER_CLIENT": "100000",  # every bench stream comes from one address
    "SLUICE_MAX_RESPONSES_PER_CLIENT": "100000",
    "SLUICE_HEARTBEAT_SECONDS": "15",
}


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    argv: Callable[[int], list[str]]
    gunicorn: bool  # the measured process is the master's worker
    cancels: bool = False  # has Sluice's POST /cancel
    env: dict[str, str] = field(default_factory=dict)


SPECS = {
    "fastapi": Spec(
        "fastapi",
        "FastAPI + `StreamingResponse` + `AsyncAnthropic` (uvicorn)",
        lambda port: [str(BIN / "uvicorn"), "bench.peers.fastapi_peer:app", "--host", "127.0.0.1",
                      "--port", str(port), "--backlog", "2048", "--log-level", "warning", "--no-access-log"],
        gunicorn=False,
    ),
    "flask": Spec(
        "flask",
        "Flask + Anthropic SDK (`gunicorn -k gevent`)",
        lambda port: [str(BIN / "gunicorn"), "-k", "gevent", "-w", "1", "--worker-connections", WORKER_CONNECTIONS,
                      "--no-control-socket", "--log-level", "warning", "-b", f"127.0.0.1:{port}",
                      "bench.peers.flask_peer:app"],
        gunicorn=True,
    ),
    "floor": Spec(
        "floor",
        "minimal gevent relay (pywsgi, parses the bytes itself)",
        lambda port: [sys.executable, "-m", "bench.peers.floor", "--port", str(port)],
        gunicorn=False,
    ),
    "sluice": Spec(
        "sluice",
        "Sluice (`gunicorn -c deploy/gunicorn.conf.py`, 1 gevent worker)",
        lambda port: [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "wsgi:app"],
        gunicorn=True,
        cancels=True,
        env=SLUICE_OVERRIDES,
    ),
}


def pinned(core: int | None, argv: list[str]) -> list[str]:
    """`argv` run on one core (as is, on a machine with a single core)."""
    return argv if core is None else ["taskset", "-c", str(core), *argv]


def raise_fd_limit() -> None:
    """In a child before exec: enough file descriptors for a thousand streams and their upstreams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def _env(spec: Spec, upstream_url: str) -> dict[str, str]:
    host, port = upstream_url.removeprefix("http://").split(":")
    # Sluice's test environment (Anthropic provider -> the fake); the peers read the same two variables.
    env = sluice_env(FakeUpstream(host, int(port)), **spec.env)
    env.setdefault("PYTHONPATH", str(ROOT))
    return env


def sluice_settings() -> dict[str, str]:
    """The SLUICE_* environment Sluice runs with here (for the report)."""
    env = _env(SPECS["sluice"], "http://127.0.0.1:1")
    return {k: v for k, v in sorted(env.items()) if k.startswith("SLUICE_")}


class Running:
    """One server process (group), started pinned; `stop()` ends it."""

    def __init__(self, spec: Spec, upstream_url: str, core: int | None) -> None:
        self.spec = spec
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # kept open while the server runs: its output, shown if it fails to start
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{spec.key}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            pinned(core, spec.argv(self.port)), cwd=ROOT, env=_env(spec, upstream_url),
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=raise_fd_limit, start_new_session=True,
        )
        self.pid = 0

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.key} exited at start:\n{self.log_text()}")
            if healthy(self.url):
                workers = worker_pids(self.proc.pid) if self.spec.gunicorn else [self.proc.pid]
                if workers:
                    self.pid = workers[0]
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.spec.key} not ready in {timeout:g} s:\n{self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # a worker left behind by its master


def healthy(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
