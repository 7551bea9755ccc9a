"""`python3 -m tests [pytest args]`: the one test command, from a clean clone on a fresh machine.

1. Creates `.venv` (if missing) and installs Sluice with its test extras into it, once per
   change of pyproject.toml.
2. Installs the Debian packages the real-component tests use (nginx, redis-server, chromium)
   when they are missing and this user can (root, or passwordless sudo). On a machine where it
   cannot, those tests skip with a reason; under CI (CI=true) they fail instead.
3. Runs pytest inside the venv, in two processes (pytest-xdist, whole files to one process)
   unless the arguments choose otherwise (`-n 0` runs in this one process). Nothing is
   downloaded at test time: Chromium is Debian's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".sluice-installed"
DEBIAN = {"nginx": "nginx", "redis-server": "redis-server", "redis-sentinel": "redis-sentinel", "chromium": "chromium"}


def say(message: str) -> None:
    print(f"[tests] {message}", flush=True)


def ensure_venv() -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text().strip() == want:
        return
    if not PYTHON.exists():
        say(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    say("installing Sluice and its test dependencies into .venv")
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(want)


def ensure_debian_packages() -> None:
    missing = [pkg for binary, pkg in DEBIAN.items()
               if not shutil.which(binary) and not Path("/usr/sbin", binary).exists()]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        say(f"missing {', '.join(missing)} and no apt-get: those tests will skip (fail under CI)")
        return
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
            prefix = ["sudo", "-n"]
        else:
            say(f"missing {', '.join(missing)}; not root, so not installing: those tests will skip (fail under CI)")
            return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    say(f"apt-get install {' '.join(missing)}")
    subprocess.run([*prefix, "apt-get", "update", "-q"], check=False, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   check=False, env=env, stdout=subprocess.DEVNULL)


def parallel(args: list[str]) -> list[str]:
    """pytest-xdist's options, unless `args` already set them (or turn xdist off).

    Most of the suite waits on real servers and timers, so two processes share two CPUs well.
    `--dist loadfile` keeps a file in one process: a module's server is started once, and
    the tests of a file run in their written order.
    """
    for arg in args:
        if arg.startswith(("-n", "--numprocesses", "--dist")) or arg in ("no:xdist", "-pno:xdist"):
            return []
    workers = min(2, os.cpu_count() or 1)
    return ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []


def main() -> int:
    ensure_venv()
    ensure_debian_packages()
    args = sys.argv[1:] or ["-q"]
    args = [*parallel(args), *args]
    say(f"pytest {' '.join(args)}")
    return subprocess.run([str(PYTHON), "-m", "pytest", *args], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
