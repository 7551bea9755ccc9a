"""What a worker shares with the other workers and hosts: small interfaces and a life.

The registry keeps every generation this worker runs in memory and serves its subscribers
from there (the fast path). The backend answers for everything else, one group a protocol,
so each caller depends only on the group it uses:

- `Ids` (`backend.ids`): id claims and early-cancel tombstones (an id cancelled before its
  generation exists);
- `Mirror` (`backend.mirror`): a copy of this worker's generations (their events and status),
  so other workers can find, follow and cancel them;
- `Remote` (`backend.remote`): generations that run on *another* worker: their status, their
  events (a `Feed` to replay and follow), their followers, and delivering a cancel to whichever
  worker owns them.

- `Slots` (`backend.slots`): places a client holds at once, counted on every worker and host
  (its open event-stream responses, SLUICE_MAX_RESPONSES_PER_CLIENT; its running generations,
  SLUICE_MAX_STREAMS_PER_CLIENT);
- `Ledger` (`backend.ledger`): budget counters (app.lifecycle.budget);
- `Revocations` (`backend.revocations`): browser sessions that were signed out
  (app.web.session), refused everywhere until their cookie would have expired.

`Backend` holds the groups and its own life (start, settle, close, ready). A backend never sees
a `Generation`: it mirrors a `Mirrored` view (its events after a seq and its status), and what
it must ask of this worker (a cancel from elsewhere, followers that left) goes through `Local`,
which the registry implements. `MemoryBackend` is the single-process answer: its own
tombstones, slots, budgets and revocations, and null objects for the rest (`NO_MIRROR`,
`NOWHERE`: nothing runs elsewhere).
`tests/unit/fakes.py` plays "the other workers" in memory for the registry's tests.
`RedisBackend` fills every group from Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from gevent.event import Event

from app.sse import Entry


class Feed(Protocol):
    """Events of a generation, to replay and follow (local journal or a remote stream)."""

    owner: str | None
    """The principal that started the generation (None: started with authentication off)."""

    lost: bool
    """Events after a seq asked for are gone (Redis trimmed them): what is left is never sent,
    so a client never sees a jump in seq, and its resume is answered as for an unknown id."""

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


class Mirrored(Protocol):
    """What a backend sees of one of this worker's generations: enough to mirror it, no more."""

    @property
    def id(self) -> str: ...

    @property
    def owner(self) -> str | None:
        """The principal that started it (None: authentication off)."""
        ...

    @property
    def client(self) -> str:
        """The client key it counts against (SLUICE_MAX_STREAMS_PER_CLIENT)."""
        ...

    @property
    def running(self) -> bool: ...

    @property
    def ended(self) -> bool:
        """Not running, and every event, `[DONE]` included, is in (nothing more will come)."""
        ...

    def events_after(self, seq: int, limit: int | None = None) -> Sequence[Entry]:
        """The entries with a seq greater than `seq`: every one, or the first `limit`."""
        ...

    def status(self) -> dict[str, Any]:
        """The JSON of `GET /streams/<id>` (state, provider, model, created_at, events, usage, stop_reason)."""
        ...


class Local(Protocol):
    """What a backend may ask of this worker's registry, on behalf of the other workers."""

    def cancel_local(self, stream_id: str, reason: str, principal: str | None) -> bool:
        """A cancel sent from elsewhere: True if it stopped a running generation of `principal`'s."""
        ...

    def followers_left(self, stream_id: str) -> None:
        """The clients that followed `stream_id` through other workers left (or vanished)."""
        ...

    def unattended(self) -> list[str]:
        """Ids of running generations that nobody follows here and no disconnect grace watches."""
        ...


class Ids(Protocol):
    """Stream ids: claims, and early-cancel tombstones."""

    def claim(self, stream_id: str, ttl: float) -> bool | None:
        """Reserve a stream id for a generation on this worker; False if it is in use anywhere,
        None if that cannot be known now (the shared backend is down)."""
        ...

    def add_tombstone(self, stream_id: str, ttl: float, principal: str | None) -> bool:
        """Remember `principal`'s cancel of an id not (yet) known; False if it could not be kept."""
        ...

    def take_tombstone(self, stream_id: str, principal: str | None) -> bool:
        """True (once) if `principal` cancelled `stream_id` before it started.

        Only the principal that starts a generation can have cancelled it early: another's
        cancel is answered as for an unknown id and has no effect (CONTRACT.md).
        """
        ...


