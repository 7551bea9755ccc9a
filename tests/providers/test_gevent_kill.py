"""Under gevent (as in gunicorn -k gevent), killing the greenlet that iterates a provider closes
the upstream. Runs in a child process: this test process must not be monkey-patched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.timeout(60)

CHILD = r"""
from gevent import monkey; monkey.patch_all()
import sys, time, gevent
from app.providers.anthropic import AnthropicProvider
from app.providers.openai import OpenAIProvider
from app.providers.openai_responses import OpenAIResponsesProvider
from app.providers.base import Message, ProviderRequest
from app.providers.base import TextDelta
classes = {"anthropic": AnthropicProvider, "openai": OpenAIProvider, "openai-responses": OpenAIResponsesProvider}
provider = classes[sys.argv[1]]()
req = ProviderRequest("m", (Message("user", "x [fake tokens=50 stall_after=3]"),), 100)
got = []
g = gevent.spawn(lambda: [got.append(e) for e in provider.stream(req)])
deadline = time.monotonic() + 10
while len([e for e in got if isinstance(e, TextDelta)]) < 3 and time.monotonic() < deadline:
    gevent.sleep(0.01)
g.kill(block=True, timeout=5)
print("killed", g.dead, g.exception is None, flush=True)
gevent.sleep(30)  # stay alive: the fake must see the close, not a process exit
"""


@pytest.mark.parametrize("name", ["anthropic", "openai", "openai-responses"])
def test_greenlet_kill_closes_upstream(upstream_env: FakeUpstream, name: str) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", CHILD, name], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "killed True True"
        assert upstream_env.wait_closed(1.0)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(5)
