"""Settings read once from the environment, with casts and a sentence naming a bad key."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_ANTHROPIC_MODEL = "claude-haiku-4-5"
DEFAULT_OPENAI_MODEL = "gpt-5-mini"
DEMO_MODEL = "sluice-demo-1"


class ConfigError(ValueError):
    """An environment variable that cannot be used as it is."""


def _num(env: Mapping[str, str], key: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, got {raw!r}")
    return value


def _int(env: Mapping[str, str], key: str, default: int, *, minimum: int = 0) -> int:
    value = _num(env, key, default, minimum=minimum)
    if value != int(value):
        raise ConfigError(f"{key} must be a whole number, got {env.get(key)!r}")
    return int(value)


def _flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key} must be 0 or 1, got {raw!r}")


def _list(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(key, "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of the contract's configuration table."""

    default_provider: str
    anthropic_model: str
    openai_model: str
    anthropic_configured: bool
    openai_configured: bool
    redis_url: str | None
    heartbeat_seconds: float
    disconnect_grace_seconds: float
    first_token_timeout: float
    idle_timeout: float
    max_duration: float
    max_tokens: int
    max_streams: int
    replay_ttl_seconds: float
    cancel_tombstone_seconds: float
    demo_tokens_per_second: float
    allowed_models: tuple[str, ...]
    api_keys: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    max_streams_per_client: int
    send_timeout: float
    max_tool_rounds: int
    midstream_recovery: bool
    fallback_provider: str | None
    coalesce_ms: float
    log_content: bool
    shutdown_grace_seconds: float
    max_body_bytes: int = 1024 * 1024
    max_replay_events: int = 20000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment (default: `os.environ`); raise `ConfigError` on a bad value."""
        env = os.environ if env is None else env
        anthropic_ok = bool(env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_BASE_URL"))
        openai_ok = bool(env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"))
        provider = env.get("SLUICE_PROVIDER", "").strip().lower()
        if not provider:
            provider = "anthropic" if env.get("ANTHROPIC_API_KEY") else (
                "openai" if env.get("OPENAI_API_KEY") else "demo"
            )
        if provider not in ("anthropic", "openai", "demo"):
            raise ConfigError(f"SLUICE_PROVIDER must be anthropic, openai or demo, got {provider!r}")
        fallback = env.get("SLUICE_FALLBACK_PROVIDER", "").strip().lower() or None
        if fallback not in (None, "anthropic", "openai", "demo"):
            raise ConfigError(f"SLUICE_FALLBACK_PROVIDER must be anthropic, openai or demo, got {fallback!r}")
        anthropic_model = env.get("SLUICE_ANTHROPIC_MODEL", "").strip() or DEFAULT_ANTHROPIC_MODEL
        openai_model = env.get("SLUICE_OPENAI_MODEL", "").strip() or DEFAULT_OPENAI_MODEL
        allowed = _list(env, "SLUICE_ALLOWED_MODELS") or (anthropic_model, openai_model)
        return cls(
            default_provider=provider,
            anthropic_model=anthropic_model,
            openai_model=openai_model,
            anthropic_configured=anthropic_ok,
            openai_configured=openai_ok,
            redis_url=env.get("SLUICE_REDIS_URL", "").strip() or None,
            heartbeat_seconds=_num(env, "SLUICE_HEARTBEAT_SECONDS", 15, minimum=0.05),
            disconnect_grace_seconds=_num(env, "SLUICE_DISCONNECT_GRACE_SECONDS", 5),
            first_token_timeout=_num(env, "SLUICE_FIRST_TOKEN_TIMEOUT", 60, minimum=0.05),
            idle_timeout=_num(env, "SLUICE_IDLE_TIMEOUT", 60, minimum=0.05),
            max_duration=_num(env, "SLUICE_MAX_DURATION", 600, minimum=0.05),
            max_tokens=_int(env, "SLUICE_MAX_TOKENS", 4096, minimum=1),
            max_streams=_int(env, "SLUICE_MAX_STREAMS", 1000, minimum=1),
            replay_ttl_seconds=_num(env, "SLUICE_REPLAY_TTL_SECONDS", 300),
            cancel_tombstone_seconds=_num(env, "SLUICE_CANCEL_TOMBSTONE_SECONDS", 60),
            demo_tokens_per_second=_num(env, "SLUICE_DEMO_TOKENS_PER_SECOND", 40, minimum=0.01),
            allowed_models=allowed,
            api_keys=_list(env, "SLUICE_API_KEYS"),
            allowed_origins=tuple(o.rstrip("/") for o in _list(env, "SLUICE_ALLOWED_ORIGINS")),
            max_streams_per_client=_int(env, "SLUICE_MAX_STREAMS_PER_CLIENT", 8, minimum=1),
            send_timeout=_num(env, "SLUICE_SEND_TIMEOUT", 30, minimum=0.1),
            max_tool_rounds=_int(env, "SLUICE_MAX_TOOL_ROUNDS", 8, minimum=1),
            midstream_recovery=_flag(env, "SLUICE_MIDSTREAM_RECOVERY", True),
            fallback_provider=fallback,
            coalesce_ms=_num(env, "SLUICE_COALESCE_MS", 0),
            log_content=_flag(env, "SLUICE_LOG_CONTENT", False),
            shutdown_grace_seconds=_num(env, "SLUICE_SHUTDOWN_GRACE_SECONDS", math.inf),
        )

    def model_allowed(self, model: str) -> bool:
        """True when `model` may be named by a request (`*` allows any)."""
        return "*" in self.allowed_models or model in self.allowed_models

    def default_model(self, provider: str) -> str:
        """The model used when a request names none."""
        return {"anthropic": self.anthropic_model, "openai": self.openai_model}.get(provider, DEMO_MODEL)

    def providers_available(self) -> list[tuple[str, str]]:
        """(provider, default model) pairs this server can use, default provider first."""
        names = ["demo"]
        if self.anthropic_configured:
            names.insert(0, "anthropic")
        if self.openai_configured:
            names.insert(0, "openai")
        if self.default_provider in names:
            names.remove(self.default_provider)
        names.insert(0, self.default_provider)
        return [(n, self.default_model(n)) for n in names]
