"""Where the memory of an open stream goes: tracemalloc at 0 and N open streams, greenlets per stream.

    .venv/bin/python -m bench.stream_memory [--streams 200] [--top 12] [--gunicorn]

With --gunicorn, the app runs in a real `gunicorn -k gevent -w 1` worker (bench._memory_wsgi
measures inside it): the path every deployment takes, where a caught-up stream is written from
the event loop (app.delivery.takeover). Without it, the app runs in this process under gevent's WSGI
server (the loop `gunicorn -k gevent` runs,
with the client socket passed as `gunicorn.socket`, so the EOF watch is on), with tracemalloc
on. The fake upstream (Anthropic wire format, through the real SDK) and the clients run in two
child processes, so their memory is not counted. Each stream gets two tokens, then the upstream
stalls: N streams stay open, each attached to one client. Prints the bytes per open stream
(Python allocations only: tracemalloc does not see C libraries' buffers), the top allocation
sites, and the greenlets per stream.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tracemalloc  # noqa: E402
from collections import Counter  # noqa: E402

import gevent  # noqa: E402
from gevent import pywsgi  # noqa: E402
from greenlet import greenlet  # noqa: E402

from bench._common import print_allocations, run_killing  # noqa: E402
from tests.support.servers import ROOT, base_env  # noqa: E402

CLIENTS = r"""
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /stream?prompt=m%d+%%5Bfake+stall_after%%3D2%%5D HTTP/1.1\r\nHost: localhost\r\n\r\n" % i)
    socks.append(s)
for s in socks:
    got = b""
    while got.count(b'"type":"text"') < 2:
        part = s.recv(65536)
        if not part:
            sys.exit("a stream ended early: " + got.decode(errors="replace")[-300:])
        got += part
print("ready", flush=True)
sys.stdin.read()
"""


CHILDREN: list[subprocess.Popen[str]] = []


class Handler(pywsgi.WSGIHandler):
    """Passes the client socket as gunicorn's gevent worker does."""

    def get_environ(self) -> dict:  # type: ignore[type-arg]
        env = super().get_environ()
        env["gunicorn.socket"] = self.socket
        return env


def greenlets() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet))


def object_counts() -> Counter[str]:
    """GC-tracked objects by type (containers only: str, bytes and int are not tracked)."""
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--frames", type=int, default=1, help="group allocation sites by this many frames")
    parser.add_argument("--gunicorn", action="store_true", help="measure inside a gunicorn -k gevent worker")
    args = parser.parse_args()

    fake = subprocess.Popen([sys.executable, "-m", "tests.fake_upstream"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    CHILDREN.append(fake)
    assert fake.stdout is not None
    fake_url = fake.stdout.readline().strip()
    os.environ.update(base_env(
        SLUICE_PROVIDER="anthropic", ANTHROPIC_API_KEY="sk-bench", ANTHROPIC_BASE_URL=fake_url,
        SLUICE_MAX_STREAMS_PER_CLIENT=str(args.streams + 10),
        SLUICE_MAX_RESPONSES_PER_CLIENT=str(args.streams + 10), SLUICE_DISCONNECT_GRACE_SECONDS="1",
    ))
    if args.gunicorn:
        measure_in_gunicorn(args.streams)
        return
    from app import create_app
    from app.process.worker import freeze_heap

    wsgi_app = create_app()
    freeze_heap()  # as a gunicorn worker does once the app is loaded
    server = pywsgi.WSGIServer(("127.0.0.1", 0), wsgi_app, handler_class=Handler, log=None)
    server.start()
    port = server.server_port

    def open_streams(n: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", CLIENTS, str(port), str(n)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        CHILDREN.append(proc)
        assert proc.stdout is not None
        with gevent.Timeout(120):
            assert proc.stdout.readline().strip() == "ready"  # gevent's subprocess: cooperative
        return proc

    def settle() -> None:
        gevent.sleep(0.5)
        gc.collect()

    warm = open_streams(5)  # first use: SDK client, connection pool, metrics, imports
    assert warm.stdin is not None
    warm.stdin.close()
    warm.wait()
    gevent.sleep(2.5)  # disconnect grace: the warm-up generations end
    tracemalloc.start(8)
    settle()
    g0 = greenlets()
    before = tracemalloc.take_snapshot()
    objects0 = object_counts()  # between the snapshots: their traces are objects too
    clients = open_streams(args.streams)
    settle()
    objects = object_counts()
    after = tracemalloc.take_snapshot()
    g1 = greenlets()
    objects.subtract(objects0)
    print(f"{args.streams} open streams (Anthropic SDK -> fake upstream, stalled after 2 tokens)")
    print(f"  greenlets per open stream: {(g1 - g0) / args.streams:.2f}")
    print(f"  GC-tracked objects per open stream: {objects.total() / args.streams:.1f}; by type:")
    for name, count in objects.most_common(args.top):
        print(f"    {count / args.streams:7.2f}  {name}")
    print_allocations(before, after, args.streams, args.top, str(ROOT), args.frames)
    assert clients.stdin is not None
    clients.stdin.close()
    clients.wait()
    server.stop(timeout=1)


def measure_in_gunicorn(streams: int) -> None:
    """The same measure inside a gunicorn worker (see bench._memory_wsgi)."""
    import urllib.request

    from tests.support.servers import VENV_BIN, free_port

    port = free_port()
    server = subprocess.Popen([str(VENV_BIN / "gunicorn"), "-k", "gevent", "-w", "1", "-b", f"127.0.0.1:{port}",
                               "bench._memory_wsgi:app"], cwd=ROOT, env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    CHILDREN.append(server)

    def call(path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as resp:
            return str(resp.read().decode())

    for _ in range(300):
        try:
            call("/healthz")
            break
        except OSError:
            gevent.sleep(0.1)

    def open_streams(n: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", CLIENTS, str(port), str(n)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        CHILDREN.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    warm = open_streams(5)
    assert warm.stdin is not None
    warm.stdin.close()
    warm.wait()
    gevent.sleep(2.5)  # disconnect grace: the warm-up generations end
    call("/__bench/start")
    clients = open_streams(streams)
    report = call(f"/__bench/measure?streams={streams}")
    print(f"{streams} open streams in a gunicorn -k gevent worker (Anthropic SDK -> fake upstream,"
          " stalled after 2 tokens)")
    print(report, end="")
    assert clients.stdin is not None
    clients.stdin.close()
    clients.wait()


if __name__ == "__main__":
    run_killing(main, CHILDREN)