class Mirror(Protocol):
    """The copy of this worker's generations that the other workers read."""

    def add(self, view: Mirrored) -> None:
        """A local generation started: publish its status so other workers can find it."""
        ...

    def changed(self, stream_id: str, urgent: bool) -> None:
        """A mirrored generation appended an event (batched; `urgent`: write it now, e.g. `[DONE]`).

        Called for every event: it must never block or do I/O.
        """
        ...

    def finished(self, stream_id: str, view: Mirrored) -> None:
        """A mirrored generation ended: write its final status and start the replay TTL.

        `view` is what is left of it (app.lifecycle.ended): the mirror holds that from now on.
        """
        ...

    def forget(self, stream_id: str) -> None:
        """This worker forgot an ended generation (its replay TTL, or SLUICE_REPLAY_MAX_BYTES):
        stop holding it here once its end is written (Redis keeps its own copy for its TTL)."""
        ...


class Remote(Protocol):
    """Generations that are not in this worker's registry (they run, or ran, elsewhere)."""

    def status(self, stream_id: str) -> dict[str, Any] | None:
        """Its status, or None.

        It carries its `owner` (for the registry to check; never shown to clients).
        """
        ...

    def feed(self, stream_id: str) -> Feed | None:
        """A feed of its events, to replay and follow, or None."""
        ...

    def cancel(self, stream_id: str, reason: str, caller: str | None) -> str:
        """Ask the owning worker to cancel for `caller` (a principal; someone else's generation is
        answered as unknown): 'cancelled', 'finished', 'unknown', or 'unreachable' (the shared
        backend cannot tell now whether the generation exists)."""
        ...

    def followed(self, stream_id: str) -> bool:
        """True if clients follow `stream_id` (one of this worker's) through other workers."""
        ...


class Slots(Protocol):
    """Places a client holds at once (e.g. open responses), counted wherever it holds them."""

    def reserve(self, kind: str, client: str, limit: int) -> bool:
        """Take one of `client`'s `limit` places of `kind`, atomically; False when all are taken."""
        ...

    def release(self, kind: str, client: str) -> None:
        """Give one back. Never blocks (it may be called from the event loop's callbacks)."""
        ...


class Ledger(Protocol):
    """Token counters of budgets (app.lifecycle.budget): per key, `used` and `reserved`.

    Each call is atomic over all its keys, so that parallel generations on every worker (and,
    with Redis, every host) can never together reserve more than a budget holds.
    """

    def reserve(self, keys: Sequence[str], budgets: Sequence[int], want: int, least: int,
                ttl: int) -> tuple[int, int]:
        """Reserve `want` tokens on every key, or, when not all fit, the most that fits on all
        if that is at least `least`. Returns (granted, left before): granted 0 is a refusal."""
        ...

    def settle(self, keys: Sequence[str], reserved: int, charged: int, ttl: int) -> None:
        """A generation ended: give back its reservation and charge what it used."""
        ...

    def read(self, key: str) -> tuple[int, int]:
        """(used, reserved) of one key."""
        ...


class Revocations(Protocol):
    """Signed-out browser sessions (app.web.session): a signed cookie stays valid by itself, so
    its session id is refused here until the time the cookie would have expired."""

    def revoke(self, sid: str, until: float) -> None:
        """Refuse session `sid` from now until `until` (unix time)."""
        ...

    def revoked(self, sid: str) -> bool:
        """True when session `sid` was signed out (here, or with a shared backend anywhere)."""
        ...


class Backend(Protocol):
    """Cross-worker state: the groups and their life. Safe to call from any greenlet."""

    shared: bool
    """True when other workers/hosts can see this worker's generations (Redis)."""

    @property
    def ids(self) -> Ids: ...

    @property
    def mirror(self) -> Mirror: ...

    @property
    def remote(self) -> Remote: ...

    @property
    def ledger(self) -> Ledger: ...

    @property
    def slots(self) -> Slots: ...

    @property
    def revocations(self) -> Revocations: ...

    def start(self, local: Local) -> None:
        """Begin background work (e.g. the pub/sub listener); `local` answers for this worker."""
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
