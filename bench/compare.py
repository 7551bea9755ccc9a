"""Sluice side by side with the designs it should beat: one command, same load, one core each.

    .venv/bin/python -m bench.compare [--quick] [--servers sluice,floor,...] [--update-doc] [--json out.json]

For each server (the FastAPI peer, a naive Flask + gevent + SDK relay, the minimal gevent
floor, Sluice; see `bench/peers/`), started alone and pinned to core 0, with the fake
upstream (`bench.stampfake`) and the load generator (`bench.loadgen`) pinned to core 1:
steps of N concurrent streams × 200 tokens at 20 tokens/s, N going up until a step fails to
hold (relay p99 < 50 ms, TTFT p99 < 500 ms, no errors) once N is past the reference (300):
at a clear failure, or at a second one in a row.
Per step: relay latency, TTFT and TTFT added, the server's CPU per relayed token (its
/proc CPU time over the window ÷ tokens received), memory per open stream ((RSS with N open
− idle RSS) / N, RSS read at the end of the ramp, before any stream has finished; and again at
the end of the window, as an operator sees it: N streams running and every stream that finished
since the start, in this step and the earlier ones, kept as the server keeps them) and, for
Sluice, cancel latency.
The full run takes about 8 minutes on 2 cores; `--quick` about 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from bench._common import ROOT, cpu_seconds, machine, update_doc_section
from bench.compare_report import render
from bench.servers import SPECS, Running, healthy, pinned, raise_fd_limit, rss_bytes, sluice_settings

SERVER_CORE, LOAD_CORE = 0, 1
FULL = {"steps": [100, 300, 500, 750, 1000], "ramp": 10.0, "window": 10.0, "cancels": 20}
QUICK = {"steps": [30, 100], "ramp": 3.0, "window": 4.0, "cancels": 5}
PEER_PACKAGES = ("fastapi", "uvicorn")


def ensure_peer_packages(wanted: list[str]) -> None:
    """Install the `bench` extra's pins (FastAPI, uvicorn) when the FastAPI peer is wanted and they are missing."""
    if "fastapi" not in wanted or all(importlib.util.find_spec(p) for p in PEER_PACKAGES):
        return
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    print(f"[bench] installing the bench extra: {' '.join(pins)}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins],
                   check=True)


