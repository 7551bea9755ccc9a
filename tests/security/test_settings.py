"""The authentication settings: read once, checked, and a bad secret is never repeated back."""

from __future__ import annotations

import pytest

from app.config import ConfigError, Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.secret_key, s.session_seconds, s.trusted_user_header, s.proxy_count) == (None, 43200, None, 0)
    assert s.proxy_addresses == ("127.0.0.1", "::1") and not s.auth_on


def test_values() -> None:
    s = Settings.from_env({"SLUICE_SECRET_KEY": "x" * 32, "SLUICE_SESSION_SECONDS": "60",
                           "SLUICE_TRUSTED_USER_HEADER": "X-Sluice-User", "SLUICE_PROXY_COUNT": "1",
                           "FORWARDED_ALLOW_IPS": "10.0.0.2, 10.1.0.0/16"})
    assert s.secret_key == "x" * 32 and s.session_seconds == 60 and s.auth_on
    assert s.trusted_user_header == "X-Sluice-User" and s.proxy_count == 1
    assert s.proxy_addresses == ("10.0.0.2", "10.1.0.0/16")
    assert Settings.from_env({"SLUICE_API_KEYS": "k" * 20}).auth_on


def test_a_short_secret_is_refused_without_being_repeated() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"SLUICE_SECRET_KEY": "hunter2-short"})
    assert "SLUICE_SECRET_KEY" in str(err.value) and "hunter2" not in str(err.value)


@pytest.mark.parametrize("name", ["X Sluice", "Authorization", "cookie", "X-Forwarded-For", "X_User:"])
def test_a_bad_user_header_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="SLUICE_TRUSTED_USER_HEADER"):
        Settings.from_env({"SLUICE_TRUSTED_USER_HEADER": name})


@pytest.mark.parametrize(("key", "value"), [("SLUICE_SESSION_SECONDS", "0"), ("SLUICE_PROXY_COUNT", "-1"),
                                            ("SLUICE_PROXY_COUNT", "one")])
def test_bad_numbers_are_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Settings.from_env({key: value})
