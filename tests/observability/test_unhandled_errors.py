"""Issue 25, item 7: an unhandled error is a JSON 500, and its traceback one JSON log line
through Sluice's redactor (docs/security.md: every log line), not Flask's plain text."""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import UPSTREAM_KEY, sluice_env
from tests.fake_upstream import FakeUpstream
from tests.support.servers import Gunicorn

pytestmark = pytest.mark.timeout(60)


class FailingApp(Gunicorn):
    """Sluice under gunicorn, with the extra failing route of tests/observability/failing_app.py."""

    def command(self) -> list[str]:
        return [*super().command()[:-1], "tests.observability.failing_app:app"]


def test_an_unhandled_error_is_one_redacted_json_log_line(upstream: FakeUpstream) -> None:
    with FailingApp(sluice_env(upstream)) as server:
        resp = requests.get(f"{server.url}/fail", timeout=5)
        assert resp.status_code == 500
        assert resp.json() == {"error": {"type": "internal", "message": "Internal error"}}
        log = server.log()
    assert UPSTREAM_KEY not in log
    assert "Traceback" in log
    (line,) = [line for line in log.splitlines() if "RuntimeError" in line or "Traceback" in line]
    record = json.loads(line)
    assert record["level"] == "error" and "RuntimeError: the provider said" in record["exc"]
    assert "[redacted]" in record["exc"]
