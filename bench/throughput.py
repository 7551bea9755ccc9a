"""Time to first token through Sluice vs. straight from the fake, and relay throughput / CPU per token.

    .venv/bin/python -m bench.throughput [--tries 200] [--update-doc]

Same set-up as `bench.lifecycle`: the fake upstream in this process, one `gunicorn -k gevent -w 1`.

1. TTFT overhead, one request at a time (`first_delay=0`, 5 tokens): from just before the TCP
   connect to the recv() that completes the first `text` event (`GET /stream` through Sluice),
   or the first `content_block_delta` (`POST /v1/messages` straight to the fake, the same
   request the SDK makes). The difference is what Sluice adds.
2. Throughput: N streams at once, read by one selector loop here. Unpaced (`pace=0`: as fast as
   the worker relays) and paced like a real model (`pace=0.02`: 50 tokens/s per stream). Reports
   delivered `text` events/s, the worker's CPU (utime+stime from /proc/<pid>/stat) per relayed
   token and its CPU utilisation.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import sys
import time

from bench._common import (
    ROOT,
    RawSSE,
    TimedFake,
    connect,
    cpu_seconds,
    host_port,
    machine,
    machine_line,
    md_table,
    ms,
    new_key,
    prompt,
    stream_path,
    summarize,
    tune_interpreter,
    update_doc_section,
    worker_pids,
)
from tests.conftest import UPSTREAM_KEY, sluice_env
from tests.support.servers import Gunicorn


def ttft_sluice(url: str) -> float:
    key = new_key()
    t0 = time.monotonic()
    sse = RawSSE(url, stream_path(key, "tokens=5 first_delay=0"))
    try:
        first = sse.until("text", 10)
        sse.until("[DONE]", 10)
        return first.at - t0
    finally:
        sse.close()


def ttft_direct(fake: TimedFake) -> float:
    body = json.dumps({
        "model": "claude-haiku-4-5",
        "max_tokens": 1024,
        "stream": True,
        "messages": [{"role": "user", "content": prompt(new_key(), "tokens=5 first_delay=0")}],
    }).encode()
    host, port = host_port(fake.url)
    request = (
        f"POST /v1/messages HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"x-api-key: {UPSTREAM_KEY}\r\nanthropic-version: 2023-06-01\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    t0 = time.monotonic()
    sock = connect(fake.url)
    try:
        sock.sendall(request)
        buf = b""
        first = None
        while True:
            data = sock.recv(65536)
            at = time.monotonic()
            if not data:
                break
            buf += data
            if first is None and b"content_block_delta" in buf:
                first = at
        if first is None:
            raise RuntimeError(f"no content_block_delta from the fake: {buf[:300]!r}")
        return first - t0
    finally:
        sock.close()


def run_streams(url: str, n: int, directive: str, worker: int, timeout: float) -> dict[str, float]:
    """N streams at once; returns totals."""
    sel = selectors.DefaultSelector()
    cpu0, t0, self0 = cpu_seconds(worker), time.monotonic(), os.times()
    streams = []
    for _ in range(n):
        sse = RawSSE(url, stream_path(new_key(), directive) + "&max_tokens=4096")
        sse.sock.setblocking(False)
        sel.register(sse.sock, selectors.EVENT_READ, sse)
        streams.append(sse)
    texts = 0
    open_ = n
    deadline = t0 + timeout
    try:
        while open_ and time.monotonic() < deadline:
            for sk, _ in sel.select(1.0):
                sse = sk.data
                try:
                    events = sse._feed(sse.sock.recv(262144) or b"", time.monotonic())
                except BlockingIOError:
                    continue
                for ev in events:
                    if ev.data == "[DONE]":
                        sel.unregister(sse.sock)
                        open_ -= 1
                    elif '"type":"text"' in ev.data:
                        texts += 1
    finally:
        for sse in streams:
            sse.close()
    wall = time.monotonic() - t0
    cpu = cpu_seconds(worker) - cpu0
    self1 = os.times()
    return {
        "streams": n,
        "unfinished": open_,
        "texts": texts,
        "wall": wall,
        "worker_cpu": cpu,
        "bench_cpu": (self1.user - self0.user) + (self1.system - self0.system),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--tries", type=int, default=200, help="TTFT tries each way (default 200)")
    parser.add_argument("--update-doc", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    command = (".venv/bin/python -m bench.throughput " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    tune_interpreter()
    info = machine()
    fake = TimedFake().start()
    env = sluice_env(fake, SLUICE_MAX_STREAMS_PER_CLIENT="10000",
                     SLUICE_MAX_RESPONSES_PER_CLIENT="10000", SLUICE_HEARTBEAT_SECONDS="15")
    loads = [
        ("unpaced", 1, "tokens=2000 pace=0"),
        ("unpaced", 10, "tokens=1000 pace=0"),
        ("unpaced", 50, "tokens=400 pace=0"),
        ("paced 50 tok/s", 50, "tokens=150 pace=0.02"),
        ("paced 50 tok/s", 200, "tokens=150 pace=0.02"),
    ]
    try:
        with Gunicorn(env, workers=1) as server:
            assert server.proc is not None
            worker = worker_pids(server.proc.pid)[0]
            for _ in range(10):
                ttft_sluice(server.url)
                ttft_direct(fake)
            print("ttft ...", file=sys.stderr)
            via, direct = [], []
            for _ in range(args.tries):
                via.append(ttft_sluice(server.url))
                direct.append(ttft_direct(fake))
            results = []
            for name, n, directive in loads:
                print(f"{name} x{n} ...", file=sys.stderr)
                results.append((name, directive, run_streams(server.url, n, directive, worker, 120)))
    finally:
        fake.stop()

    s_via, s_direct = summarize(via), summarize(direct)
    lines = [
        f"Command: `{command}`",
        "",
        "Machine: " + machine_line(info),
        "",
        "Time to first token, one request at a time (`first_delay=0`, from before connect() to the recv() "
        "completing the first text event):",
        "",
        md_table(
            ["path", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            [
                ["client → fake upstream (direct)", s_direct.n, ms(s_direct.p50), ms(s_direct.p90), ms(s_direct.p99),
                 ms(s_direct.max)],
                ["client → Sluice → fake upstream", s_via.n, ms(s_via.p50), ms(s_via.p90), ms(s_via.p99),
                 ms(s_via.max)],
                ["overhead (difference of the percentiles)", "", ms(s_via.p50 - s_direct.p50),
                 ms(s_via.p90 - s_direct.p90), ms(s_via.p99 - s_direct.p99), "—"],
            ],
        ),
        "",
        "Relay throughput, one gevent worker, N streams at once (the worker's CPU from /proc/<pid>/stat):",
        "",
        md_table(
            ["load", "streams", "upstream directive", "text events", "wall s", "events/s", "worker CPU %",
             "worker CPU µs/token", "unfinished"],
            [
                [name, r["streams"], f"`{directive}`", r["texts"], f"{r['wall']:.2f}",
                 f"{r['texts'] / r['wall']:.0f}", f"{100 * r['worker_cpu'] / r['wall']:.0f}",
                 f"{1e6 * r['worker_cpu'] / max(r['texts'], 1):.0f}", r["unfinished"]]
                for name, directive, r in results
            ],
        ),
        "",
        "The fake upstream and the reading client share the other core (this process: "
        + ", ".join(f"{r['bench_cpu']:.1f} s" for _, _, r in results) + " CPU for the loads above).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.update_doc:
        update_doc_section(ROOT / "docs" / "benchmarks.md", "throughput", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
