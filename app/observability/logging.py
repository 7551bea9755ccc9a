"""JSON log lines for the ``sluice`` loggers, one per generation, with keys kept out.

gunicorn captures a worker's stderr, so a JSON object per line on stderr is all a log shipper
(journald, Docker, Vector, ...) needs. Every line passes through `redact`: a provider's error
text may echo the key that was sent, and no key may ever reach a log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

LOGGER = "sluice"
GENERATION_LOGGER = "sluice.generation"

# Text of the conversation: logged only when the operator opts in with SLUICE_LOG_CONTENT=1.
CONTENT_KEYS = frozenset({"prompt", "answer", "messages", "system"})


REDACTED = "[redacted]"

# sk-ant-api03-..., sk-proj-..., sk-...: the shapes of Anthropic and OpenAI keys; and bearer
# tokens in echoed headers.
_KEY_SHAPES = re.compile(r"sk-(?:ant-)?[A-Za-z0-9_\-]{8,}|(?<=Bearer )[A-Za-z0-9._~+/=\-]{8,}")

# Shorter secrets are not searched for: replacing every "abc" would wreck the logs and a key
# that short is no secret anyway.
_MIN_SECRET_LEN = 4

_HANDLER_MARK = "_sluice_json_handler"

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# The configured secrets (Settings.secrets, given to `configure_logging`), longest first: no
# partial leftovers.
_secrets: list[str] = []


def redact(text: str) -> str:
    """`text` without anything that looks like an API key or equals a configured one."""
    for secret in _secrets:
        text = text.replace(secret, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)


def _clean(value: object) -> object:
    """A JSON-able copy of `value` with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        for key, value in vars(record).items():
            if key not in _RESERVED and key != "fields" and not key.startswith("_"):
                line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(_clean(line), ensure_ascii=False, separators=(",", ":"))


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Send the ``sluice`` loggers to stderr as JSON lines, with `secrets` (Settings.secrets)
    redacted from every line. Calling it again only sets the level and the secrets."""
    _secrets[:] = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level.upper())
    if any(getattr(h, _HANDLER_MARK, False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
    logger.propagate = False  # gunicorn's root handlers would print each line a second time


def adopt(logger: logging.Logger) -> None:
    """Send `logger` (Flask's `app.logger`: the traceback of an unhandled error) through the same
    JSON handler, redactor included, instead of its own plain-text one. After `configure_logging`."""
    handlers = [h for h in logging.getLogger(LOGGER).handlers if getattr(h, _HANDLER_MARK, False)]
    logger.handlers = handlers
    logger.propagate = False


def log_generation(fields: dict[str, object], *, content: bool = False) -> None:
    """Log ONE line for a generation that ended: stream_id, provider, model, outcome, reason or
    error_type, ttft_ms, input_tokens, output_tokens (and cache_read_input_tokens,
    cache_creation_input_tokens, reasoning_tokens where reported), duration_ms. Conversation text (prompt,
    answer, messages, system) is dropped unless `content` (SLUICE_LOG_CONTENT=1)."""
    record = {k: v for k, v in fields.items() if content or k not in CONTENT_KEYS}
    logging.getLogger(GENERATION_LOGGER).info("generation", extra={"fields": record})
