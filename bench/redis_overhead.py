"""What the Redis backend costs: worker CPU per relayed token, and cancel latency.

    .venv/bin/python bench/redis_overhead.py [--streams 20 --tokens 400 --cancels 40]
                                             [--backends memory,redis,sentinel,cluster]

Runs Sluice under real gunicorn (gevent workers) against the in-process fake upstream, for the
in-process backend, the Redis backend (a private redis-server on a free port), Sentinel (a
private primary, replica and three redis-sentinels: tests/redis/sentinel.py) and a Redis Cluster
(three primaries and a replica each: tests/redis/cluster_support.py), with 1 and 4 workers, and
prints a Markdown table:

- CPU per token: user+system CPU of every worker process (/proc/<pid>/stat) over a run of
  `--streams` concurrent streams of `--tokens` tokens, divided by the text events received.
- Cancel latency: `--cancels` stalled streams, one at a time; each is cancelled by a POST /cancel
  on a fresh connection (so, with several workers, usually another worker), timed from the request
  being sent to the `cancelled` event arriving on the stream. Without Redis a cancel that lands
  on another worker does not reach the generation: the table counts those.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import sluice_env  # noqa: E402
from tests.fake_upstream import FakeUpstream  # noqa: E402
from tests.support.servers import Gunicorn, free_port  # noqa: E402
from tests.support.sse import open_stream  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def worker_pids(master: int) -> list[int]:
    with open(f"/proc/{master}/task/{master}/children") as f:
        return [int(p) for p in f.read().split()]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_cluster() -> tuple[object, str]:
    from tests.redis.cluster_support import RedisClusterProcess

    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    cluster = RedisClusterProcess(binary, cli).start()
    return cluster, cluster.url


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_tokens(url: str, streams: int, tokens: int) -> int:
    counts = [0] * streams

    def one(i: int) -> None:
        s = open_stream(url + "/stream", params={"prompt": f"b{i} [fake tokens={tokens} pace=0.002]"}, timeout=60)
        counts[i] = sum(1 for e in s.rest() if e.data != "[DONE]" and e.json["type"] == "text")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def run_cancels(url: str, count: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    missed = 0
    for i in range(count):
        s = open_stream(url + "/stream", params={"prompt": f"c{i} [fake stall_after=1]"}, timeout=10)
        events = iter(s)
        next(e for e in events if e.type == "text")
        arrived: dict[str, float] = {}

        def read(events=events, arrived=arrived) -> None:  # noqa: ANN001 - bound per stream
            # The stream is read in its own thread: the event may arrive before the 200 does.
            try:
                ev = next(e for e in events if e.type in ("cancelled", "done", "error"))
                arrived[ev.type] = ev.at
            except Exception:  # noqa: BLE001 - closed under it (a cancel that missed)
                pass

        reader = threading.Thread(target=read)
        reader.start()
        t0 = time.monotonic()
        resp = requests.post(url + "/cancel", json={"stream_id": s.stream_id}, timeout=10)
        if resp.json().get("status") != "cancelled":
            missed += 1  # landed on a worker that does not hold it (no Redis)
            s.close()  # the disconnect grace ends it
            reader.join(5)
            continue
        reader.join(10)
        latencies.append((arrived["cancelled"] - t0) * 1000)
        s.close()
    return latencies, missed


def measure(backend: str, workers: int, fake: FakeUpstream, args: argparse.Namespace) -> dict[str, object]:
    redis_proc: subprocess.Popen[bytes] | None = None
    cluster: object | None = None
    env = sluice_env(fake, SLUICE_MAX_STREAMS_PER_CLIENT="1000",
                     SLUICE_MAX_RESPONSES_PER_CLIENT="1000", SLUICE_DISCONNECT_GRACE_SECONDS="0.5")
    topology = None
    if backend == "redis":
        redis_proc, env["SLUICE_REDIS_URL"] = start_redis()
    elif backend == "cluster":
        cluster, env["SLUICE_REDIS_URL"] = start_cluster()
    elif backend == "sentinel":
        from tests.redis.sentinel import SentinelTopology

        topology = SentinelTopology(Path(tempfile.mkdtemp(prefix="sluice-bench-"))).start()
        env["SLUICE_REDIS_URL"] = topology.url
    server = Gunicorn(env, workers=workers).start()
    try:
        assert server.proc is not None
        for _ in range(workers * 4):  # warm every worker (imports, SDK clients, Redis start)
            open_stream(server.url + "/stream", params={"prompt": "w [fake tokens=2]"}).rest()
        pids = worker_pids(server.proc.pid)
        before = cpu_seconds(pids)
        relayed = run_tokens(server.url, args.streams, args.tokens)
        cpu = cpu_seconds(pids) - before
        latencies, missed = run_cancels(server.url, args.cancels)
        fake.wait_closed(10)
    finally:
        server.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        if cluster is not None:
            cluster.stop()  # type: ignore[attr-defined]
        if topology is not None:
            topology.stop()
    return {
        "backend": {"redis": "Redis", "sentinel": "Redis + Sentinel", "cluster": "Redis Cluster (3 primaries)"}.get(
            backend, "in-process"),
        "workers": workers,
        "tokens": relayed,
        "us_per_token": cpu / max(relayed, 1) * 1e6,
        "p50": statistics.median(latencies) if latencies else None,
        "p99": percentile(latencies, 0.99) if latencies else None,
        "reached": f"{len(latencies)}/{len(latencies) + missed}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=20, help="concurrent streams in the CPU run")
    parser.add_argument("--tokens", type=int, default=400, help="tokens per stream in the CPU run")
    parser.add_argument("--cancels", type=int, default=40, help="streams cancelled, one at a time")
    parser.add_argument("--backends", default="memory,redis,sentinel,cluster",
                        help="of memory, redis, sentinel, cluster")
    args = parser.parse_args()
    rows = []
    with FakeUpstream() as fake:
        for backend in args.backends.split(","):
            for workers in (1, 4):
                rows.append(measure(backend, workers, fake, args))
                print(f"... {backend} x{workers} done", file=sys.stderr, flush=True)

    def ms(v: object) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    print(f"{args.streams} streams x {args.tokens} tokens (pace 2 ms); {args.cancels} cancels, one at a time\n")
    print(
        "| backend | workers | tokens relayed | worker CPU per token (µs) | cancel p50 (ms) | cancel p99 (ms) "
        "| cancels that reached the generation |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['backend']} | {r['workers']} | {r['tokens']} | {r['us_per_token']:.0f} | {ms(r['p50'])} "
            f"| {ms(r['p99'])} | {r['reached']} |"
        )


if __name__ == "__main__":
    main()
