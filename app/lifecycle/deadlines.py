"""A generation's deadlines: the whole answer (max_duration) and, per upstream call, the first
token and the silence between events (first_token, idle).

Each fires wherever the producer is blocked and ends the generation as type `timeout`.
"""

from __future__ import annotations

import time
from typing import Any

from gevent.hub import get_hub


class Deadline(BaseException):
    """Raised by a generation's own timers (never escapes `_run`).

    A `BaseException`, as `gevent.Timeout` is: the timer fires wherever the producer is blocked,
    often inside an SDK's `send`, and the SDKs turn any `Exception` raised there into
    `APIConnectionError` ("Could not connect"). Only an `except BaseException` that re-raises
    may stand between a timer and `_run`.
    """

    def __init__(self, kind: str, seconds: float) -> None:
        super().__init__(kind)
        self.kind = kind
        self.seconds = seconds

    def message(self) -> str:
        what = {
            "first_token": "The model sent no first token",
            "idle": "The model went silent",
            "max_duration": "The answer took too long",
        }[self.kind]
        return f"{what} within {self.seconds:g} s"


class RoundTimer:
    """The first-token and idle deadlines of one upstream call, on one libev timer.

    A `Timeout` made, started and closed around every provider event cost more than relaying
    the event. Instead the producer (`Producer._round`) stamps `since` when it starts waiting
    for the upstream and clears it when an event arrived; the timer, when it fires, checks the deadline that applies
    and re-arms itself for the rest (at most once per period: an answer that streams never
    touches it). It throws `Deadline` into the producer only while the producer waits on the
    upstream, as the per-event `Timeout` did.
    """

    __slots__ = ("_producer", "_first_token", "_idle", "_started", "_timer", "since", "relayed")

    def __init__(self, producer: Any, first_token: float, idle: float) -> None:
        self._producer = producer
        self._first_token = first_token
        self._idle = idle
        self._started = time.monotonic()
        self._timer: Any = None
        self.since: float | None = None  # when the producer began waiting for the upstream
        self.relayed = False  # the round relayed something: the idle deadline applies
        self._arm(first_token)

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.close()
        self._timer = get_hub().loop.timer(max(seconds, 0.001))
        self._timer.start(self._fire)

    def now_relayed(self) -> None:
        """The round's first output: from now on the idle deadline applies."""
        self.relayed = True
        self._arm(self._idle)

    def _fire(self) -> None:
        now = time.monotonic()
        since = self.since
        waited = since if since is not None else now
        due = waited + self._idle if self.relayed else self._started + self._first_token
        if since is None or now < due:
            self._arm(due - now)  # not waiting on the upstream now, or not due yet
            return
        kind, seconds = ("idle", self._idle) if self.relayed else ("first_token", self._first_token)
        self.close()
        self._producer.throw(Deadline(kind, seconds))

    def close(self) -> None:
        """Stop the timer (idempotent)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()
