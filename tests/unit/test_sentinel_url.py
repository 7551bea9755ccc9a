"""`redis+sentinel://` URLs (issue 22 item 3): what each part means, clear errors without the
password, and the password kept out of logs."""

from __future__ import annotations

import pytest

from app.backends.redis.keys import redacted_url
from app.backends.redis.sentinel import is_sentinel_url, parse


def test_sentinels_service_db_and_the_data_servers_password() -> None:
    spec = parse("redis+sentinel://:s3cret@10.0.0.1:26380,sentinel-b,[::1]:26381/mymaster/2")
    assert spec.sentinels == [("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381)]
    assert (spec.service, spec.db, spec.password, spec.username, spec.tls) == ("mymaster", 2, "s3cret", None, False)


def test_tls_user_and_the_sentinels_own_password() -> None:
    spec = parse("rediss+sentinel://app:p%40ss@h:1/svc?sentinel_password=other&ssl_ca_certs=/etc/ca.pem")
    assert spec.tls and spec.username == "app" and spec.password == "p@ss" and spec.db == 0
    assert spec.options == {"sentinel_password": "other", "ssl_ca_certs": "/etc/ca.pem"}
    assert is_sentinel_url("REDISS+SENTINEL://h/svc") and not is_sentinel_url("redis://h:6379/0")


@pytest.mark.parametrize("url", [
    "redis+sentinel://:hunter2@h:1",                 # no service
    "redis+sentinel://:hunter2@h:1/svc/0/extra",
    "redis+sentinel://:hunter2@h:1/svc/zero",
    "redis+sentinel://:hunter2@h:port/svc",
    "redis+sentinel://:hunter2@h:1,/svc",
    "redis+sentinel://:hunter2@h:1/svc?timeout=3",  # an option it does not know
])
def test_malformed_urls_are_refused_without_the_password(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse(url)
    assert "hunter2" not in str(caught.value)


def test_the_password_never_shows_in_the_redacted_url() -> None:
    shown = redacted_url("redis+sentinel://:hunter2@a:1,b:2/svc/0?sentinel_password=hunter3")
    assert shown == "redis+sentinel://:***@a:1,b:2/svc/0"
    assert redacted_url("redis://u:hunter2@h:6379/0") == "redis://u:***@h:6379/0"
