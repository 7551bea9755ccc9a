"""Issue 19, item 1: a reload stalls no request. Two workers under deploy/gunicorn.conf.py that
import the Anthropic SDK when they boot (seconds of CPU), a request every 100 ms, one reload, by
`kill -HUP` and by the systemd unit's own ExecReload command line: no request waits for a new
worker to boot, because the old workers accept until one of the new generation has booted.

The bound asserted is loose (the machine running the tests is shared and loaded): it catches the
multi-second stall of a reload that waits for a boot, not a latency target. The figure measured
is printed (`-s`)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import requests

from tests.support.servers import ROOT, Gunicorn, base_env
from tests.support.sse import open_stream

from .conftest import GUNICORN_CONF, fake_env
from .test_reload_under_load import answers_ok, workers_of

pytestmark = pytest.mark.timeout(120)

UNIT = ROOT / "deploy" / "systemd" / "sluice.service"
INTERVAL = 0.1
# Loose: a new worker's boot is over 3 s of CPU (much more on a loaded machine); a request served
# by an old worker takes milliseconds.
WORST_HEADERS = 2.5


def exec_reload(master: int) -> None:
    """What `systemctl reload sluice` runs: the unit's ExecReload lines one after another (as
    systemd does), with $MAINPID the master and the unit's /srv/sluice checkout this one."""
    lines = re.findall(r"^ExecReload=(.*)$", UNIT.read_text(), re.M)
    assert lines
    for line in lines:
        argv = [a.replace("$MAINPID", str(master)).replace("${MAINPID}", str(master))
                .replace("/srv/sluice/.venv/bin/python", sys.executable) for a in shlex.split(line)]
        subprocess.run(argv, check=True, timeout=60, cwd=ROOT)


def kill_hup(master: int) -> None:
    os.kill(master, signal.SIGHUP)


def timed_request(url: str, i: int) -> tuple[float, str | None]:
    """Seconds to the response headers of one short stream, and what went wrong with it."""
    started = time.monotonic()
    try:
        stream = open_stream(url + "/stream", params={"prompt": f"r{i} [fake tokens=3 pace=0.01]"}, timeout=30)
    except requests.RequestException as exc:
        return time.monotonic() - started, f"request failed: {exc!r}"
    took = time.monotonic() - started
    return took, answers_ok(stream)


@pytest.mark.parametrize("reload", [kill_hup, exec_reload], ids=["kill-HUP", "systemctl-reload"])
def test_a_reload_stalls_no_request(fake, reload) -> None:  # type: ignore[no-untyped-def]
    env = base_env(**fake_env(fake, SLUICE_MAX_STREAMS_PER_CLIENT="500"))
    with Gunicorn(env, workers=2, config=GUNICORN_CONF) as server:
        assert server.proc is not None
        master = server.proc.pid
        deadline = time.monotonic() + 60
        while len(workers_of(master)) != 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for i in range(4):  # both workers answer
            assert timed_request(server.url, i)[1] is None

        results: list[tuple[float, Future[tuple[float, str | None]]]] = []
        stop = threading.Event()
        with ThreadPoolExecutor(64) as pool:

            def send() -> None:
                i = 0
                while not stop.is_set():
                    results.append((time.monotonic(), pool.submit(timed_request, server.url, 100 + i)))
                    i += 1
                    stop.wait(INTERVAL)

            sender = threading.Thread(target=send)
            sender.start()
            try:
                time.sleep(1)
                before = workers_of(master)
                hup = time.monotonic()
                reload(master)
                # Over when the old workers have left and two new ones run; then a little more.
                deadline = time.monotonic() + 60
                while not (workers_of(master).isdisjoint(before) and len(workers_of(master)) == 2):
                    assert time.monotonic() < deadline, "the old workers did not leave"
                    time.sleep(0.1)
                # ... and a request sent after that has been answered (a new worker serves).
                left = len(results)
                while not any(f.done() for _, f in results[left:]):
                    assert time.monotonic() < deadline, "no request answered after the reload"
                    time.sleep(0.05)
                time.sleep(1)
            finally:
                stop.set()
                sender.join()
            outcomes = [(sent, f.result()) for sent, f in results]
    during = [(sent - hup, took, error) for sent, (took, error) in outcomes if sent >= hup]
    failures = [e for _, _, e in during if e]
    worst = max(took for _, took, _ in during)
    slowest = sorted(during, key=lambda d: -d[1])[:5]  # (sent after the reload, took, error)
    print(f"\n{reload.__name__}: {len(during)} requests after the reload, worst time to headers "
          f"{worst:.3f} s; slowest: {slowest}")
    assert failures == [], failures[:5]
    assert worst <= WORST_HEADERS, f"a request waited {worst:.1f} s during the reload: {slowest}"
