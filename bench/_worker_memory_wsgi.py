"""Sluice's `wsgi:app` plus one route, `/__bench/memory`: where the worker's memory is (JSON).

    gunicorn -c deploy/gunicorn.conf.py bench._worker_memory_wsgi:app

For bench.worker_memory. Everything else goes to Sluice unchanged. The report walks every
GC-tracked object (a few hundred ms in a loaded worker): read it at the moments measured, not
in a loop.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from greenlet import greenlet

from wsgi import app as sluice  # gevent's monkey.patch_all() first, as in production

_libc = ctypes.CDLL("libc.so.6")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


_libc.mallinfo2.restype = _Mallinfo2
COUNTED = ("HTTP11Connection", "Ended", "_Followed", "DirectDelivery", "_ProducerGreenlet", "socket", "Context")


def _smaps() -> dict[str, int]:
    """Resident KiB by kind of mapping: the brk heap (glibc's main arena), anonymous, files."""
    out: Counter[str] = Counter()
    kind = ""
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            parts = line.split()
            if parts[0] == "Rss:":
                out[kind] += int(parts[1])
            elif not parts[0].endswith(":"):
                name = parts[5] if len(parts) > 5 else "anonymous"
                kind = "file" if name.startswith("/") else name
    return dict(out)


def _pymalloc_bytes() -> int:
    """pymalloc's bytes in allocated blocks (`sys._debugmallocstats` writes to fd 2)."""
    fd, path = tempfile.mkstemp()
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    with open(path) as f:
        text = f.read()
    os.unlink(path)
    for line in text.splitlines():
        if line.startswith("# bytes in allocated blocks"):
            return int(line.split("=")[-1].strip().replace(",", ""))
    return 0


def report() -> dict[str, Any]:
    objects = gc.get_objects()
    names = Counter(type(o).__name__ for o in objects)
    greenlets = [o for o in objects if isinstance(o, greenlet)]
    journals = [o for o in objects if type(o).__name__ == "Journal"]
    live = [j for j in journals if not j.sealed]
    info = _libc.mallinfo2()
    return {
        "smaps_kib": _smaps(),
        "glibc_in_use": info.uordblks,
        "glibc_free": info.fordblks,
        "glibc_mmapped": info.hblkhd,
        "pymalloc_in_use": _pymalloc_bytes(),
        "greenlets": len(greenlets),
        "greenlet_stacks_saved": sum(getattr(g, "_stack_saved", 0) for g in greenlets),
        "live_journals": len(live),
        "live_journal_bytes": sum(len(j._buf) for j in live),
        "live_journal_events": sum(j.last_seq for j in live),
        "sealed_journal_bytes": sum(j.held for j in journals if j.sealed),
        "objects": {name: names.get(name, 0) for name in COUNTED},
    }


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/__bench/memory":
        import json

        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(report()).encode()]
    return sluice(environ, start_response)  # type: ignore[no-any-return]
