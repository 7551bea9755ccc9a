"""Where a Sluice worker's memory goes under bench.compare's load, read from inside the worker.

    .venv/bin/python -m bench.worker_memory [--steps 100,300] [--env NAME=VALUE ...]

Sluice as `bench.compare` runs it (`gunicorn -c deploy/gunicorn.conf.py`, its environment, the
same fake upstream, load generator, cores, warm-up and steps), with one extra route
(bench._worker_memory_wsgi) read at the idle reading and at the two moments `bench.compare`
reads RSS: the end of the ramp and the end of the window. Per step it prints the RSS per open
stream, as `bench.compare` does, and where the growth since the idle reading is, per open
stream: glibc's main heap (in use, free), pymalloc's blocks in use, other anonymous memory
(pymalloc arenas' free space, CPython's per-greenlet data-stack chunks), greenlets' saved C
stacks, the live journals. `--env` passes more environment to Sluice (e.g. GLIBC_TUNABLES=...).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.compare import LOAD_CORE, SERVER_CORE, Fake, sleep_until
from bench.servers import BIN, SLUICE_OVERRIDES, Running, Spec, pinned, raise_fd_limit, rss_bytes
from tests.support.servers import ROOT


def read(url: str) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", "/__bench/memory")
        return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]
    finally:
        conn.close()


def step(server: Running, fake: Fake, n: int, ramp: float, window: float, tokens: int) -> tuple[Any, ...]:
    fake.wait_idle()
    t0 = time.monotonic() + 0.5
    argv = [sys.executable, "-m", "bench.loadgen", "--url", server.url, "--streams", str(n), "--start", repr(t0),
            "--ramp", str(ramp), "--window", str(window), "--tokens", str(tokens), "--cancels", "0"]
    gen = subprocess.Popen(pinned(LOAD_CORE, argv), cwd=ROOT, stdout=subprocess.PIPE, text=True,
                           preexec_fn=raise_fd_limit)
    sleep_until(t0 + ramp)
    rss0, at_ramp = rss_bytes(server.pid), read(server.url)
    sleep_until(t0 + ramp + window)
    rss1, at_end = rss_bytes(server.pid), read(server.url)
    out, _ = gen.communicate(timeout=window + 60)
    return rss0, at_ramp, rss1, at_end, json.loads(out)


def show(label: str, rss: int, now: dict[str, Any], idle_rss: int, idle: dict[str, Any], n: int) -> None:
    def kb(value: float) -> str:
        return f"{value / n / 1024:5.1f}"

    anon = (now["smaps_kib"].get("anonymous", 0) - idle["smaps_kib"].get("anonymous", 0)) * 1024
    pym = now["pymalloc_in_use"] - idle["pymalloc_in_use"]
    print(f"  {label}: RSS {kb(rss - idle_rss)} KB per open stream = glibc heap in use "
          f"{kb(now['glibc_in_use'] - idle['glibc_in_use'])} + free {kb(now['glibc_free'] - idle['glibc_free'])};"
          f" pymalloc in use {kb(pym)}; other anonymous {kb(anon - pym)}")
    print(f"      of which: greenlet stacks saved {kb(now['greenlet_stacks_saved'] - idle['greenlet_stacks_saved'])},"
          f" live journals {kb(now['live_journal_bytes'])} ({now['live_journals']} live,"
          f" {now['live_journal_events'] / max(now['live_journals'], 1):.0f} events each),"
          f" sealed journals {kb(now['sealed_journal_bytes'] - idle['sealed_journal_bytes'])};"
          f" greenlets {now['greenlets']}; objects {now['objects']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="100,300")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    env = dict(SLUICE_OVERRIDES)
    for setting in args.env:
        name, _, value = setting.partition("=")
        env[name] = value
    spec = Spec("sluice", "Sluice + /__bench/memory", lambda port: [
        str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "-b", f"127.0.0.1:{port}",
        "bench._worker_memory_wsgi:app"], gunicorn=True, env=env)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CORE})
    fake = Fake(LOAD_CORE)
    server = Running(spec, fake.url, SERVER_CORE)
    try:
        server.wait_ready()
        step(server, fake, 10, 0.5, 1.5, 20)  # warm-up, as bench.compare's
        fake.wait_idle()
        time.sleep(1.0)
        idle_rss, idle = rss_bytes(server.pid), read(server.url)
        print(f"idle: RSS {idle_rss / 2**20:.1f} MiB, {idle['smaps_kib']}")
        for n in (int(s) for s in args.steps.split(",")):
            rss0, at_ramp, rss1, at_end, load = step(server, fake, n, 10.0, 10.0, 200)
            print(f"N={n}: {load['tokens_window'] / 10:.0f} tokens/s delivered, {load['errors']} errors, "
                  f"{load['answering_at_end']} answering at the end, {load['finished']} finished")
            show("ramp end  ", rss0, at_ramp, idle_rss, idle, n)
            show("window end", rss1, at_end, idle_rss, idle, n)
    finally:
        server.stop()
        fake.stop()


if __name__ == "__main__":
    main()
