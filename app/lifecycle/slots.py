"""One place a client holds (an open event-stream response), and its release, exactly once.

The route reserves it before anything else (`Registry.open_response`); the response that
follows the generation owns it from then on (its `Cursor`, app.delivery.cursor, whichever driver
writes it) and gives it back in the cursor's `close`, which runs however the response ends:
`[DONE]` written, client gone, send timeout, drain.
"""

from __future__ import annotations

from collections.abc import Callable


class Slot:
    """A reserved place; `release()` gives it back once, however often it is called."""

    __slots__ = ("_release",)

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
