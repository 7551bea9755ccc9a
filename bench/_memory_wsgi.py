"""The app inside a real `gunicorn -k gevent` worker, with two measuring routes for bench.stream_memory.

    gunicorn -k gevent -w 1 bench._memory_wsgi:app

`/__bench/start` starts tracemalloc and takes the "before" snapshot and greenlet count;
`/__bench/measure?streams=N` answers the report for the streams opened since (plain text).
Everything else goes to Sluice, through every layer gunicorn's worker gives it.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import contextlib  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from greenlet import greenlet  # noqa: E402

from app import create_app  # noqa: E402
from bench._common import print_allocations  # noqa: E402
from tests.support.servers import ROOT  # noqa: E402

inner = create_app()
state: dict[str, Any] = {}


def greenlets() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet))


def settle() -> None:
    gevent.sleep(0.5)
    gc.collect()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO")
    if path == "/__bench/start":
        tracemalloc.start(8)
        settle()
        state["g0"] = greenlets()
        state["before"] = tracemalloc.take_snapshot()
        text = "ok\n"
    elif path == "/__bench/measure":
        streams = int(environ.get("QUERY_STRING", "streams=1").partition("=")[2])
        settle()
        after = tracemalloc.take_snapshot()
        g1 = greenlets() - 1  # this request's own connection greenlet
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            print(f"  greenlets per open stream: {(g1 - state['g0']) / streams:.2f}")
            print_allocations(state["before"], after, streams, 12, str(ROOT))
        text = out.getvalue()
    else:
        return inner(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text.encode()]
