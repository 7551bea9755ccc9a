"""Lifecycle latencies: cancel → `cancelled` event, and client disconnect → upstream closed.

    .venv/bin/python -m bench.lifecycle [--tries 200] [--grace 0.5] [--update-doc]

Starts the fake upstream in this process (a `TimedFake`: the fake, plus timestamps of when its
handler thread saw each streaming response end) and one Sluice (`gunicorn -k gevent -w 1`), then:

1. cancel, one try at a time: open `GET /stream` on a raw socket, read up to the first `text`
   event, then (on a connection opened beforehand) send `POST /cancel` and time, from just
   before `sendall()`: the `cancelled` event arriving on the SSE socket, the 200 answer to the
   cancel, and the fake seeing its connection closed. Stalled upstream (`stall_after=1`) and
   fast-streaming upstream (`tokens=100000 pace=0.001`).
2. disconnect: the client closes its socket (clean: drain, FIN; or RST: SO_LINGER 0) and we time
   until the fake sees the upstream connection closed. That includes the disconnect grace
   (`SLUICE_DISCONNECT_GRACE_SECONDS`), reported raw and minus the grace. These tries overlap
   (`--concurrency`) since each one waits out the grace; stalled streams cost the worker nothing
   while they wait, fast-streaming ones do, so those run with fewer at a time.

Every scenario stops at `--tries` or `--max-seconds`, whichever comes first.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    ROOT,
    RawResponse,
    RawSSE,
    Summary,
    TimedFake,
    connect,
    cpu_seconds,
    host_port,
    http_request,
    machine,
    machine_line,
    md_table,
    ms,
    new_key,
    stream_path,
    summarize,
    tune_interpreter,
    update_doc_section,
    worker_pids,
)
from tests.conftest import sluice_env
from tests.support.servers import Gunicorn

UPSTREAMS = {
    "stalled": "tokens=50 stall_after=1",
    "streaming": "tokens=100000 pace=0.001",
}
CANCEL_TARGET = 0.050
DISCONNECT_TARGET = 0.250  # plus the grace


@dataclass
class Scenario:
    name: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    wall: float = 0.0

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)


def is_text(ev: Any) -> bool:
    return bool(ev.type == "text")


# -- 1. cancel ------------------------------------------------------------------------------


def cancel_try(server: Gunicorn, fake: TimedFake, directive: str) -> dict[str, Any]:
    key = new_key()
    sse = RawSSE(server.url, stream_path(key, directive))
    cancel_sock: socket.socket | None = None
    try:
        sse.until(is_text, 10)
        up = fake.conn(key)
        host, port = host_port(server.url)
        request = http_request("POST", "/cancel", f"{host}:{port}", json.dumps({"stream_id": key}).encode())
        cancel_sock = connect(server.url)
        answer = RawResponse()
        t_event = t_answer = None
        cancelled: dict[str, Any] | None = None
        texts_after = 0
        sel = selectors.DefaultSelector()
        sel.register(sse.sock, selectors.EVENT_READ, "sse")
        sel.register(cancel_sock, selectors.EVENT_READ, "cancel")

        t0 = time.monotonic()
        cancel_sock.sendall(request)
        deadline = t0 + 10
        while (t_event is None or t_answer is None) and time.monotonic() < deadline:
            for sk, _ in sel.select(max(deadline - time.monotonic(), 0)):
                if sk.data == "sse":
                    for ev in sse.recv(0):
                        kind = ev.type
                        if kind == "text":
                            texts_after += 1
                        elif kind in ("cancelled", "done", "error") and t_event is None:
                            t_event = ev.at
                            cancelled = ev.json
                    if sse.eof and t_event is None:
                        raise EOFError("SSE stream ended before a terminal event")
                else:
                    data = cancel_sock.recv(65536)
                    at = time.monotonic()
                    if not data:
                        raise EOFError("cancel connection closed without an answer")
                    if answer.feed(data):
                        t_answer = at
                        sel.unregister(cancel_sock)
        sel.close()
        if t_event is None or t_answer is None:
            raise TimeoutError("no cancelled event / cancel answer within 10 s")
        if not up.done.wait(10):
            raise TimeoutError("upstream not closed 10 s after the cancel")
        assert up.closed is not None
        # The rest of the stream: [DONE], then the server ends the response.
        if not any(e.data == "[DONE]" for e in sse.events):
            sse.until("[DONE]", 5)
        body = json.loads(answer.body or b"{}")
        ok = (
            cancelled is not None
            and cancelled.get("type") == "cancelled"
            and cancelled.get("reason") == "user"
            and answer.status == 200
            and body.get("status") == "cancelled"
        )
        return {
            "ok": ok,
            "detail": f"terminal={cancelled} answer={answer.status} {body}",
            "event": t_event - t0,
            "answer": t_answer - t0,
            "upstream": up.closed - t0,
            "texts_after": texts_after,
        }
    finally:
        sse.close()
        if cancel_sock is not None:
            cancel_sock.close()
        fake.forget(key)


def run_cancel(server: Gunicorn, fake: TimedFake, upstream: str, tries: int, max_seconds: float) -> Scenario:
    sc = Scenario(f"cancel/{upstream}")
    start = time.monotonic()
    for _ in range(tries):
        if time.monotonic() - start > max_seconds:
            break
        try:
            r = cancel_try(server, fake, UPSTREAMS[upstream])
        except Exception as exc:  # a failed try is reported, not hidden
            sc.failures.append(f"{type(exc).__name__}: {exc}")
            continue
        if not r["ok"]:
            sc.failures.append(r["detail"])
            continue
        sc.add("event", r["event"])
        sc.add("answer", r["answer"])
        sc.add("upstream", r["upstream"])
        sc.add("texts_after", r["texts_after"])
    sc.wall = time.monotonic() - start
    return sc


# -- 2. disconnect --------------------------------------------------------------------------


def disconnect_try(server: Gunicorn, fake: TimedFake, directive: str, how: str, grace: float) -> float:
    key = new_key()
    sse = RawSSE(server.url, stream_path(key, directive))
    try:
        sse.until(is_text, 10)
        up = fake.conn(key)
        if how == "rst":
            sse.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t0 = time.monotonic()
            sse.sock.close()
        else:
            # Unread bytes at close() make Linux send a RST, not a FIN: drain them first, and
            # send the FIN with shutdown() so that bytes still in flight cannot turn it into one.
            sse.drain()
            t0 = time.monotonic()
            sse.sock.shutdown(socket.SHUT_WR)
            sse.sock.close()
        if not up.done.wait(grace + 10):
            raise TimeoutError(f"upstream still open {grace + 10:g} s after the client closed")
        assert up.closed is not None
        return up.closed - t0
    finally:
        sse.close()
        fake.forget(key)


def run_disconnect(
    server: Gunicorn, fake: TimedFake, upstream: str, how: str, tries: int, max_seconds: float,
    concurrency: int, grace: float,
) -> Scenario:
    sc = Scenario(f"disconnect-{how}/{upstream}")
    sc.extra["concurrency"] = concurrency
    start = time.monotonic()
    lock = threading.Lock()

    def one(_: int) -> None:
        if time.monotonic() - start > max_seconds:
            return
        try:
            value = disconnect_try(server, fake, UPSTREAMS[upstream], how, grace)
        except Exception as exc:
            with lock:
                sc.failures.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            sc.add("upstream", value)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(tries)))
    sc.wall = time.monotonic() - start
    return sc


# -- report ---------------------------------------------------------------------------------


def verdict(s: Summary, limit: float) -> str:
    if s.n == 0:
        return "no data"
    return "**pass**" if s.p99 < limit else "**FAIL**"


def report(scenarios: list[Scenario], args: argparse.Namespace, info: dict[str, str], env: dict[str, str],
           worker_cpu: float | None) -> str:
    header = ["scenario", "upstream", "measured (from → to)", "n", "p50 ms", "p90 ms", "p99 ms", "max ms",
              "target (p99)", "result"]
    rows = []
    grace = args.grace
    for sc in scenarios:
        kind, upstream = sc.name.split("/")
        if kind == "cancel":
            for metric, what, limit in (
                ("event", "`POST /cancel` sent → `cancelled` event received", CANCEL_TARGET),
                ("answer", "`POST /cancel` sent → its 200 answer received", None),
                ("upstream", "`POST /cancel` sent → upstream connection closed", None),
            ):
                s = summarize(sc.samples.get(metric, []))
                rows.append([
                    "cancel", upstream, what, s.n, ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max),
                    f"< {ms(limit)} ms" if limit else "—", verdict(s, limit) if limit else "—",
                ])
        else:
            how = kind.split("-", 1)[1]
            label = "clean close (FIN)" if how == "clean" else "reset (RST)"
            raw = sc.samples.get("upstream", [])
            s = summarize(raw)
            net = summarize([v - grace for v in raw])
            target = how == "clean"
            limit_ms = ms(DISCONNECT_TARGET + grace)
            rows.append([
                f"disconnect, {label}", upstream, "client closed → upstream closed (raw)", s.n,
                ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max),
                f"< {limit_ms} ms" if target else f"(no target; < {limit_ms})",
                verdict(s, DISCONNECT_TARGET + grace) if target else verdict(s, DISCONNECT_TARGET + grace).strip("*"),
            ])
            rows.append([
                f"disconnect, {label}", upstream, f"… minus the grace ({grace * 1000:g} ms)", net.n,
                ms(net.p50), ms(net.p90), ms(net.p99), ms(net.max),
                f"< {ms(DISCONNECT_TARGET)} ms" if target else "—", verdict(net, DISCONNECT_TARGET) if target else "—",
            ])
    lines = [
        "Command: `" + args.command + "`",
        "",
        "Machine: " + machine_line(info),
        "",
        "Sluice: one `gunicorn -k gevent -w 1 wsgi:app`, Anthropic provider → in-process fake upstream; "
        + ", ".join(f"`{k}={env[k]}`" for k in sorted(env) if k.startswith("SLUICE_")) + ".",
        "",
        md_table(header, rows),
        "",
    ]
    notes = []
    for sc in scenarios:
        tail = summarize(sc.samples.get("texts_after", []))
        done = max((len(v) for v in sc.samples.values()), default=0)
        line = f"- `{sc.name}`: {done} tries in {sc.wall:.1f} s"
        if "concurrency" in sc.extra:
            line += f", {sc.extra['concurrency']} at a time"
        if tail.n and sc.name.endswith("streaming"):
            line += f"; `text` events received after the cancel was sent: p50 {tail.p50:g}, max {tail.max:g}"
        if sc.failures:
            line += f"; **{len(sc.failures)} failed tries**, first: {sc.failures[0][:300]}"
        notes.append(line)
    if worker_cpu is not None:
        notes.append(f"- worker CPU over the whole run: {worker_cpu:.1f} s")
    lines += notes
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lifecycle", description=__doc__.split("\n")[0])
    parser.add_argument("--tries", type=int, default=200, help="tries per scenario (default 200)")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="time limit per scenario (default 90)")
    parser.add_argument("--grace", type=float, default=0.5, help="SLUICE_DISCONNECT_GRACE_SECONDS (default 0.5)")
    parser.add_argument("--concurrency", type=int, default=8, help="overlapping disconnect tries, stalled (default 8)")
    parser.add_argument("--streaming-concurrency", type=int, default=2,
                        help="overlapping disconnect tries, fast-streaming upstream (default 2)")
    parser.add_argument("--no-rst", action="store_true", help="skip the RST disconnect scenarios")
    parser.add_argument("--only", choices=["cancel", "disconnect"], help="run one half only")
    parser.add_argument("--update-doc", action="store_true", help="write the results into docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="write the raw samples (seconds) to this file")
    args = parser.parse_args(argv)
    args.command = ".venv/bin/python -m bench.lifecycle " + " ".join(sys.argv[1:] if argv is None else argv)
    args.command = args.command.strip()
    tune_interpreter()
    info = machine()

    fake = TimedFake().start()
    env = sluice_env(
        fake,
        SLUICE_DISCONNECT_GRACE_SECONDS=f"{args.grace:g}",
        SLUICE_HEARTBEAT_SECONDS="15",
        SLUICE_MAX_STREAMS_PER_CLIENT="1000", SLUICE_MAX_RESPONSES_PER_CLIENT="1000",
        SLUICE_FIRST_TOKEN_TIMEOUT="60",
        SLUICE_IDLE_TIMEOUT="60",
    )
    scenarios: list[Scenario] = []
    worker_cpu = None
    try:
        with Gunicorn(env, workers=1) as server:
            assert server.proc is not None
            workers = worker_pids(server.proc.pid)
            cpu0 = sum(cpu_seconds(p) for p in workers)
            print(f"sluice {server.url} (workers {workers}), fake upstream {fake.url}", file=sys.stderr)
            # Warm-up: imports, the SDK client, connection pools.
            for _ in range(5):
                cancel_try(server, fake, UPSTREAMS["stalled"])
                cancel_try(server, fake, UPSTREAMS["streaming"])
            if args.only in (None, "cancel"):
                for upstream in UPSTREAMS:
                    print(f"cancel/{upstream} ...", file=sys.stderr)
                    scenarios.append(run_cancel(server, fake, upstream, args.tries, args.max_seconds))
            if args.only in (None, "disconnect"):
                for how in ("clean",) if args.no_rst else ("clean", "rst"):
                    for upstream in UPSTREAMS:
                        conc = args.concurrency if upstream == "stalled" else args.streaming_concurrency
                        print(f"disconnect-{how}/{upstream} ...", file=sys.stderr)
                        scenarios.append(run_disconnect(server, fake, upstream, how, args.tries, args.max_seconds,
                                                        conc, args.grace))
            worker_cpu = sum(cpu_seconds(p) for p in workers) - cpu0
    finally:
        fake.stop()

    text = report(scenarios, args, info, env, worker_cpu)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({sc.name: sc.samples for sc in scenarios}, indent=1))
    if args.update_doc:
        update_doc_section(ROOT / "docs" / "benchmarks.md", "lifecycle", text)
    failed = sum(len(sc.failures) for sc in scenarios)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
