"""What a finished generation keeps for its replay TTL: its sealed journal and its status.

Nothing else: not its spec (the whole prompt), its producer (one string per delta of the last
round), its relay or its greenlet. The registry swaps a `Generation` for its `Ended` the moment
it ends; responses already following it keep its `LocalFeed` until they have sent `[DONE]`.
An `Ended` is a `Feed` (a replay that never waits) and a `Mirrored` (the Redis writer may still
have its last events to write).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gevent.event import Event

from app.sse import Entry

if TYPE_CHECKING:
    from app.lifecycle.generation import Generation

# What one `Ended` costs besides its journal's compressed bytes: the object, its status text,
# the registry's dict entries for it (measured with tracemalloc: ~0.8 KB).
ENDED_OVERHEAD = 1024


class Ended:
    """A finished generation, as kept for replay and status."""

    __slots__ = ("id", "owner", "client", "journal", "_status", "nbytes", "expires")

    running = False
    ended = True
    lost = False  # a local journal is never trimmed

    def __init__(self, gen: Generation, expires: float) -> None:
        self.id = gen.id
        self.owner = gen.owner
        self.client = gen.client
        self.journal = gen.journal
        # As JSON text: a third of the dicts' size, for a status that is rarely asked for.
        self._status = json.dumps(gen.status(), separators=(",", ":"))
        self.nbytes = self.journal.seal() + ENDED_OVERHEAD
        self.expires = expires  # monotonic time its replay TTL ends

    @property
    def closed(self) -> bool:
        return True

    @property
    def state(self) -> str:
        """How it ended: done, cancelled or error."""
        state: str = self.status()["state"]
        return state

    def status(self) -> dict[str, Any]:
        """The JSON of `GET /streams/<id>`, as it was when the generation ended."""
        status: dict[str, Any] = json.loads(self._status)
        return status

    def wait_after(self, seq: int, timeout: float | None, interrupt: Event | None = None) -> list[Entry]:
        """Entries after `seq` (never waits: nothing more will come)."""
        return self.journal.after(seq)

    def listen(self, wake: Callable[[], None]) -> None:
        """Never called back: nothing more will come (a response ends on `closed`)."""

    def events_after(self, seq: int, limit: int | None = None) -> Sequence[Entry]:
        """Every entry after `seq`, or the first `limit` (for the Redis writer's flush or a resync)."""
        return self.journal.after(seq, self.journal.last_seq if limit is None else limit)

    def attach(self) -> None:
        """Nothing to count: no disconnect grace for a generation that has ended."""

    def detach(self) -> None:
        """See `attach`."""

    def cancel(self, reason: str = "user") -> bool:
        """Too late: it has ended."""
        return False

    def join(self, timeout: float | None = None) -> None:
        """Nothing runs."""
