"""What opening a stream costs the server: CPU and Python calls per one-token stream, whole app.

    .venv/bin/python -m bench.stream_open [--streams 200] [--top 15]

The app runs in this process under gevent's WSGI server (as in `bench.stream_memory`), Anthropic
provider through the real SDK to the fake upstream; a child process asks for N one-token
streams, one after the other, each on its own connection, and reads each to `[DONE]`. Prints
this process's CPU per stream (three runs: noisy on a shared machine), then, from one run under
cProfile, the Python-level calls per stream by package (deterministic: the same code path
makes the same calls) and the most called functions. The fake upstream and the client run in
their own processes: not counted.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402

import gevent  # noqa: E402
from gevent import pywsgi  # noqa: E402

from bench._common import run_killing  # noqa: E402
from bench.stream_memory import Handler  # noqa: E402
from tests.support.servers import ROOT, base_env  # noqa: E402

CLIENT = r"""
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /stream?prompt=o%d+%%5Bfake+tokens%%3D1%%5D HTTP/1.1\r\n"
              b"Host: localhost\r\nConnection: close\r\n\r\n" % i)
    got = b""
    while True:
        part = s.recv(65536)
        if not part:
            break
        got += part
    if b"[DONE]" not in got:
        sys.exit("a stream did not end with [DONE]: " + got.decode(errors="replace")[-300:])
    s.close()
print("ok", flush=True)
"""

CHILDREN: list[subprocess.Popen[str]] = []


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _where(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/")[-1].split("/")[0]
    if filename.startswith(str(ROOT)):
        return os.path.relpath(filename, ROOT)
    return "stdlib" if "python3" in filename else "builtins"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    fake = subprocess.Popen([sys.executable, "-m", "tests.fake_upstream"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    CHILDREN.append(fake)
    assert fake.stdout is not None
    fake_url = fake.stdout.readline().strip()
    os.environ.update(base_env(SLUICE_PROVIDER="anthropic", ANTHROPIC_API_KEY="sk-bench", ANTHROPIC_BASE_URL=fake_url))
    from app import create_app
    from app.process.worker import freeze_heap

    wsgi_app = create_app()
    freeze_heap()  # as a gunicorn worker does once the app is loaded
    server = pywsgi.WSGIServer(("127.0.0.1", 0), wsgi_app, handler_class=Handler, log=None)
    server.start()

    def streams(n: int) -> None:
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, str(server.server_port), str(n)],
                                stdout=subprocess.PIPE, text=True)
        CHILDREN.append(proc)
        assert proc.stdout is not None
        with gevent.Timeout(300):
            assert proc.stdout.readline().strip() == "ok"  # gevent's subprocess: cooperative
        proc.wait()

    streams(30)  # first use: SDK client, connection pool, metrics
    n = args.streams
    runs = []
    for _ in range(3):
        c0 = _cpu()
        streams(n)
        runs.append((_cpu() - c0) / n * 1e6)
    print(f"{n} one-token streams, one at a time (Anthropic SDK -> fake upstream)")
    print("  server CPU per stream (3 runs): " + ", ".join(f"{r:.0f} us" for r in runs))
    profile = cProfile.Profile()
    profile.enable()
    streams(n)
    profile.disable()
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    for (filename, line, name), (_, calls, *_rest) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        by_package[_where(filename)] += calls
        where = filename.split("site-packages/")[-1] if "site-packages/" in filename else os.path.basename(filename)
        by_function[f"{where}:{line}({name})" if line else name] += calls
    print(f"  Python-level calls per stream (cProfile): {sum(by_package.values()) / n:.0f}; by package:")
    for name, calls in by_package.most_common(args.top):
        print(f"    {calls / n:7.1f}  {name}")
    print("  most called:")
    for name, calls in by_function.most_common(args.top):
        print(f"    {calls / n:7.1f}  {name}")
    server.stop(timeout=1)


if __name__ == "__main__":
    run_killing(main, CHILDREN)
