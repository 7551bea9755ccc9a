"""The downstream hot path alone: generation → journal → delivery, in one process, no sockets.

    .venv/bin/python -m bench.hot_path [-n 300] [-t 100] [--pace 0.05] [--followers 1] [--pace-only]
                                       [--sockets | --direct]

N generations, each fed by a scripted provider that yields a text delta every `--pace` seconds
(`gevent.sleep`, as a socket read would block), each followed by `--followers` `WsgiBody`
bodies read by a greenlet that drops the bytes (as gunicorn would write them). Prints the
process CPU per delivered `text` event. `--pace-only` runs the same providers with nothing
behind them: subtract it to get what Sluice's own lifecycle costs per token (the relay, the
journal, the wake-ups, the deadlines, the response loop). No SDK, no HTTP, no gunicorn: the
figure is the part of `bench.compare`'s CPU per token that app/lifecycle owns.

`--sockets`: each `WsgiBody` writes its chunks to a socket pair (gevent's `sendall`, as gunicorn
does), the other end read by a greenlet. `--direct`: the same pairs, written by a
`LoopWriter` from hub callbacks with no greenlet per response (app.delivery.loop_writer); the
readers are the same, so the difference of the two is the response side alone.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import _socket  # noqa: E402
import argparse  # noqa: E402
import gc  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from collections.abc import Generator  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

from app.config import Settings  # noqa: E402
from app.delivery.cursor import Cursor  # noqa: E402
from app.delivery.loop_writer import LoopWriter  # noqa: E402
from app.delivery.wsgi_body import WsgiBody  # noqa: E402
from app.lifecycle.generation import Generation  # noqa: E402
from app.providers.base import Finish, ProviderEvent, TextDelta, Usage  # noqa: E402
from app.validation import parse_spec  # noqa: E402


class Paced:
    """A provider that yields `tokens` text deltas, one every `pace` seconds."""

    name = "demo"

    def __init__(self, tokens: int, pace: float) -> None:
        self.tokens = tokens
        self.pace = pace

    def stream(self, request: Any) -> Generator[ProviderEvent, None, None]:
        yield Usage(input_tokens=3)
        for i in range(self.tokens):
            gevent.sleep(self.pace)
            yield TextDelta(f"tok{i} ")
        yield Usage(output_tokens=self.tokens)
        yield Finish("end_turn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="generations at once (default 300)")
    parser.add_argument("-t", type=int, default=100, help="text deltas each (default 100)")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between deltas (default 0.05)")
    parser.add_argument("--followers", type=int, default=1, help="responses per generation (default 1)")
    parser.add_argument("--pace-only", action="store_true", help="the providers alone, nothing behind them")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sockets", action="store_true", help="WsgiBody bodies written to socket pairs")
    mode.add_argument("--direct", action="store_true", help="LoopWriter writing to socket pairs")
    args = parser.parse_args()

    settings = Settings.from_env({"SLUICE_PROVIDER": "demo"})
    spec = parse_spec({"prompt": "x", "provider": "demo"}, settings)
    provider = Paced(args.t, args.pace)
    got = [0]

    def follow(body: WsgiBody) -> None:
        for chunk in body:
            got[0] += chunk.count(b'"type":"text"')
        body.close()

    def read(sock: Any) -> None:
        while data := sock.recv(65536):
            got[0] += data.count(b'"type":"text"')
        sock.close()

    def write(body: WsgiBody, sock: Any) -> None:
        for chunk in body:
            sock.sendall(chunk)
        body.close()
        sock.close()

    def follower(gen: Generation) -> gevent.Greenlet:
        cursor = Cursor(gen.feed, 0, heartbeat=15.0, max_write=65536, attached=True)
        if not (args.sockets or args.direct):
            return gevent.spawn(follow, WsgiBody(cursor))
        ours, theirs = socket.socketpair()
        if args.direct:
            raw = _socket.socket(fileno=ours.detach())
            raw.setblocking(False)
            LoopWriter(cursor, raw, send_timeout=30.0, chunked=False).start(b"")
        else:
            gevent.spawn(write, WsgiBody(cursor), ours)
        return gevent.spawn(read, theirs)

    def drain() -> None:
        for event in provider.stream(None):
            got[0] += isinstance(event, TextDelta)

    gc.collect()
    gc.freeze()
    cpu0, wall0 = time.process_time(), time.monotonic()
    readers = []
    for i in range(args.n):
        if args.pace_only:
            readers.append(gevent.spawn(drain))
            continue
        gen = Generation(f"bench-{i:06d}-xxxxxxxxxx", spec, settings, lambda name: provider)
        for _ in range(args.followers):
            gen.feed.attach()
            readers.append(follower(gen))
        gen.start()
    gevent.joinall(readers)
    cpu = time.process_time() - cpu0
    what = "providers alone" if args.pace_only else f"{args.followers} follower(s) each"
    if args.direct or args.sockets:
        what += f" ({'LoopWriter' if args.direct else 'WsgiBody'} to socket pairs)"
    print(f"{args.n} generations x {args.t} deltas every {args.pace:g} s, {what}: {got[0]} text events, "
          f"CPU {cpu:.2f} s, wall {time.monotonic() - wall0:.1f} s: {cpu / max(got[0], 1) * 1e6:.1f} µs per text event")


if __name__ == "__main__":
    main()
