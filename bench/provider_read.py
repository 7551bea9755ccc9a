"""The upstream side alone: CPU per token and memory per open stream of a provider's read path.

    .venv/bin/python -m bench.provider_read [--provider anthropic|openai|responses]
                                            [--streams 300] [--window 10] [--memory 200]

No Flask, no relay, no client: N greenlets in this process each iterate `provider.stream()`
against the fake upstream (`bench.stampfake`, its own process, pinned to the other core), as a
generation's producer does, and drop the events. What is measured is how a token gets from the
provider's socket to a provider event: the SDK opening the stream, the HTTP client, the SSE
splitter and the JSON parse.

- **CPU**: N streams × 200 tokens at 20 tokens/s, each reopened as soon as it ends; after a
  ramp of one stream's length, this process's utime + stime over `--window` seconds ÷ the
  provider events received in it.
- **Memory**: `--memory` streams opened and stalled after 2 tokens (`--prompt-kib`: with
  prompts of about that size; the prompt string itself is the bench's, counted too); tracemalloc (Python
  allocations, greenlet stacks included) and VmRSS before and after, ÷ N; the top allocation
  sites.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

from bench._common import print_allocations  # noqa: E402
from tests.support.servers import ROOT  # noqa: E402

KEY = "sk-bench"


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _provider(kind: str, url: str) -> Any:
    if kind == "anthropic":
        os.environ.update(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=url)
        from app.providers.anthropic import AnthropicProvider

        return AnthropicProvider()
    os.environ.update(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=url.rstrip("/") + "/v1")
    if kind == "responses":
        from app.providers.openai_responses import OpenAIResponsesProvider

        return OpenAIResponsesProvider()
    from app.providers.openai import OpenAIProvider

    return OpenAIProvider()


def _request(text: str) -> Any:
    from app.providers.base import Message, ProviderRequest

    return ProviderRequest(model="claude-haiku-4-5", messages=(Message("user", text),), max_tokens=1024)


def cpu_run(provider: Any, streams: int, window: float, tokens: int) -> dict[str, float]:
    from app.providers.base import TextDelta

    count = [0]
    stop = [False]
    errors = [0]
    ramp = tokens / 20.0

    def user(i: int) -> None:
        gevent.sleep(ramp * i / streams)
        n = 0
        while not stop[0]:
            n += 1
            try:
                for event in provider.stream(_request(f"u{i}-{n} [fake tokens={tokens} pace=0.05]")):
                    if type(event) is TextDelta:
                        count[0] += 1
            except Exception:
                errors[0] += 1
                gevent.sleep(0.1)

    users = [gevent.spawn(user, i) for i in range(streams)]
    gevent.sleep(ramp)
    c0, t0, n0 = _cpu(), time.monotonic(), count[0]
    gevent.sleep(window)
    c1, t1, n1 = _cpu(), time.monotonic(), count[0]
    stop[0] = True
    gevent.killall(users, timeout=5)
    tokens_seen = n1 - n0
    return {
        "tokens": tokens_seen,
        "tokens_per_s": tokens_seen / (t1 - t0),
        "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
        "us_per_token": 1e6 * (c1 - c0) / max(tokens_seen, 1),
        "errors": errors[0],
    }


def memory_run(provider: Any, streams: int, top: int, prompt_kib: int = 0) -> None:
    from app.providers.base import TextDelta

    pad = "lorem ipsum " * (prompt_kib * 1024 // 12) + " " if prompt_kib else ""

    ready = gevent.event.Event()
    got = [0]

    def user(i: int) -> None:
        seen = 0
        for event in provider.stream(_request(f"m{i} {pad}[fake stall_after=2]")):
            if type(event) is TextDelta:
                seen += 1
                if seen == 2:
                    got[0] += 1
                    if got[0] == streams:
                        ready.set()

    warm = [gevent.spawn(user, -i - 1) for i in range(5)]
    gevent.sleep(0.5)
    gevent.killall(warm)
    got[0] = 0
    gc.collect()
    tracemalloc.start(8)
    gc.collect()
    rss0 = _rss_kib()
    before = tracemalloc.take_snapshot()
    users = [gevent.spawn(user, i) for i in range(streams)]
    if not ready.wait(60):
        print(f"only {got[0]} of {streams} streams opened", file=sys.stderr)
    gevent.sleep(0.3)
    gc.collect()
    after = tracemalloc.take_snapshot()
    rss1 = _rss_kib()
    print(f"memory: {streams} open streams, stalled after 2 tokens" + (f", {prompt_kib} KiB prompts" if pad else ""))
    print(f"  RSS per open stream: {(rss1 - rss0) / streams:.1f} KiB")
    print_allocations(before, after, streams, top, str(ROOT))
    tracemalloc.stop()
    gevent.killall(users, timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.provider_read", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="anthropic", choices=("anthropic", "openai", "responses"))
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--memory", type=int, default=200, help="streams for the memory run (0: skip)")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--prompt-kib", type=int, default=0, help="memory run: each prompt padded to about this size")
    args = parser.parse_args()

    taskset = ["taskset", "-c", "1"] if os.cpu_count() and os.cpu_count() > 1 else []  # type: ignore[operator]
    fake = subprocess.Popen(
        [*taskset, sys.executable, "-m", "bench.stampfake"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        if taskset:
            os.sched_setaffinity(0, {0})
        provider = _provider(args.provider, url)
        load0 = os.getloadavg()[0]
        if args.streams:
            r = cpu_run(provider, args.streams, args.window, args.tokens)
            print(
                f"cpu: {args.provider}, {args.streams} streams x 20 tokens/s, {args.window:.0f} s window: "
                f"{r['tokens']} tokens ({r['tokens_per_s']:.0f}/s), process CPU {r['cpu_pct']:.0f} %, "
                f"{r['us_per_token']:.1f} us/token, errors {r['errors']}"
            )
        if args.memory:
            memory_run(provider, args.memory, args.top, args.prompt_kib)
        print(f"load average (1 min) before / after: {load0:.2f} / {os.getloadavg()[0]:.2f}")
    finally:
        fake.kill()


if __name__ == "__main__":
    main()
