"""Profiles (`SLUICE_PROFILES`): what a request may ask for, fixed by the operator in a TOML file.

```toml
[profiles.support]
description = "Answers questions about our products"
model = "claude-haiku-4-5"
system = "You answer questions about Example Co.'s products."
max_tokens = 800
allow = ["temperature"]
budget_tokens = 20000
```

The file is read once per worker, at start, by `create_app` (a reload re-reads it). Every fixed value is checked
by the request validator itself, so a profile can never hold what a request could not.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import replace
from typing import Any

from app.config import PROFILE_FIELDS, ConfigError, Profile, Settings
from app.validation import check_profile

_OTHER_KEYS = ("description", "allow", "budget_tokens")
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_DESCRIPTION = 500


class ProfileError(ConfigError):
    """A profiles file that cannot be used: the message names the file, the profile and the key."""


def load(settings: Settings) -> Settings:
    """`settings` with the profiles of its SLUICE_PROFILES file read and checked.

    Raise `ProfileError` (which stops the start) naming the file, the profile and the key.
    Settings that already hold their profiles, or name no file, come back as they are.
    """
    path = settings.profiles_file
    if settings.profiles or not path:
        if settings.default_profile and settings.default_profile not in settings.profiles:
            raise ProfileError("SLUICE_DEFAULT_PROFILE is set but SLUICE_PROFILES names no profiles file")
        return settings
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ProfileError(f"SLUICE_PROFILES: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"SLUICE_PROFILES: {path} is not valid TOML: {exc}") from None
    for key in data:
        if key != "profiles":
            raise ProfileError(f"SLUICE_PROFILES: {path}: unknown key {key!r} (profiles are [profiles.<name>] tables)")
    tables = data.get("profiles", {})
    if not isinstance(tables, dict):
        raise ProfileError(f"SLUICE_PROFILES: {path}: 'profiles' must be a table of [profiles.<name>] tables")
    loaded = {name: _profile(settings, path, name, table) for name, table in tables.items()}
    default = settings.default_profile
    if default and default not in loaded:
        raise ProfileError(f"SLUICE_DEFAULT_PROFILE: no profile {default!r} in {path} "
                           f"(it has {', '.join(sorted(loaded)) or 'none'})")
    return replace(settings, profiles=loaded)


def _profile(settings: Settings, path: str, name: str, table: Any) -> Profile:
    where = f"SLUICE_PROFILES: {path}: profile {name!r}"
    if not NAME_RE.fullmatch(name):
        raise ProfileError(f"{where}: a profile name is 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-'")
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: must be a table ([profiles.{name}])")
    for key in table:
        if key not in PROFILE_FIELDS and key not in _OTHER_KEYS:
            raise ProfileError(f"{where}, key {key!r}: unknown key; a profile may set "
                               f"{', '.join(PROFILE_FIELDS + _OTHER_KEYS)}")
    description = table.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ProfileError(f"{where}, key 'description': must be a string of at most {MAX_DESCRIPTION} characters")
    allow = table.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise ProfileError(f"{where}, key 'allow': must be a list of field names")
    for item in allow:
        if item not in PROFILE_FIELDS:
            raise ProfileError(f"{where}, key 'allow': unknown field {item!r}; a client may be allowed "
                               f"{', '.join(PROFILE_FIELDS)}")
    budget = table.get("budget_tokens")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise ProfileError(f"{where}, key 'budget_tokens': must be a whole number of tokens, at least 1")
    fixed = {key: value for key, value in table.items() if key in PROFILE_FIELDS}
    problem = check_profile(fixed, settings)
    if problem is not None:
        raise ProfileError(f"{where}, key {problem[0]!r}: {problem[1]}")
    return Profile(name, description, fixed, frozenset(allow), budget)


def main() -> int:
    """`python -m app.profiles`: check SLUICE_PROFILES as a worker would, before a reload.

    A reload whose new workers cannot read the file stops the whole server (gunicorn halts
    when a worker fails to boot); deploy/systemd runs this first, so a bad file fails the
    reload instead, and the running workers go on.
    """
    try:
        settings = load(Settings.from_env())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    names = ", ".join(sorted(settings.profiles)) or "none"
    print(f"{settings.profiles_file or 'SLUICE_PROFILES is not set'}: profiles {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