class Fake:
    """`bench.stampfake` in its own process on the load core."""

    def __init__(self, core: int | None) -> None:
        self.proc = subprocess.Popen(
            pinned(core, [sys.executable, "-m", "bench.stampfake"]), cwd=ROOT, stdout=subprocess.PIPE, text=True,
            preexec_fn=raise_fd_limit, start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError("the fake upstream did not start")

    def open_connections(self) -> int:
        import http.client

        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", "/_fake/stats")
            return int(json.loads(conn.getresponse().read())["open_connections"])
        finally:
            conn.close()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.open_connections() == 0:
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()


def sleep_until(t: float) -> None:
    time.sleep(max(t - time.monotonic(), 0))


def core_busy_seconds(core: int | None) -> float:
    """CPU time spent on `core` by every process (/proc/stat; 0 without pinning)."""
    if core is None:
        return 0.0
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return 0.0


def run_step(server: Running, fake: Fake, n: int, cfg: dict[str, Any], cores: tuple[int | None, int | None],
             idle_rss: int) -> dict[str, Any]:
    """One step of N streams; the load generator's figures plus the server-side ones."""
    if not fake.wait_idle():
        print(f"[bench]   upstream still has {fake.open_connections()} open streams", file=sys.stderr)
    t0 = time.monotonic() + 0.5
    w0, w1 = t0 + cfg["ramp"], t0 + cfg["ramp"] + cfg["window"]
    argv = [sys.executable, "-m", "bench.loadgen", "--url", server.url, "--streams", str(n), "--start", repr(t0),
            "--ramp", str(cfg["ramp"]), "--window", str(cfg["window"]), "--tokens", str(cfg["tokens"]),
            "--cancels", str(cfg["cancels"] if server.spec.cancels else 0)]
    gen = subprocess.Popen(pinned(cores[1], argv), cwd=ROOT, stdout=subprocess.PIPE, text=True,
                           preexec_fn=raise_fd_limit)
    sleep_until(w0)
    rss = rss_bytes(server.pid)  # N streams open, none finished yet (each lasts ~ the ramp)
    cpu0, fake0, core0 = cpu_seconds(server.pid), cpu_seconds(fake.proc.pid), core_busy_seconds(cores[0])
    sleep_until(w1)
    cpu1, fake1, core1 = cpu_seconds(server.pid), cpu_seconds(fake.proc.pid), core_busy_seconds(cores[0])
    # N streams still open, and what the server keeps of every stream that finished so far.
    rss_end = rss_bytes(server.pid)
    out, _ = gen.communicate(timeout=cfg["window"] + 60)
    result: dict[str, Any] = json.loads(out)
    tokens = result["tokens_window"]
    result.update(
        server_cpu_s=cpu1 - cpu0,
        cpu_us_per_token=1e6 * (cpu1 - cpu0) / tokens if tokens else None,
        delivered_tps=tokens / cfg["window"],
        rss=rss,
        idle_rss=idle_rss,
        kb_per_stream=(rss - idle_rss) / n / 1024,
        rss_end=rss_end,
        kb_per_stream_end=(rss_end - idle_rss) / n / 1024,
        load_core_cpu=(fake1 - fake0 + result["loadgen_cpu_s"]) / cfg["window"],
        # what other processes (other jobs on the machine) took of the server's core meanwhile
        others_on_server_core=max(core1 - core0 - (cpu1 - cpu0), 0.0) / cfg["window"] if cores[0] is not None else None,
    )
    lat, ttft = result["latency"]["p99"], result["ttft"]["p99"]
    result["holds"] = bool(
        lat is not None and lat < 0.050 and ttft is not None and ttft < 0.500 and result["errors"] == 0
    )
    return result


def clearly_fails(step: dict[str, Any]) -> bool:
    """Far from holding: errors, relay p99 ≥ 100 ms, TTFT p99 ≥ 1 s, or under 80 % of the offered tokens."""
    lat, ttft = step["latency"]["p99"], step["ttft"]["p99"]
    return bool(
        step["errors"] or lat is None or lat >= 0.100 or ttft is None or ttft >= 1.0
        or step["delivered_tps"] < 0.8 * step["offered_tps"]
    )


def measure(key: str, fake: Fake, cfg: dict[str, Any], cores: tuple[int | None, int | None]) -> dict[str, Any]:
    """Start one server, warm it, take its idle RSS, run the steps, stop it."""
    spec = SPECS[key]
    server = Running(spec, fake.url, cores[0])
    steps: list[dict[str, Any]] = []
    try:
        server.wait_ready()
        warm = {**cfg, "ramp": 0.5, "window": 1.5, "tokens": 20, "cancels": 2}
        run_step(server, fake, 10, warm, cores, 0)  # imports, pools, first-request paths
        fake.wait_idle()
        time.sleep(1.0)
        idle = rss_bytes(server.pid)
        failed = 0
        for n in cfg["steps"]:
            print(f"[bench] {key}: {n} streams ...", file=sys.stderr, flush=True)
            step = run_step(server, fake, n, cfg, cores, idle)
            step["n"] = n
            steps.append(step)
            p99 = step["latency"]["p99"]
            print(f"[bench]   relay p99 {p99 * 1000 if p99 is not None else float('nan'):.1f} ms, "
                  f"{step['delivered_tps']:.0f} tokens/s, {step['errors']} errors, "
                  f"{'holds' if step['holds'] else 'does not hold'}", file=sys.stderr, flush=True)
            failed = failed + 1 if not step["holds"] else 0
            # Past the reference N, stop at a clear failure, or at a second failure in a row (one
            # narrow miss on a busy machine is noise, and the next step may still hold).
            if n >= cfg["reference"] and (failed >= 2 or clearly_fails(step)):
                break
            if not healthy(server.url):
                print(f"[bench]   {key} no longer answers /healthz", file=sys.stderr)
                break
    finally:
        server.stop()
    return {"key": key, "label": spec.label, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke check: 2 small steps, short windows")
    parser.add_argument("--servers", default=",".join(SPECS), help=f"comma-separated, of {','.join(SPECS)}")
    parser.add_argument("--steps", help="comma-separated N (default 100,300,500,750,1000; quick: 30,100)")
    parser.add_argument("--reference", type=int, help="N at which servers are compared (default 300, else the last)")
    parser.add_argument("--ramp", type=float, help="seconds over which a step's streams start (default 10)")
    parser.add_argument("--window", type=float, help="seconds measured after the ramp (default 10)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per stream, at 20 tokens/s (default 200)")
    parser.add_argument("--cancels", type=int, help="cancel probes per Sluice step (default 20)")
    parser.add_argument("--sluice-env", action="append", default=[], metavar="NAME=VALUE",
                        help="one more SLUICE_* setting for Sluice (SLUICE_REPLAY_MAX_BYTES=0: keep no finished one)")
    parser.add_argument("--update-doc", action="store_true", help="write the results into docs/benchmarks.md")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    command = (".venv/bin/python -m bench.compare " + " ".join(sys.argv[1:] if argv is None else argv)).strip()

    cfg: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for name in ("ramp", "window", "cancels"):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    if args.steps:
        cfg["steps"] = [int(s) for s in args.steps.split(",")]
    cfg["tokens"] = args.tokens
    cfg["reference"] = args.reference or (300 if 300 in cfg["steps"] else cfg["steps"][-1])
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = set(keys) - set(SPECS)
    if unknown:
        parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    for setting in args.sluice_env:
        name, sep, value = setting.partition("=")
        if not sep or not name.startswith("SLUICE_"):
            parser.error(f"--sluice-env takes SLUICE_NAME=VALUE, got {setting!r}")
        SPECS["sluice"].env[name] = value
    ensure_peer_packages(keys)
    cores: tuple[int | None, int | None] = (SERVER_CORE, LOAD_CORE) if (os.cpu_count() or 1) >= 2 else (None, None)
    if cores[1] is not None:
        os.sched_setaffinity(0, {cores[1]})  # this process only sleeps and reads /proc, on the load core

    info = machine()
    load_before = os.getloadavg()
    started = time.monotonic()
    fake = Fake(cores[1])
    try:
        results = [measure(key, fake, cfg, cores) for key in keys]
    finally:
        fake.stop()
    run = {
        "command": command, "machine": info, "config": cfg, "sluice_env": sluice_settings(),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "seconds": time.monotonic() - started,
        "servers": results,
    }
    text = render(run)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(run, f, indent=1)
    if args.update_doc:
        update_doc_section(ROOT / "docs" / "benchmarks.md", "compare", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
