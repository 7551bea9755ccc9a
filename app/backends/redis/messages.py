"""Messages to the worker that owns a generation: `cancel` (POST /cancel elsewhere) and `idle`
(its last follower on another worker left).

A message is published on the owner's channel; a cancel is also kept in the owner's inbox
hash, so one that pub/sub missed (a reconnect) is still honoured on the owner's next tick.
The owner's listener (app.backends.redis.listener) acts on both.
"""

from __future__ import annotations

import json
import time
from typing import Any

from app.backends.redis.clients import Clients
from app.backends.redis.keys import worker_channel, worker_inbox

INBOX_TTL = 120  # seconds an unhandled cancel message is kept


def send(conn: Clients, worker: str, message: dict[str, Any], *, inbox: bool = False) -> None:
    """Publish `message` (it names its `sid`) to `worker`; with `inbox`, also keep it until handled.
    On a Cluster, by sharded pub/sub: channel and inbox share the worker's slot, one node."""
    message["at"] = time.time()
    data = json.dumps(message)
    pipe = conn.client.pipeline(transaction=False)
    if inbox:
        pipe.hset(worker_inbox(worker), message["sid"], data)
        pipe.expire(worker_inbox(worker), INBOX_TTL)
    if conn.cluster:
        pipe.spublish(worker_channel(worker), data)
    else:
        pipe.publish(worker_channel(worker), data)
    pipe.execute()


def parse(data: str) -> dict[str, Any] | None:
    """The message, or None for one that is not ours (it is dropped)."""
    try:
        message = json.loads(data)
        str(message["sid"])
    except (ValueError, KeyError, TypeError):
        return None
    return message if isinstance(message, dict) else None
