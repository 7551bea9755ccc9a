"""Shared helpers for the bench scripts: a timed fake upstream, a raw-socket SSE client, stats.

Nothing here changes the app or the fake upstream. `TimedFake` is a subclass that records, per
request, the moment the fake's handler thread opened and closed its streaming response (the
fake notices a client close at once: it `select()`s on the socket while it waits), keyed by a
marker the benchmark puts in the prompt. So "upstream closed" is timestamped where it happens,
on the same `time.monotonic()` clock as the client side, with no polling interval in it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.chunked import Dechunker
from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.server import RecordedRequest

ROOT = Path(__file__).resolve().parents[1]

# -- the fake upstream, timed -----------------------------------------------------------------

_KEY = re.compile(r"bench-([A-Za-z0-9_-]{16,64})")


@dataclass
class UpstreamConn:
    """One streaming response of the fake, as seen from its handler thread."""

    opened: float
    closed: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


class TimedFake(FakeUpstream):
    """The fake upstream, recording open/close times of responses whose prompt has `bench-<key>`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conns: dict[str, UpstreamConn] = {}
        self._pending: dict[int, str] = {}
        self._by_sock: dict[int, UpstreamConn] = {}
        self._conns_cond = threading.Condition()

    def _record(self, req: RecordedRequest) -> None:
        match = _KEY.search(json.dumps(req.json)) if req.json is not None else None
        if match:
            self._pending[threading.get_ident()] = match.group(1)
        super()._record(req)

    def _opened(self, sock: socket.socket) -> None:
        now = time.monotonic()
        key = self._pending.pop(threading.get_ident(), None)
        if key is not None:
            conn = UpstreamConn(now)
            with self._conns_cond:
                self.conns[key] = conn
                self._by_sock[id(sock)] = conn
                self._conns_cond.notify_all()
        super()._opened(sock)

    def _closed(self, sock: socket.socket) -> None:
        now = time.monotonic()
        with self._conns_cond:
            conn = self._by_sock.pop(id(sock), None)
        if conn is not None:
            conn.closed = now
            conn.done.set()
        super()._closed(sock)

    def conn(self, key: str, timeout: float = 5.0) -> UpstreamConn:
        """The upstream response opened for `key` (waits for it to open)."""
        deadline = time.monotonic() + timeout
        with self._conns_cond:
            while key not in self.conns:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no upstream request for {key}")
                self._conns_cond.wait(left)
            return self.conns[key]

    def forget(self, key: str) -> None:
        with self._conns_cond:
            self.conns.pop(key, None)


def new_key() -> str:
    """A client-chosen stream id (22 URL-safe characters), also used as the prompt marker."""
    return secrets.token_urlsafe(16)


def prompt(key: str, directive: str) -> str:
    return f"bench-{key} [fake {directive}]"


def stream_path(key: str, directive: str) -> str:
    return "/stream?" + urlencode({"prompt": prompt(key, directive), "stream_id": key})


# -- a raw-socket SSE client ----------------------------------------------------------------


