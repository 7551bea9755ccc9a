"""One worker's memory under adversarial clients: RSS before, at peak, and after each scenario.

    .venv/bin/python -m bench.adversarial_memory [--scale 1.0]

One `gunicorn -k gevent -w 1` Sluice (Anthropic provider -> the wire-level fake upstream, in
this process), and raw-socket clients that misbehave:

- slow readers: clients that read nothing (4 KB receive buffers) while a fast upstream streams
  large fragments (10 KB each, 30 MB per answer);
- many subscribers: one generation, hundreds of tabs attached, none of them reading;
- long JSON answers: `"response_format": "json"` answers of ~20 KB, read normally.

RSS is the worker's `VmRSS`; the peak is `VmHWM`, reset before each scenario (writing 5 to
`/proc/<pid>/clear_refs`, which needs root; without it the peak is the process's lifetime peak).
"After" is once every generation ended and its replay expired (SLUICE_REPLAY_TTL_SECONDS=2):
memory Python freed but the allocator kept shows there, not as a leak.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import requests

from tests.conftest import sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn


def worker_pid(server: Gunicorn) -> int:
    assert server.proc is not None
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    return int(children[0])


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def raw_get(url: str, path: str, *, rcvbuf: int | None = None, body: bytes | None = None) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    if body is None:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    else:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def read_all(sock: socket.socket) -> int:
    total = 0
    sock.settimeout(120)
    while True:
        part = sock.recv(1 << 16)
        if not part or part.endswith(b"0\r\n\r\n"):
            return total + len(part)
        total += len(part)


def active(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=60).text
    for line in text.splitlines():
        if line.startswith("sluice_active_generations "):
            return float(line.split()[1])
    return 0.0


def wait_idle(url: str, fake: FakeUpstream, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (active(url) > 0 or fake.open_connections) and time.monotonic() < deadline:
        time.sleep(0.2)


def slow_readers(url: str, n: int) -> Callable[[], None]:
    socks = [raw_get(url, "/stream?max_tokens=4000&prompt=" + quote(f"s{i} [fake tokens=3000 pad=10000]"),
                     rcvbuf=4096) for i in range(n)]

    def finish() -> None:
        for s in socks:
            s.close()
    return finish


def many_subscribers(url: str, n: int) -> Callable[[], None]:
    created = requests.post(url + "/streams", json={"prompt": "x [fake tokens=2000 pad=200 pace=0.002]",
                                                     "max_tokens": 4000}, timeout=10).json()
    socks = [raw_get(url, created["events_url"], rcvbuf=4096) for _ in range(n)]

    def finish() -> None:
        for s in socks:
            s.close()
    return finish


def long_json(url: str, n: int) -> Callable[[], None]:
    body = json.dumps({"prompt": "x [fake json=1 tokens=4000]", "response_format": "json",
                       "max_tokens": 4096}).encode()
    socks = [raw_get(url, "/stream", body=body) for _ in range(n)]
    threads = [threading.Thread(target=read_all, args=(s,)) for s in socks]
    for t in threads:
        t.start()

    def finish() -> None:
        for t in threads:
            t.join(120)
        for s in socks:
            s.close()
    return finish


def run(server: Gunicorn, fake: FakeUpstream, name: str, start: Callable[[str, int], Callable[[], None]],
        n: int, hold: float) -> tuple[str, int, int, int, int]:
    """(name, clients, RSS before, peak, after) in KiB; peak and after are -1 if the worker died."""
    pid = worker_pid(server)
    wait_idle(server.url, fake)
    time.sleep(2.5)  # replays of the previous scenario expire
    before = status_kib(pid, "VmRSS")
    reset_peak(pid)
    finish = start(server.url, n)
    time.sleep(hold)
    peak = status_kib(pid, "VmHWM") if Path(f"/proc/{pid}").exists() else -1
    finish()
    try:
        wait_idle(server.url, fake)
        time.sleep(3)
        requests.get(server.url + "/healthz", timeout=60)
        return name, n, before, max(peak, status_kib(pid, "VmHWM")), status_kib(pid, "VmRSS")
    except (OSError, requests.RequestException):
        return name, n, before, peak, -1  # the worker was killed (gunicorn's timeout, or OOM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the client counts")
    args = parser.parse_args()
    with FakeUpstream() as fake:
        env = sluice_env(fake, SLUICE_MAX_STREAMS_PER_CLIENT="1000",
                         SLUICE_MAX_RESPONSES_PER_CLIENT="1000", SLUICE_REPLAY_TTL_SECONDS="2",
                         SLUICE_SEND_TIMEOUT="10", SLUICE_DISCONNECT_GRACE_SECONDS="1")
        with Gunicorn(env) as server:
            requests.get(server.url + "/stream", params={"prompt": "warm [fake tokens=3]"}, timeout=10).close()
            rows = [
                run(server, fake, "slow readers (30 MB answers, 10 KB fragments)", slow_readers,
                    int(10 * args.scale), 8),
                run(server, fake, "subscribers on one generation, none reading", many_subscribers,
                    int(300 * args.scale), 6),
                run(server, fake, "long JSON answers (~20 KB), read", long_json, int(10 * args.scale), 1),
            ]
    print(f"{'scenario':<50} {'clients':>7} {'before MB':>9} {'peak MB':>8} {'after MB':>8}")
    for name, n, before, peak, after in rows:
        shown = [f"{v / 1024:.1f}" if v >= 0 else "died" for v in (before, peak, after)]
        print(f"{name:<50} {n:>7} {shown[0]:>9} {shown[1]:>8} {shown[2]:>8}")


if __name__ == "__main__":
    main()
