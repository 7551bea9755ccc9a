"""The load generator of `bench.compare`: N looping SSE clients on one selector, one process.

    python -m bench.loadgen --url http://127.0.0.1:8000 --streams 300 --start T0 [...]

Prints one JSON object (the step's figures) on stdout. Each of N users opens `GET /stream`,
reads to `data: [DONE]`, and at once opens the next, until the step ends; user i first starts
at T0 + i·ramp/N, so arrivals are spread evenly and N streams are open from T0 + ramp on. The
figures are taken over the window [T0 + ramp, T0 + ramp + window]; TTFT and errors over the
whole step.

Tokens carry the fake's stamps (`bench.stampfake`): `t5@<µs>`, the first `t0@<µs>/<µs>`.
No JSON is parsed per event: a regex over each complete block of received bytes finds the
stamps, so the client costs little next to the servers it measures.
- relay latency: the time `recv()` returned − the token's stamp.
- TTFT (every stream of the step, the ramp's too): from before `connect()` to the recv()
  carrying `t0`; TTFT added = that − the fake's own (stamp of `t0` − its request's arrival),
  i.e. everything the server and one extra loopback hop add.
- cancel probes (`--cancels K`, Sluice's `POST /cancel`): K extra streams spread over the
  window, each cancelled on its first token; time from sending the cancel to receiving the
  `cancelled` event (a probe still waiting at the window's end is waited for). Their tokens
  are not counted in the other figures.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import json
import os
import re
import secrets
import select
import socket
import sys
import time
from array import array
from collections import Counter
from typing import Any
from urllib.parse import urlencode

_TOKEN = re.compile(rb"t(\d+)@(\d+)(?:/(\d+))? ")
_TERMINAL = re.compile(rb'"type": ?"(done|error|cancelled)"')
_DONE = b"data: [DONE]"


def _percentiles(values: list[float] | array[float]) -> dict[str, float | int | None]:
    vals = sorted(values)
    if not vals:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}

    def q(p: float) -> float:
        pos = (len(vals) - 1) * p
        lo = int(pos)
        hi = min(lo + 1, len(vals) - 1)
        return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)

    return {"n": len(vals), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": vals[-1]}


class Conn:
    """One client connection: a stream (`probe` when it is a cancel probe) or a cancel request."""

    __slots__ = (
        "sock", "kind", "user", "key", "request", "t_start", "t_last", "status", "head", "buf",
        "next_idx", "first_at", "terminal", "probe_cancel_at",
    )

    def __init__(self, kind: str, user: int, key: str, request: bytes, now: float) -> None:
        self.kind = kind  # "stream" | "probe" | "cancel"
        self.user = user
        self.key = key
        self.request = request
        self.t_start = now
        self.t_last = now
        self.status = 0
        self.head = b""
        self.buf = b""
        self.next_idx = 0
        self.first_at = 0.0
        self.terminal = b""
        self.probe_cancel_at = 0.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        host, _, port = args.url.removeprefix("http://").rstrip("/").partition(":")
        self.addr = (host, int(port))
        self.host = f"{host}:{port}"
        self.args = args
        self.directive = f"[fake tokens={args.tokens} pace={1 / args.rate:g}]"
        self.t0 = args.start
        self.w0 = args.start + args.ramp
        self.w1 = self.w0 + args.window
        self.epoll = select.epoll()  # not `selectors`: its per-event wrapping shows at 15k events/s
        self.by_fd: dict[int, Conn] = {}
        self.conns: set[Conn] = set()
        self.latency = array("d")
        self.ttft: list[float] = []
        self.ttft_added: list[float] = []
        self.cancel: list[float] = []
        self.cancel_status: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.tokens_window = 0
        self.started = self.finished = 0
        # (when, user, is a cancel probe): user i first at T0 + i·ramp/N; probes spread over the window
        n = args.streams
        self.starts = [(self.t0 + i * args.ramp / n, i, False) for i in range(n)]
        self.starts += [(self.w0 + (k + 0.5) * args.window / args.cancels, -1, True) for k in range(args.cancels)]
        heapq.heapify(self.starts)

    # -- opening ----------------------------------------------------------------------------

    def _open(self, conn: Conn) -> None:
        err = conn.sock.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            conn.sock.close()
            self.errors[f"connect: {errno.errorcode.get(err, err)}"] += 1
            return
        self.conns.add(conn)
        self.by_fd[conn.sock.fileno()] = conn
        self.epoll.register(conn.sock.fileno(), select.EPOLLOUT)

    def start_stream(self, user: int, now: float, probe: bool = False) -> None:
        key = secrets.token_urlsafe(16)
        query = urlencode({"prompt": f"bench {self.directive}", "stream_id": key})
        request = (
            f"GET /stream?{query} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.started += not probe
        self._open(Conn("probe" if probe else "stream", user, key, request, now))

    def start_cancel(self, probe: Conn, now: float) -> None:
        body = json.dumps({"stream_id": probe.key}).encode()
        request = (
            f"POST /cancel HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        probe.probe_cancel_at = now
        self._open(Conn("cancel", -1, probe.key, request, now))

    # -- reading ----------------------------------------------------------------------------

    def on_event(self, conn: Conn, mask: int, now: float) -> None:
        if mask & select.EPOLLOUT:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.end(conn, now, f"connect: {errno.errorcode.get(err, err)}")
                return
            try:
                conn.sock.send(conn.request)  # small: fits the fresh socket's buffer
            except OSError as exc:
                self.end(conn, now, f"send: {exc.__class__.__name__}")
                return
            self.epoll.modify(conn.sock.fileno(), select.EPOLLIN)
            return
        try:
            data = conn.sock.recv(262144)
        except OSError as exc:
            self.end(conn, now, f"recv: {exc.__class__.__name__}")
            return
        if not data:
            self.end(conn, now, "eof")
            return
        conn.t_last = now
        if not conn.status:
            conn.head += data
            end = conn.head.find(b"\r\n\r\n")
            if end < 0:
                return
            conn.status = int(conn.head.split(b" ", 2)[1])
            data, conn.head = conn.head[end + 4 :], b""
            if conn.kind == "cancel":
                self.cancel_status[conn.status] += 1
                self.end(conn, now, None)
                return
            if conn.status != 200:
                self.end(conn, now, f"HTTP {conn.status}")
                return
        buf = conn.buf + data
        cut = buf.rfind(b"\n\n") + 2
        if cut < 2:
            conn.buf = buf
            return
        block, conn.buf = buf[:cut], buf[cut:]
        self.on_block(conn, block, now)

    def on_block(self, conn: Conn, block: bytes, now: float) -> None:
        in_window = self.w0 <= now <= self.w1
        counted = conn.kind == "stream"
        for m in _TOKEN.finditer(block):
            idx = int(m.group(1))
            if idx != conn.next_idx:
                self.errors["token out of order or lost"] += 1
            conn.next_idx = idx + 1
            if idx == 0:
                conn.first_at = now
                if conn.kind == "probe":
                    self.start_cancel(conn, now)
                elif m.group(3):  # every stream of the step, the ramp's too
                    ttft = now - conn.t_start
                    self.ttft.append(ttft)
                    self.ttft_added.append(ttft - (int(m.group(2)) - int(m.group(3))) / 1e6)
            if counted and in_window:
                self.latency.append(now - int(m.group(2)) / 1e6)
                self.tokens_window += 1
        term = _TERMINAL.search(block)
        if term:
            conn.terminal = term.group(1)
            if conn.terminal == b"cancelled" and conn.probe_cancel_at:
                self.cancel.append(now - conn.probe_cancel_at)
        if _DONE in block:
            self.end(conn, now, None)

    def _forget(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        self.epoll.unregister(fd)
        del self.by_fd[fd]
        conn.sock.close()
        self.conns.discard(conn)

    def end(self, conn: Conn, now: float, failure: str | None) -> None:
        """Close `conn`; judge a stream by its terminal event and token count; restart its user."""
        self._forget(conn)
        if conn.kind == "cancel":
            if failure:
                self.errors[f"cancel request: {failure}"] += 1
            return
        if failure is None:
            if conn.kind == "probe":
                failure = None if conn.terminal == b"cancelled" else f"probe ended with {conn.terminal.decode()!r}"
            elif conn.terminal != b"done":
                failure = f"terminal {conn.terminal.decode() or 'none'}"
            elif conn.next_idx != self.args.tokens:
                failure = "tokens missing"
        elif failure == "eof" and conn.status == 200:
            failure = "stream cut before [DONE]"
        if failure:
            self.errors[f"{conn.kind}: {failure}"] += 1
        if conn.kind == "stream":
            self.finished += 1
            # the user goes on at once; after a failure, a little later (no busy loop on a dead server)
            heapq.heappush(self.starts, (now + (0.1 if failure else 0.0), conn.user, False))

    # -- the step ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args, starts = self.args, self.starts
        cpu0: os.times_result | None = None
        next_check = self.t0 + 1.0
        cpu1: os.times_result | None = None
        open_at_end = answering_at_end = 0
        now = time.monotonic()
        # After the window, only cancel probes still waiting for their answer keep the loop going
        # (up to `stall` seconds); the other streams run on meanwhile, and no new one starts.
        while now < self.w1 or (now < self.w1 + args.stall and any(c.kind != "stream" for c in self.conns)):
            while starts and starts[0][0] <= now:
                _, user, probe = heapq.heappop(starts)
                if now < self.w1 or probe:
                    self.start_stream(user, now, probe)
            if cpu0 is None and now >= self.w0:
                cpu0 = os.times()
            if cpu1 is None and now >= self.w1:
                cpu1 = os.times()
                open_at_end = sum(1 for c in self.conns if c.kind == "stream")
                # Open and answering (a first token in): a server that falls behind has users
                # still waiting to be answered, which cost it little memory.
                answering_at_end = sum(1 for c in self.conns if c.kind == "stream" and c.first_at)
            wake = min(starts[0][0] if starts else self.w1 + args.stall, now + 0.05)
            by_fd = self.by_fd
            for fd, mask in self.epoll.poll(max(wake - now, 0)):
                self.on_event(by_fd[fd], mask, time.monotonic())
            now = time.monotonic()
            if now >= next_check:  # a stream silent for this long is stuck
                next_check = now + 1.0
                for conn in [c for c in self.conns if now - c.t_last > args.stall]:
                    self.end(conn, now, f"silent for {args.stall:g} s")
        if cpu1 is None:
            cpu1 = os.times()
            open_at_end = sum(1 for c in self.conns if c.kind == "stream")
            answering_at_end = sum(1 for c in self.conns if c.kind == "stream" and c.first_at)
        for conn in list(self.conns):  # the step is over: streams still running are not errors
            if conn.kind != "stream":
                self.errors[f"{conn.kind}: no answer {args.stall:g} s after the window"] += 1
            self._forget(conn)
        cpu = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) if cpu0 else 0.0
        return {
            "streams": args.streams,
            "window_s": args.window,
            "tokens_window": self.tokens_window,
            "offered_tps": args.streams * args.rate,
            "latency": _percentiles(self.latency),
            "ttft": _percentiles(self.ttft),
            "ttft_added": _percentiles(self.ttft_added),
            "cancel": _percentiles(self.cancel),
            "cancel_status": {str(k): v for k, v in self.cancel_status.items()},
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "started": self.started,
            "finished": self.finished,
            "open_at_end": open_at_end,
            "answering_at_end": answering_at_end,
            "loadgen_cpu_s": cpu,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--streams", type=int, required=True, help="concurrent streams (users)")
    parser.add_argument("--start", type=float, required=True, help="T0, on time.monotonic()'s clock")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which the users start")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured after the ramp")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per stream")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens/s per stream")
    parser.add_argument("--cancels", type=int, default=0, help="cancel probes over the window")
    parser.add_argument("--stall", type=float, default=15.0, help="seconds of silence that fail a stream")
    args = parser.parse_args(argv)
    json.dump(Load(args).run(), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