@dataclass
class Ev:
    """One SSE event and the monotonic time the recv() that completed it returned."""

    at: float
    data: str
    id: str = ""

    @property
    def type(self) -> str:
        if self.data == "[DONE]":
            return "[DONE]"
        try:
            return str(json.loads(self.data).get("type"))
        except ValueError:
            return "?"

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    return host, int(port)


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(host_port(url), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class RawSSE:
    """`GET path` over a plain socket; de-chunks and splits events, stamping each with its recv time.

    No thread and no library between the socket and the timestamp: `recv()` returns, the time
    is taken, then the bytes are parsed.
    """

    def __init__(self, url: str, path: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None) -> None:
        host, port = host_port(url)
        self.sock = connect(url, timeout)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode()
        )
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.events: list[Ev] = []
        self.eof = False
        self.bytes = 0
        self._head = b""
        self._dechunker: Dechunker | None = None  # when the response is chunked
        self._body = b""
        self._cursor = 0  # events[:_cursor] were looked at by until()

    # -- parsing ------------------------------------------------------------------------------

    def _feed(self, data: bytes, at: float) -> list[Ev]:
        self.bytes += len(data)
        if self.status is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return []
            head, data = self._head[:end], self._head[end + 4 :]
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                self._dechunker = Dechunker()
        if self._dechunker is not None:
            self._body += self._dechunker.feed(data)
            self.eof = self._dechunker.eof
        else:
            self._body += data
        out: list[Ev] = []
        while True:
            end = self._body.find(b"\n\n")
            if end < 0:
                break
            block, self._body = self._body[:end], self._body[end + 2 :]
            data_lines, ev_id = [], ""
            for line in block.decode("utf-8").split("\n"):
                if line.startswith("data:"):
                    data_lines.append(line[5:].removeprefix(" "))
                elif line.startswith("id:"):
                    ev_id = line[3:].removeprefix(" ")
            if data_lines:
                out.append(Ev(at, "\n".join(data_lines), ev_id))
        self.events.extend(out)
        return out

    # -- reading ------------------------------------------------------------------------------

    def recv(self, timeout: float | None) -> list[Ev]:
        """One recv() (waiting up to `timeout`); the events it completed."""
        if self.eof:
            return []
        self.sock.settimeout(timeout)
        data = self.sock.recv(262144)
        at = time.monotonic()
        if not data:
            self.eof = True
            return []
        return self._feed(data, at)

    def until(self, predicate: Callable[[Ev], bool] | str, timeout: float = 10.0) -> Ev:
        """Read until an event matches (a type name or a callable); raise on EOF or timeout."""
        pred = (lambda e: e.type == predicate) if isinstance(predicate, str) else predicate
        deadline = time.monotonic() + timeout
        while True:
            # Events already received (by an earlier recv) and not yet looked at come first.
            while self._cursor < len(self.events):
                ev = self.events[self._cursor]
                self._cursor += 1
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event in {timeout}s; got {[e.data[:60] for e in self.events[-5:]]}")
            self.recv(left)
            if any(pred(ev) for ev in self.events[self._cursor :]):
                continue
            if self.eof:
                raise EOFError(f"stream ended; status {self.status}; last {[e.data[:60] for e in self.events[-5:]]}")

    def drain(self) -> None:
        """Read whatever is already buffered, without waiting (before a clean close)."""
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(262144)
                if not data:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def http_request(method: str, path: str, host: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    """A minimal HTTP/1.1 request, ready for sendall()."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body or method == "POST":
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class RawResponse:
    """Incremental parser of one Content-Length HTTP/1.1 response."""

    def __init__(self) -> None:
        self.buf = b""
        self.status: int | None = None
        self.body: bytes | None = None

    def feed(self, data: bytes) -> bool:
        """True once the whole response is in."""
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buf[:end].decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buf) - end - 4 < length:
            return False
        self.status = int(head[0].split()[1])
        self.body = self.buf[end + 4 : end + 4 + length]
        return True


# -- statistics and reporting -------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class Summary:
    n: int
    p50: float
    p90: float
    p99: float
    max: float
    min: float
    mean: float


def summarize(values: Iterable[float]) -> Summary:
    vals = sorted(values)
    if not vals:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan)
    return Summary(
        len(vals),
        percentile(vals, 0.50),
        percentile(vals, 0.90),
        percentile(vals, 0.99),
        vals[-1],
        vals[0],
        sum(vals) / len(vals),
    )


def ms(seconds: float) -> str:
    """Milliseconds, 1 decimal (or '—' for NaN)."""
    if seconds != seconds:  # NaN
        return "—"
    return f"{seconds * 1000:.1f}"


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True,
            check=False,
        ).stdout.strip()
        if commit and changed:
            commit += " + uncommitted changes"
    except OSError:
        commit = "?"
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gunicorn": _version("gunicorn"),
        "gevent": _version("gevent"),
        "greenlet": _version("greenlet"),
        "flask": _version("flask"),
        "anthropic": _version("anthropic"),
        "commit": commit or "?",
    }


def machine_line(info: dict[str, str]) -> str:
    return (
        f"{info['date']}; commit {info['commit']}; nproc={info['nproc']} ({info['cpu']}), Linux {info['kernel']}; "
        f"Python {info['python']}, gunicorn {info['gunicorn']}, gevent {info['gevent']}, "
        f"greenlet {info['greenlet']}, Flask {info['flask']}, anthropic SDK {info['anthropic']}"
    )


def update_doc_section(path: Path, name: str, text: str) -> None:
    """Replace `<!-- name:begin -->...<!-- name:end -->` in `path` (append the block if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = (old.rstrip() + "\n\n" if old else "") + block + "\n"
    path.write_text(new)


# -- the server ---------------------------------------------------------------------------


def worker_pids(master_pid: int) -> list[int]:
    """gunicorn worker pids (children of the master)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == master_pid:
                out.append(int(entry.name))
    return sorted(out)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tune_interpreter() -> None:
    """Hand the GIL over fast: client threads and the fake's threads share this process."""
    sys.setswitchinterval(0.0005)


def print_allocations(before: Any, after: Any, per: int, top: int, root: str, frames: int = 1) -> None:
    """What Python allocated between two tracemalloc snapshots, per stream (`per` streams): the
    total, then the `top` allocation sites (with `frames` > 1, each with its callers)."""
    stats = after.compare_to(before, "traceback" if frames > 1 else "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"  Python memory per open stream (tracemalloc): {total / per / 1024:.1f} KiB")
    print_allocation_sites(stats, per, top, root, frames)


def print_allocation_sites(stats: Sequence[Any], per: int, top: int, root: str, frames: int = 1) -> None:
    """The `top` allocation sites of a tracemalloc comparison, in KiB per stream (`per` streams).

    With `frames` > 1 (stats compared by "traceback"), each site is followed by its callers.
    """
    print(f"  top {top} allocation sites (KiB per stream):")
    for stat in stats[:top]:
        where = [_site(frame, root) for frame in list(stat.traceback)[-frames:][::-1]]
        print(f"    {stat.size_diff / per / 1024:7.2f}  {where[0]}")
        for caller in where[1:]:
            print(f"             <- {caller}")


def _site(frame: Any, root: str) -> str:
    where = os.path.relpath(frame.filename, root) if frame.filename.startswith(root) else frame.filename
    return f"{where.split('site-packages/')[-1]}:{frame.lineno}"


def run_killing(main: Callable[[], object], children: list[Any]) -> None:
    """Run `main`, then kill the child processes it started, however it ended."""
    try:
        main()
    finally:
        for child in children:
            child.kill()
