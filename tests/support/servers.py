"""Real gunicorn processes for tests: `gunicorn -k gevent` on a free port, stopped by signal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
# Inside `Gunicorn`'s body the name `signal` is its method, not the module.
_SIGTERM = signal.SIGTERM
_SIGQUIT = signal.SIGQUIT
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**overrides: str) -> dict[str, str]:
    """A clean environment for a Sluice server: no real keys, fast demo, short timeouts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "ANTHROPIC_", "OPENAI_"))}
    env.update(
        {
            "SLUICE_PROVIDER": "demo",
            "SLUICE_DEMO_TOKENS_PER_SECOND": "200",
            "SLUICE_ALLOWED_MODELS": "*",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # SLUICE_TEST_DIRECT_WRITE=0 runs a suite with gunicorn writing every stream (the fallback
    # of app.delivery.takeover).
    if os.environ.get("SLUICE_TEST_DIRECT_WRITE"):
        env["SLUICE_DIRECT_WRITE"] = os.environ["SLUICE_TEST_DIRECT_WRITE"]
    env.update(overrides)
    return env


class Gunicorn:
    """One gunicorn master (gevent workers) running `wsgi:app` from the repo root.

    Use as a context manager. `config` is a gunicorn config file (e.g. deploy/gunicorn.conf.py,
    with its worker class); without one the server runs with `-k gevent -w N`.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        workers: int = 1,
        port: int | None = None,
        config: str | Path | None = None,
        args: tuple[str, ...] = (),
        graceful_timeout: float | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env if env is not None else base_env())
        self.workers = workers
        self.config = config
        self.args = args
        self.graceful_timeout = graceful_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        fd, self._log_path = tempfile.mkstemp(prefix="gunicorn-", suffix=".log")
        os.close(fd)  # each start opens it for the child only: no handle of ours left to leak

    def command(self) -> list[str]:
        cmd = [str(VENV_BIN / "gunicorn")]
        if self.config:
            cmd += ["-c", str(self.config)]  # its worker_class (app.process.worker.Worker)
        else:
            cmd += ["-k", "gevent"]  # plain: the app reaches gunicorn's internals (app.seams.gunicorn)
        cmd += ["-w", str(self.workers), "-b", f"127.0.0.1:{self.port}"]
        if self.graceful_timeout is not None:
            cmd += ["--graceful-timeout", str(self.graceful_timeout)]
        return [*cmd, *self.args, "wsgi:app"]

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process, its output appended to this server's log file."""
        with open(self._log_path, "ab") as out:
            return subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def start(self, timeout: float = 60.0) -> Gunicorn:
        self.proc = self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer /healthz in {timeout}s:\n{self.log()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = _SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def close(self) -> None:
        """Stop at the end of a test or module: gunicorn's quick shutdown (SIGQUIT).

        Not a test of shutdown (tests of it send their own signal, or call `stop`): a TERM
        costs a second per server (gevent's worker looks at its exit flag once a second),
        and a generation left running would wait out its drain.
        """
        self.stop(_SIGQUIT)

    def log(self) -> str:
        return Path(self._log_path).read_text(errors="replace")

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
