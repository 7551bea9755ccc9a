"""Issue 25, item 4 through the shipped nginx site: nginx passes the browser's Host on, so a site
served without authentication names itself in SLUICE_ALLOWED_HOSTS, and a rebound name is
still refused behind nginx (nginx answers any name on its default server)."""

from __future__ import annotations

import pytest
import requests

from .conftest import fake_env

pytestmark = pytest.mark.timeout(90)


def _post(url: str, host: str) -> requests.Response:
    # As the site's own page sends it: same origin, port included.
    return requests.post(f"{url}/streams", json={"prompt": "hi [fake tokens=2]"}, verify=False, timeout=5,
                         headers={"Host": host, "Origin": f"https://{host}"})


def test_the_site_name_in_allowed_hosts_is_answered_and_no_other(make_stack, fake) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=1, env=fake_env(fake, SLUICE_ALLOWED_HOSTS="sluice.example.com",
                                               SLUICE_PROXY_COUNT="1"))
    port = stack.url.rsplit(":", 1)[1]
    for host in (f"sluice.example.com:{port}", f"127.0.0.1:{port}"):
        created = _post(stack.url, host)
        assert created.status_code == 201, (host, created.text)
    refused = _post(stack.url, f"evil.example:{port}")
    assert refused.status_code == 400 and "SLUICE_ALLOWED_HOSTS" in refused.json()["error"]["message"]


def test_without_allowed_hosts_the_operator_is_told_what_to_set(make_stack, fake) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(workers=1, env=fake_env(fake, SLUICE_PROXY_COUNT="1"))
    port = stack.url.rsplit(":", 1)[1]
    # The README's and the tests' own way in (an address) works as before; a name needs the setting.
    assert _post(stack.url, f"127.0.0.1:{port}").status_code == 201
    assert _post(stack.url, f"sluice.example.com:{port}").status_code == 400
    assert "SLUICE_ALLOWED_HOSTS" in stack.gunicorn.log()
