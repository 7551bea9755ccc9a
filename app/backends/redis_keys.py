"""Where the Redis backend keeps things: key names, TTLs, and the URL as it may be logged.

Every key of one generation carries the same hash tag, `{<stream_id>}`, so that they live in
one Redis Cluster slot (pipelines and multi-key reads of one generation stay on one node):

    sluice:{<id>}:claim    string  worker id of the owner; SET NX reserves the id   running, then replay TTL
    sluice:{<id>}:meta     hash    status fields (state, provider, model, events, usage, owner, worker, ...)
    sluice:{<id>}:events   stream  one entry per event, entry id `0-<seq>`, field `d` = the data text
    sluice:{<id>}:subs     zset    presence of followers on other workers, score = expiry (unix time)
    sluice:{<id>}:tomb[:<d>] string early cancel (<d>: the canceller's digest)  SLUICE_CANCEL_TOMBSTONE_SECONDS

Per worker (hash tag `{w:<worker id>}`) and per client (`{c:<digest>}`):

    sluice:worker:<wid>       pub/sub channel: cancel / idle messages for that worker's generations
    sluice:{w:<wid>}:inbox    hash    the same cancel messages, kept until handled (a missed
                                      pub/sub message is still honoured on the next tick)
    sluice:{w:<wid>}:alive    string  set every tick with a short TTL: the worker is alive
    sluice:{c:<digest>}:active zset   "<wid>|<id>" of a client's running generations, score = expiry
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

PREFIX = "sluice"
ALIVE_TTL = 10  # seconds a worker counts as alive after it last ticked or wrote


def stream_key(stream_id: str, part: str) -> str:
    """A key of one generation, hash-tagged on its id."""
    return f"{PREFIX}:{{{stream_id}}}:{part}"


def worker_channel(worker_id: str) -> str:
    """The pub/sub channel a worker listens on."""
    return f"{PREFIX}:worker:{worker_id}"


def worker_inbox(worker_id: str) -> str:
    """The hash of cancel messages addressed to a worker, kept until it handles them."""
    return f"{PREFIX}:{{w:{worker_id}}}:inbox"


def worker_alive(worker_id: str) -> str:
    """Present while the worker ticks; gone soon after it dies (even by SIGKILL)."""
    return f"{PREFIX}:{{w:{worker_id}}}:alive"


def client_key(client: str) -> str:
    """Running generations of one client (digested: a client key may hold any character)."""
    digest = hashlib.sha1(client.encode("utf-8")).hexdigest()[:16]
    return f"{PREFIX}:{{c:{digest}}}:active"


def seq_of(entry_id: str) -> int:
    """The seq of a stream entry id `0-<seq>`."""
    return int(entry_id.rsplit("-", 1)[1])


def entry_id(seq: int) -> str:
    """The stream entry id of event `seq` (explicit ids: replay from a seq needs no lookup)."""
    return f"0-{seq}"


def redacted_url(url: str) -> str:
    """The Redis URL without its password, for logs and /readyz."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        if parts.username:
            host = f"{parts.username}:***@{host}"
        elif parts.password:
            host = f":***@{host}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "redis://(unparseable url)"
