"""The project's fake upstream in its own process, stamping each token with the time it is sent.

    python -m bench.stampfake [--port N]      # prints its URL, then serves until killed

`bench.compare` runs it pinned to the load core. It is `tests.fake_upstream` unchanged (same
events, same bytes but for the token text), with two differences:

- The token text `t5 ` becomes `t5@<µs> `: the `time.monotonic()` of the write, in integer
  microseconds (CLOCK_MONOTONIC is one clock for every process on the machine). The first
  token also carries when its request arrived: `t0@<µs>/<µs> `. The load generator reads
  both: relay latency = receive time − stamp; the upstream's own TTFT = the two of `t0`.
- The process is gevent-patched, so its thread per connection is a greenlet: hundreds of
  paced streams cost one core a fraction of what as many OS threads fighting for the GIL do.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402  (after the patch, as gevent requires)
import re  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from tests.fake_upstream import FakeUpstream  # noqa: E402
from tests.fake_upstream.server import _Handler  # noqa: E402

_TOKEN = re.compile(rb'"text":"t(\d+) "')


class _StampHandler(_Handler):
    _t_request = 0.0

    def do_POST(self) -> None:
        self._t_request = time.monotonic()
        super().do_POST()

    def _wait(self, seconds: float, *_: Any, **__: Any) -> None:
        # The fake's own wait select()s on the socket to notice a client leaving at once; that
        # costs a gevent watcher per token, the largest part of this process's CPU at 15k
        # tokens/s. A plain sleep: a client that left is noticed at the next write instead.
        time.sleep(seconds)

    def _write_chunk(self, data: bytes) -> None:
        if data.startswith(b"event: content_block_delta"):
            now = int(time.monotonic() * 1e6)

            def stamp(m: re.Match[bytes]) -> bytes:
                if m.group(1) == b"0":
                    return b'"text":"t0@%d/%d "' % (now, int(self._t_request * 1e6))
                return b'"text":"t%s@%d "' % (m.group(1), now)

            data = _TOKEN.sub(stamp, data, count=1)
        super()._write_chunk(data)


class StampFake(FakeUpstream):
    """`FakeUpstream` serving with `_StampHandler`."""

    handler_class = _StampHandler


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stampfake", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    fake = StampFake("127.0.0.1", parser.parse_args().port).start()
    print(fake.url, flush=True)
    threading.Event().wait()  # until killed: bench.compare ends this process when it is done


if __name__ == "__main__":
    main()
