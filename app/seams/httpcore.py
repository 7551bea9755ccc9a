"""httpx2 -> httpcore2 -> h11, as the SDKs' HTTP client uses them: the one place Sluice reaches in.

`app/providers/_body.py` reads a streamed body straight off the socket of the HTTP/1.1
connection the SDK opened, and gives the connection back to the pool after the body's end.
For that it needs three things no public API gives, all here:

- `take_over()`: the connection under an httpx2 response's body. httpx2's `BoundSyncStream._stream`
  -> `ResponseStream._httpcore_stream` -> httpcore2's `PoolByteStream._stream` ->
  `HTTP11ConnectionByteStream._connection` -> `HTTP11Connection._network_stream` (a
  `SyncStream`, whose public `get_extra_info("socket")` is the socket); other libraries' wrappers
  on the way (the Anthropic SDK's span-ending stream) are unwrapped by the caller's `unwrap`.
- also `take_over()`: the body's first bytes, which came in the same read as the headers and
  sit in h11's buffer (`HTTP11Connection._h11_state`: `trailing_data`, then `_receive_buffer`
  emptied, so h11 does not hold that read's memory for the whole stream); and httpcore2's request
  (`HTTP11ConnectionByteStream._request`) stripped of its sent headers and body, which nothing
  reads again but which would stay referenced until the body is closed.
- `give_back()`: h11 saw only the headers; fed the empty last chunk of the chunked body (the
  "fake last chunk": the real one was read off the socket) it reaches DONE, and closing the
  response then pools the connection instead of closing it.

Why not the HTTP client's extension point, a custom transport (`httpx2.Client(transport=...)`,
which both SDKs accept as `http_client`)? It was evaluated (issue 21) and does not remove these:

- the socket itself is public (`response.extensions["network_stream"]`), but the bytes h11
  already read past the headers are not: a custom transport must either re-implement HTTP/1.1
  (pooling, TLS, proxies: httpcore2's job) or plug a network backend into httpcore2's pool that
  never reads past the headers. `httpx2.HTTPTransport` takes no network backend, so that means
  a transport of our own around `httpcore2.ConnectionPool`, re-doing HTTPTransport's request and
  response mapping and its error mapping (`map_httpcore_exceptions`, private to httpx2), and
  re-making each SDK's default client (limits, timeouts, proxies from the environment);
- giving the connection back would then drive h11 through httpx2's body iterator (six
  generator layers, once per stream) or still touch h11 directly;
- the request's memory (the whole conversation, held by httpcore2 until the body is closed)
  can be released by no public means.

More code of ours copying more of theirs, for a hot path no faster (the socket read is the
same). So the internals stay, here only: `check()` exercises every one of them at start-up on a
real httpx2 client over a socket pair, and logs once which path is in use; when a shape is
missing the body is read through httpx2 as the SDK would (correct, slower, the connection not
reused), and each such stream counts in `sluice_fast_path_fallbacks_total`: `what="httpcore"`
(the body read through httpx2), `what="h11"` (the connection closed instead of pooled).

Not fallbacks, and not counted: bodies this path never takes (compressed, HTTP/2, a transport
other than httpcore2's HTTP/1.1 over a plain or TLS socket, such as TLS inside a TLS proxy or a
test's mock transport).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import h11

from app.observability import metrics
from app.seams import fell_back

log = logging.getLogger("sluice.seams")

FALLBACK = "httpcore"  # the body read through httpx2
FALLBACK_POOL = "h11"  # the connection closed instead of given back

Unwrap = Callable[[object], object | None]

_ok: bool | None = None  # check()'s verdict; None until it ran
_classes: dict[str, Any] = {}  # the classes walked, imported by check()


def _import_shapes() -> dict[str, Any]:
    from httpcore2._backends.sync import SyncStream
    from httpcore2._sync.connection_pool import PoolByteStream
    from httpcore2._sync.http11 import HTTP11ConnectionByteStream
    from httpx2._client import BoundSyncStream
    from httpx2._transports.default import ResponseStream

    return {
        "bound": BoundSyncStream,
        "response": ResponseStream,
        "pool": PoolByteStream,
        "http11": HTTP11ConnectionByteStream,
        "sync": SyncStream,
    }


def check() -> bool:
    """Whether the fast path is usable; tried once per process, then remembered. Logs the path."""
    global _ok
    if _ok is not None:
        return _ok
    try:
        _classes.update(_import_shapes())
        problem = _self_test()
    except Exception as exc:  # an import, an attribute, a changed signature: any of them
        problem = f"{type(exc).__name__}: {exc}"
    _ok = problem is None
    if _ok:
        log.info("seams: httpcore: streamed bodies are read off the connection's socket (httpcore2 + h11 fast path)")
    else:
        _classes.clear()
        log.warning(
            "seams: httpcore: %s; streamed bodies are read through httpx2 (slower, connections not reused),"
            ' counted in sluice_fast_path_fallbacks_total{what="%s"}',
            problem, FALLBACK,
        )
    return _ok


def take_over(
    stream: object, read_timeout: float | None, unwrap: Unwrap | None = None
) -> tuple[Any, bytes, Any] | None:
    """(socket, buffered, handle) of the HTTP/1.1 connection an httpx2 response's body `stream` is read from.

    `socket`: a plain or TLS socket, its timeout set to `read_timeout`; `buffered`: the body's
    bytes already read with the headers (h11's buffer is emptied); `handle`: for `give_back()`.
    None: read the body through httpx2 (another transport; or the shapes are not there, counted).
    `unwrap(x)`: the stream under another library's wrapper `x`, or None if `x` is not one.
    """
    if not (_ok or check()):
        metrics.fast_path_fallback(FALLBACK)  # check() logged why
        return None
    try:
        return _take_over(stream, read_timeout, unwrap)
    except AttributeError as exc:
        fell_back(FALLBACK, exc)
        return None


def _take_over(stream: Any, read_timeout: float | None, unwrap: Unwrap | None) -> tuple[Any, bytes, Any] | None:
    c = _classes
    for _ in range(8):
        kind = type(stream)
        if kind is c["http11"]:
            break
        if kind is c["bound"] or kind is c["pool"]:
            stream = stream._stream
        elif kind is c["response"]:
            stream = stream._httpcore_stream
        else:
            stream = unwrap(stream) if unwrap is not None else None
            if stream is None:
                return None  # HTTP/2, a mock transport, a test double: not ours to take
    else:
        return None
    conn = stream._connection
    network = conn._network_stream
    # SyncStream is a plain or TLS socket; anything else (TLS inside a TLS proxy) has its own
    # read() and errors: httpx2 reads it.
    if type(network) is not c["sync"]:
        return None
    sock = network.get_extra_info("socket")
    state = conn._h11_state
    buffered = state.trailing_data[0]
    empty = type(state._receive_buffer)
    request = stream._request
    # Every shape read: from here on nothing may fall back (h11's buffer is about to be taken).
    sock.settimeout(read_timeout)
    state._receive_buffer = empty()
    # httpcore2's request (its connection stream and the pool both hold it until the body is
    # closed) keeps the sent headers and body, the whole conversation as JSON: sent, and read
    # by nothing after the response's headers (closing reads only its extensions).
    request.headers = []
    request.stream = ()
    return sock, buffered, stream


def give_back(handle: Any) -> bool:
    """Tell the connection's h11 state machine that the body ended, as if it had read it.

    Call once the chunked body's last chunk was read off the socket, and nothing after it.
    h11's chunked reader is still before the first chunk, and its buffer was emptied by
    `take_over()`: given the empty last chunk, the response is complete, and closing it pools
    the connection. False (counted): it did not take, the connection closes on close.
    """
    try:
        event = _give_back(handle)
    except (AttributeError, h11.ProtocolError) as exc:
        fell_back(FALLBACK_POOL, exc)
        return False
    if event is not None:
        fell_back(FALLBACK_POOL, f"h11 answered {event!r} to the last chunk")
        return False
    return True


def _give_back(handle: Any) -> object | None:
    """None if h11 took the last chunk, else the event it answered."""
    state = handle._connection._h11_state
    state.receive_data(b"0\r\n\r\n")
    event = state.next_event()
    return None if isinstance(event, h11.EndOfMessage) and state.their_state is h11.DONE else event


# -- the start-up self-test -----------------------------------------------------------------------


def _self_test() -> str | None:
    """Every shape `take_over()` and `give_back()` use, on a real httpx2 client over a socket pair.

    None if all are there, else what is not. Costs a few milliseconds, once per process.
    """
    import httpcore2
    import httpx2

    ours, theirs = socket.socketpair()
    # The whole answer is waiting before the request is sent: the headers and the body's first
    # chunk arrive in one read, as they usually do.
    theirs.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
    sync_stream = _classes["sync"](ours)

    class OnePair(httpcore2.NetworkBackend):
        def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
            return sync_stream  # type: ignore[no-any-return]

    pool = httpcore2.ConnectionPool(network_backend=OnePair())
    transport = httpx2.HTTPTransport(verify=False, trust_env=False)
    try:
        if not isinstance(getattr(transport, "_pool", None), httpcore2.ConnectionPool):
            return "httpx2.HTTPTransport has no httpcore2 pool where expected"
        transport._pool.close()
        transport._pool = pool  # only here: a client whose connections are the socket pair
        with httpx2.Client(transport=transport, trust_env=False) as client:
            response = client.send(client.build_request("POST", "http://seams.invalid/", content=b"{}"), stream=True)
            try:
                taken = _take_over(response.stream, 1.0, None)
                if taken is None:
                    return f"no HTTP/1.1 connection found under {type(response.stream).__name__}"
                sock, buffered, handle = taken
                if sock is not ours or buffered != b"3\r\nabc\r\n":
                    return "the socket or the buffered bytes are not the connection's"
                if handle._request.headers or handle._request.stream != ():
                    return "httpcore2's request was not released"
                event = _give_back(handle)
                if event is not None:
                    return f"h11 answered {event!r} to the body's last chunk"
            finally:
                response.close()
            if not any(conn.is_idle() for conn in pool.connections):
                return "the connection was not pooled after the body's end"
    finally:
        pool.close()
        ours.close()
        theirs.close()
    return None
