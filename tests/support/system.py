"""Finding the real system parts a test needs (nginx, redis-server, chromium).

On a user's machine a missing part skips the test with a clear reason; in CI (`CI=true`) a
missing part is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """True when running under CI (`CI=true`)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str, *candidates: str) -> str:
    """Return the path of a system binary, or skip (fail in CI) when it is missing."""
    for cand in (name, *candidates):
        path = shutil.which(cand) or (cand if os.path.isabs(cand) and os.access(cand, os.X_OK) else None)
        if path:
            return path
    reason = f"{name} is not installed (the README's test command installs it with apt-get)"
    if in_ci():
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)
    raise AssertionError("unreachable")
