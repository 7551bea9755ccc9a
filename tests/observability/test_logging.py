"""app.observability.logging: one JSON line per generation, and never a key."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from app.config import Settings
from app.observability import logging as obslog

pytestmark = pytest.mark.timeout(30)

ANTHROPIC_KEY = "sk-ant-api03-Zq8xv2LmN0pQrS7tUvWxYz-AbCdEf_GhIjKl"
OPENAI_KEY = "sk-proj-9f8e7d6c5b4a39281706AbCdEfGh"
SLUICE_KEYS = "team-alpha-4c1e9b,team-beta-77aa01"


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """The sluice loggers configured as create_app does, their JSON lines captured in a buffer."""
    settings = Settings.from_env(
        {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OPENAI_API_KEY": OPENAI_KEY, "SLUICE_API_KEYS": SLUICE_KEYS}
    )
    obslog.configure_logging("INFO", secrets=settings.secrets)
    (handler,) = [h for h in logging.getLogger("sluice").handlers if getattr(h, "_sluice_json_handler", False)]
    assert isinstance(handler, logging.StreamHandler)
    buf = io.StringIO()
    old = handler.setStream(buf)
    yield buf
    handler.setStream(old)  # type: ignore[arg-type]


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


FIELDS: dict[str, object] = {
    "stream_id": "3q2-7hT0bq1wJ4sC9aRkfg",
    "provider": "anthropic",
    "model": "claude-haiku-4-5",
    "outcome": "error",
    "error_type": "authentication",
    "ttft_ms": None,
    "input_tokens": 12,
    "output_tokens": 0,
    "duration_ms": 310,
}


def test_configure_logging_is_idempotent() -> None:
    obslog.configure_logging()
    obslog.configure_logging("debug")
    logger = logging.getLogger("sluice")
    assert len([h for h in logger.handlers if getattr(h, "_sluice_json_handler", False)]) == 1
    assert logger.level == logging.DEBUG
    assert logger.propagate is False
    obslog.configure_logging()


def test_one_json_line_per_generation(log: io.StringIO) -> None:
    obslog.log_generation(dict(FIELDS))
    (line,) = lines(log)
    for key, val in FIELDS.items():
        assert line[key] == val
    assert line["level"] == "info" and line["logger"] == "sluice.generation"


def test_content_is_dropped_unless_opted_in(log: io.StringIO) -> None:
    content = {"prompt": "my secret plan", "answer": "t0 t1", "messages": [{"role": "user", "content": "x"}]}
    obslog.log_generation({**FIELDS, **content})
    assert "my secret plan" not in log.getvalue()
    assert not set(content) & set(lines(log)[0])

    obslog.log_generation({**FIELDS, **content}, content=True)  # SLUICE_LOG_CONTENT=1
    assert lines(log)[1]["prompt"] == "my secret plan"
    assert lines(log)[1]["answer"] == "t0 t1"


@pytest.mark.parametrize(
    "text",
    [
        f"401 invalid x-api-key: {ANTHROPIC_KEY}",
        f"Incorrect API key provided: {OPENAI_KEY}.",
        "key sk-ant-admin01-AAAAAAAAAAAAAAAAAAAA is not allowed",
        "Authorization: Bearer abcdefghijklmnop0123",
        "client key team-beta-77aa01 over its limit",
    ],
)
def test_redact_removes_keys(log: io.StringIO, text: str) -> None:
    cleaned = obslog.redact(text)
    assert obslog.REDACTED in cleaned
    for secret in (ANTHROPIC_KEY, OPENAI_KEY, "team-beta-77aa01", "abcdefghijklmnop0123", "sk-ant-admin01"):
        assert secret not in cleaned


def test_redact_leaves_ordinary_text() -> None:
    assert obslog.redact("upstream overloaded (529), retry in 2s") == "upstream overloaded (529), retry in 2s"
    assert obslog.redact("") == ""


def test_no_key_reaches_the_log(log: io.StringIO) -> None:
    obslog.log_generation(  # even with content on
        {**FIELDS, "error_message": f"bad key {OPENAI_KEY}", "prompt": f"use {ANTHROPIC_KEY}"}, content=True
    )
    logging.getLogger("sluice.web").warning("upstream said %s", f"invalid key {ANTHROPIC_KEY}")
    try:
        raise RuntimeError(f"boom {OPENAI_KEY}")
    except RuntimeError:
        logging.getLogger("sluice.web").exception("failed with team-alpha-4c1e9b")
    out = log.getvalue()
    assert len(lines(log)) == 3
    for secret in (ANTHROPIC_KEY, OPENAI_KEY, "team-alpha-4c1e9b"):
        assert secret not in out
