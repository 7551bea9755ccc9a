"""The app factory: no connection at import time; SDKs imported up front only when configured."""

from __future__ import annotations

import subprocess
import sys

from tests.support.servers import ROOT, base_env

PROBE = """
import socket, ssl, sys
def refuse(*a, **k):
    raise AssertionError("a connection or SSL context was made at import time")
socket.socket.connect = refuse
socket.create_connection = refuse
ssl.create_default_context = refuse
ssl.SSLContext.__init__ = refuse
import wsgi
print(",".join(sorted(m for m in ("anthropic", "openai", "redis") if m in sys.modules)))
"""


def probe(**env: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=base_env(**env), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_wsgi_opens_nothing_with_redis_and_both_providers() -> None:
    loaded = probe(ANTHROPIC_API_KEY="k", OPENAI_API_KEY="k", SLUICE_REDIS_URL="redis://127.0.0.1:1/0")
    # The SDKs are imported (a second of CPU better spent before the first request), not connected.
    assert "anthropic" in loaded and "openai" in loaded


def test_demo_only_imports_no_sdk() -> None:
    assert probe() == ""
