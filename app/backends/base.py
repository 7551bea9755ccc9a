"""What a worker shares with the other workers and hosts, as one small interface.

The registry keeps every generation this worker runs in memory and serves its subscribers
from there (the fast path). The backend answers for everything else:

- early-cancel tombstones (an id cancelled before its generation exists);
- generations that run on *another* worker: their status, their events (a `Feed` to replay
  and follow), and delivering a cancel to whichever worker owns them;
- a mirror of this worker's generations, so other workers can do the above.

`MemoryBackend` is the single-process answer: nothing runs elsewhere, so remote lookups find
nothing. `RedisBackend` fills the same methods from Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from gevent.event import Event

from app.lifecycle.journal import Entry

if TYPE_CHECKING:
    from app.lifecycle.generation import Generation


class Feed(Protocol):
    """Events of a generation, to replay and follow (local journal or a remote stream)."""

    owner: str | None
    """The principal that started the generation (None: started with authentication off)."""

    def wait_after(self, seq: int, timeout: float | None, interrupt: Event | None = None) -> list[Entry]:
        """Entries after `seq`; waits up to `timeout` when there are none yet."""
        ...

    @property
    def closed(self) -> bool:
        """True once `[DONE]` has been published (nothing more will come)."""
        ...

    def attach(self) -> None:
        """A client started following."""
        ...

    def detach(self) -> None:
        """That client went away."""
        ...


# Called by the backend when a cancel for `stream_id` reaches this worker from elsewhere.
CancelHandler = Callable[[str, str], bool]


class Backend(Protocol):
    """Cross-worker state. Every method must be safe to call from any greenlet."""

    shared: bool
    """True when other workers/hosts can see this worker's generations (Redis)."""

    def start(self, on_cancel: CancelHandler) -> None:
        """Begin background work (e.g. the pub/sub listener); `on_cancel` stops a local generation."""
        ...

    def settle(self, timeout: float) -> bool:
        """Wait up to `timeout` s until what this worker published is visible elsewhere.

        The last step of a drain, before `close`: a mirror write that failed (Redis down) is
        retried until then. True when everything is written (at once when nothing is pending).
        """
        ...

    def close(self) -> None:
        """Stop background work and connections."""
        ...

    def ready(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz."""
        ...

    def add_tombstone(self, stream_id: str, ttl: float, principal: str | None) -> None:
        """Remember `principal`'s cancel of an id not (yet) known."""
        ...

    def take_tombstone(self, stream_id: str, principal: str | None) -> bool:
        """True (once) if `principal` cancelled `stream_id` before it started.

        Only the principal that starts a generation can have cancelled it early: another's
        cancel is answered as for an unknown id and has no effect (CONTRACT.md).
        """
        ...

    def claim(self, stream_id: str, ttl: float) -> bool:
        """Reserve a stream id for a generation on this worker; False if it is in use anywhere."""
        ...

    def register(self, generation: Generation) -> None:
        """A local generation started: publish its status so other workers can find it."""
        ...

    def publish(self, generation: Generation, entry: Entry) -> None:
        """A local generation appended an event (may be batched)."""
        ...

    def finished(self, generation: Generation) -> None:
        """A local generation ended: publish its final status and start the replay TTL."""
        ...

    def remote_status(self, stream_id: str) -> dict[str, Any] | None:
        """Status of a generation that is not in this worker's registry, or None."""
        ...

    def remote_feed(self, stream_id: str) -> Feed | None:
        """A feed of a generation that is not in this worker's registry, or None."""
        ...

    def remote_cancel(self, stream_id: str, reason: str, owner: str | None) -> str:
        """Ask the owning worker to cancel: 'cancelled', 'finished', or 'unknown'."""
        ...

    def remote_subscribers(self, stream_id: str) -> bool:
        """True if clients follow `stream_id` through other workers."""
        ...

    def active_for_client(self, client: str) -> int:
        """Running generations of `client` across all workers (0 if not tracked)."""
        ...
