"""Settings read once from the environment, with casts and a sentence naming a bad key."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.observability import tracing

# The request fields a profile may fix, or list in `allow` (CONTRACT "Profiles").
PROFILE_FIELDS = ("provider", "model", "system", "max_tokens", "temperature", "tools", "reasoning",
                  "response_format", "chunking")


@dataclass(frozen=True)
class Profile:
    """One named set of fixed request fields, and what the client may still set (app.profiles
    reads them from SLUICE_PROFILES)."""

    name: str
    description: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict, hash=False)
    allow: frozenset[str] = frozenset()
    budget_tokens: int | None = None

    def public(self) -> dict[str, Any]:
        """What `GET /profiles` shows: never the fixed values (a system prompt stays private)."""
        return {"name": self.name, "description": self.description, "allow": sorted(self.allow)}

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


def _secret(env: Mapping[str, str], key: str) -> str | None:
    # Trap: never put the value in the error message.
    raw = env.get(key, "").strip()
    if raw and len(raw) < 16:
        raise ConfigError(f"{key} must be at least 16 characters (python3 -c 'import secrets; "
                          f"print(secrets.token_urlsafe(32))' makes one)")
    return raw or None


def _header_name(env: Mapping[str, str], key: str) -> str | None:
    raw = env.get(key, "").strip()
    if raw and (not re.fullmatch(r"[A-Za-z0-9-]+", raw) or raw.lower() in _NOT_USER_HEADERS):
        raise ConfigError(f"{key} must be a header name such as X-Sluice-User, got {raw!r}")
    return raw or None


def _hosts(env: Mapping[str, str], key: str) -> tuple[str, ...] | None:
    if not env.get(key, "").strip():
        return None
    names = tuple(name.lower().rstrip(".") for name in _list(env, key))
    for name in names:
        # A URL or an origin pasted here would never match a Host header: say so at start.
        if name != "*" and not re.fullmatch(r"\.?[a-z0-9.-]+|\[[0-9a-f:.]+\]", name):
            raise ConfigError(f"{key} takes host names without scheme or port (sluice.example.com, "
                              f".example.com for its subdomains, or *), got {name!r}")
    return names


# Headers a client or the HTTP stack sets: never a trusted proxy's user header.
_NOT_USER_HEADERS = frozenset({"authorization", "cookie", "host", "origin", "referer", "x-api-key",
                               "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})


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
    otel_traces: bool = False
    max_body_bytes: int = 1024 * 1024
    # Open event-stream responses (streams and attaches) per client, on every worker and host.
    max_responses_per_client: int = 32
    max_replay_events: int = 20000
    # Per worker, the bytes ended generations may hold for replay (the oldest are forgotten first).
    replay_max_bytes: int = 64 * 1024 * 1024
    # "chat" (Chat Completions: OpenAI and every compatible server) or "responses" (OpenAI's
    # Responses API); and whether a `<think>...</think>` opening a chat answer is reasoning.
    openai_api: str = "chat"
    openai_think_tags: bool = False
    # Authentication (docs/security.md). Defaults: no secret (one is generated per process),
    # no trusted proxy.
    secret_key: str | None = None
    # ANTHROPIC_API_KEY / OPENAI_API_KEY as set (the SDKs read them themselves): only for
    # `secrets`, so that no log line shows them. Kept out of the repr.
    provider_keys: tuple[str, ...] = field(default=(), repr=False)
    session_seconds: float = 43200
    trusted_user_header: str | None = None
    proxy_count: int = 0
    proxy_addresses: tuple[str, ...] = ("127.0.0.1", "::1")
    # SLUICE_ALLOWED_HOSTS as given; None when unset (then app.web.hosts decides from auth_on).
    allowed_hosts: tuple[str, ...] | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values no log line may show: the providers' keys, SLUICE_API_KEYS, SLUICE_SECRET_KEY."""
        return (*self.provider_keys, *self.api_keys, *((self.secret_key,) if self.secret_key else ()))

    @property
    def auth_on(self) -> bool:
        """True when every route but /healthz needs a principal (keys or a trusted proxy)."""
        return bool(self.api_keys or self.trusted_user_header)
    max_stream_bytes: int = 4 * 1024 * 1024
    max_write_bytes: int = 64 * 1024
    max_tombstones: int = 10000
    # Write caught-up streams from the event loop (app.delivery.takeover); off: gunicorn writes them.
    direct_write: bool = True
    # Profiles: the file (SLUICE_PROFILES), its profiles by name once app.profiles has read it
    # (at worker start), and the one a request naming none runs under.
    # Budgets: tokens per principal and window (None: unlimited), the window's length.
    profiles_file: str | None = None
    profiles: Mapping[str, Profile] = field(default_factory=dict, compare=False)
    default_profile: str | None = None
    budget_tokens: int | None = None
    budget_window_seconds: int = 86400
    # The operator's own tools: `module:function` or `module` entries (app.toolbox imports
    # them at worker start), and the seconds one tool call may run.
    tools: tuple[str, ...] = ()
    tool_timeout: float = 30.0

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
        openai_api = env.get("SLUICE_OPENAI_API", "").strip().lower() or "chat"
        if openai_api not in ("chat", "responses"):
            raise ConfigError(f"SLUICE_OPENAI_API must be chat or responses, got {openai_api!r}")
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
            replay_max_bytes=_int(env, "SLUICE_REPLAY_MAX_BYTES", 64 * 1024 * 1024),
            cancel_tombstone_seconds=_num(env, "SLUICE_CANCEL_TOMBSTONE_SECONDS", 60),
            demo_tokens_per_second=_num(env, "SLUICE_DEMO_TOKENS_PER_SECOND", 40, minimum=0.01),
            allowed_models=allowed,
            api_keys=_list(env, "SLUICE_API_KEYS"),
            allowed_origins=tuple(o.rstrip("/") for o in _list(env, "SLUICE_ALLOWED_ORIGINS")),
            max_streams_per_client=_int(env, "SLUICE_MAX_STREAMS_PER_CLIENT", 8, minimum=1),
            max_responses_per_client=_int(env, "SLUICE_MAX_RESPONSES_PER_CLIENT", 32, minimum=1),
            send_timeout=_num(env, "SLUICE_SEND_TIMEOUT", 30, minimum=0.1),
            max_tool_rounds=_int(env, "SLUICE_MAX_TOOL_ROUNDS", 8, minimum=1),
            midstream_recovery=_flag(env, "SLUICE_MIDSTREAM_RECOVERY", True),
            fallback_provider=fallback,
            coalesce_ms=_num(env, "SLUICE_COALESCE_MS", 0),
            log_content=_flag(env, "SLUICE_LOG_CONTENT", False),
            shutdown_grace_seconds=_num(env, "SLUICE_SHUTDOWN_GRACE_SECONDS", math.inf),
            otel_traces=tracing.wanted(env),
            openai_api=openai_api,
            openai_think_tags=_flag(env, "SLUICE_OPENAI_THINK_TAGS", False),
            secret_key=_secret(env, "SLUICE_SECRET_KEY"),
            provider_keys=_list(env, "ANTHROPIC_API_KEY") + _list(env, "OPENAI_API_KEY"),
            session_seconds=_num(env, "SLUICE_SESSION_SECONDS", 43200, minimum=1),
            trusted_user_header=_header_name(env, "SLUICE_TRUSTED_USER_HEADER"),
            proxy_count=_int(env, "SLUICE_PROXY_COUNT", 0),
            # gunicorn's own variable: the addresses a proxy's X-Forwarded-* may come from.
            proxy_addresses=_list(env, "FORWARDED_ALLOW_IPS") or ("127.0.0.1", "::1"),
            allowed_hosts=_hosts(env, "SLUICE_ALLOWED_HOSTS"),
            max_stream_bytes=_int(env, "SLUICE_MAX_STREAM_BYTES", 4 * 1024 * 1024, minimum=4096),
            max_write_bytes=_int(env, "SLUICE_MAX_WRITE_BYTES", 64 * 1024, minimum=1024),
            max_tombstones=_int(env, "SLUICE_MAX_TOMBSTONES", 10000, minimum=1),
            direct_write=_flag(env, "SLUICE_DIRECT_WRITE", True),
            budget_tokens=_int(env, "SLUICE_BUDGET_TOKENS", 0, minimum=1) or None,
            budget_window_seconds=_int(env, "SLUICE_BUDGET_WINDOW_SECONDS", 86400, minimum=1),
            profiles_file=env.get("SLUICE_PROFILES", "").strip() or None,
            default_profile=env.get("SLUICE_DEFAULT_PROFILE", "").strip() or None,
            tools=_list(env, "SLUICE_TOOLS"),
            tool_timeout=_num(env, "SLUICE_TOOL_TIMEOUT", 30, minimum=0.001),
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
