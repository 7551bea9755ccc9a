"""Where the Redis backend keeps things: key names, lifetimes, the status hash, and the URL as
it may be logged.

Every key of one generation carries the same hash tag, `{<stream_id>}`, so that they live in
one Redis Cluster slot (pipelines and multi-key reads of one generation stay on one node):

    sluice:{<id>}:claim    string  worker id of the owner; SET NX reserves the id   running, then replay TTL
    sluice:{<id>}:meta     hash    status fields (state, provider, model, events, usage, owner, worker, ...)
    sluice:{<id>}:events   stream  one entry per event, entry id `0-<seq>`, field `d` = the data text
    sluice:{<id>}:subs     zset    presence of followers on other workers, score = expiry (unix time)
    sluice:{<id>}:tomb[:<d>] string early cancel (<d>: the canceller's digest)  SLUICE_CANCEL_TOMBSTONE_SECONDS

Per worker (hash tag `{w:<worker id>}`) and per client key (`{c:<digest>}`):

    sluice:{w:<wid>}:channel  pub/sub channel: cancel / idle messages for that worker's generations
                              (sharded pub/sub on a Cluster: it lives in the inbox's slot)
    sluice:{w:<wid>}:inbox    hash    the same cancel messages, kept until handled (a missed
                                      pub/sub message is still honoured on the next tick)
    sluice:{w:<wid>}:alive    string  set every tick with a short TTL: the worker is alive
    sluice:{c:<digest>}:<kind>       hash  worker id -> places of `kind` it holds (open responses,
                                           running generations)
    sluice:{c:<digest>}:<kind>:alive zset  worker id, score = until when its count is believed

Per browser session (`{s:<session id>}`, app.web.session):

    sluice:{s:<sid>}:revoked  string  the session was signed out  until its cookie expires

The status hash (`meta`) is written by `encode_status`/`encode_progress` and read back by
`decode_status`, here together, so the two sides cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.backends.base import Mirrored
from app.backends.tombstones import tombstone_name
from app.config import Settings

PREFIX = "sluice"
ALIVE_TTL = 10  # seconds a worker counts as alive after it last ticked or wrote


def stream_key(stream_id: str, part: str) -> str:
    """A key of one generation, hash-tagged on its id."""
    return f"{PREFIX}:{{{stream_id}}}:{part}"


def tomb_key(stream_id: str, principal: str | None) -> str:
    """The tombstone of `principal`'s early cancel (hash-tagged on the id, as its other keys)."""
    name = tombstone_name(stream_id, principal)
    return stream_key(stream_id, "tomb" + name[len(stream_id) :])


def revoked_key(sid: str) -> str:
    """The mark of a signed-out browser session (app.backends.redis.revocations)."""
    return f"{PREFIX}:{{s:{sid}}}:revoked"


def worker_channel(worker_id: str) -> str:
    """The pub/sub channel a worker listens on."""
    return f"{PREFIX}:{{w:{worker_id}}}:channel"


def worker_inbox(worker_id: str) -> str:
    """The hash of cancel messages addressed to a worker, kept until it handles them."""
    return f"{PREFIX}:{{w:{worker_id}}}:inbox"


def worker_alive(worker_id: str) -> str:
    """Present while the worker ticks; gone soon after it dies (even by SIGKILL)."""
    return f"{PREFIX}:{{w:{worker_id}}}:alive"


def client_slot_keys(client: str, kind: str) -> tuple[str, str]:
    """The per-worker counts of one client key's places of `kind`, and the workers' liveness
    (the client key digested: it may hold any character)."""
    counts = f"{PREFIX}:{{c:{hashlib.sha1(client.encode('utf-8')).hexdigest()[:16]}}}:{kind}"
    return counts, f"{counts}:alive"


def seq_of(entry_id: str) -> int:
    """The seq of a stream entry id `0-<seq>`."""
    return int(entry_id.rsplit("-", 1)[1])


def entry_id(seq: int) -> str:
    """The stream entry id of event `seq` (explicit ids: replay from a seq needs no lookup)."""
    return f"0-{seq}"


@dataclass(frozen=True)
class Lifetimes:
    """How long a generation's keys live, in whole seconds (Redis EXPIRE takes integers)."""

    running: int  # while it runs: it may run max_duration, then be replayed
    replay: int  # once it ended: SLUICE_REPLAY_TTL_SECONDS

    @classmethod
    def of(cls, settings: Settings) -> Lifetimes:
        return cls(
            running=int(math.ceil(settings.max_duration + settings.replay_ttl_seconds + 60)),
            replay=max(1, int(math.ceil(settings.replay_ttl_seconds))),
        )

    def of_view(self, view: Mirrored) -> int:
        return self.running if view.running else self.replay


# -- the status hash --------------------------------------------------------------------------


def encode_status(view: Mirrored, worker_id: str) -> dict[str, Any]:
    """The whole status hash of a generation (its owner and client key included)."""
    status = view.status()
    return {
        "worker": worker_id,
        "owner": json.dumps(view.owner),
        "client": view.client,
        "state": status["state"],
        "provider": status["provider"],
        "model": status["model"],
        "created_at": repr(status["created_at"]),
        "events": status["events"],
        "usage": json.dumps(status["usage"]),
        "stop_reason": json.dumps(status["stop_reason"]),
    }


def encode_progress(events: int, usage: dict[str, Any]) -> dict[str, Any]:
    """The fields of the status hash that change while a generation runs."""
    return {"events": events, "usage": json.dumps(usage)}


def decode_owner(raw: str | None) -> str | None:
    """The `owner` field as stored (JSON: null when authentication is off)."""
    owner: str | None = json.loads(raw or "null")
    return owner


def decode_status(stream_id: str, meta: dict[str, str]) -> dict[str, Any]:
    """The status JSON of `GET /streams/<id>` from a status hash, with its `owner`, which the
    registry checks and never shows."""
    return {
        "stream_id": stream_id,
        "state": meta.get("state"),
        "provider": meta.get("provider"),
        "model": meta.get("model"),
        "created_at": float(meta.get("created_at") or 0),
        "events": int(meta.get("events") or 0),
        "usage": json.loads(meta.get("usage") or "{}"),
        "stop_reason": json.loads(meta.get("stop_reason") or "null"),
        "owner": decode_owner(meta.get("owner")),
    }


def redacted_url(url: str) -> str:
    """The Redis URL without its password, for logs and /readyz."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]  # one host:port, or several (Sentinel, Cluster)
        if parts.username:
            host = f"{parts.username}:***@{host}"
        elif parts.password:
            host = f":***@{host}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "redis://(unparseable url)"
