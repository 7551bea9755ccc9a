"""`python -m tests.fake_upstream --port N`: run the fake alone (for benchmarks and manual runs)."""

from __future__ import annotations

import argparse
import threading

from .server import FakeUpstream


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Anthropic/OpenAI streaming upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    fake = FakeUpstream(args.host, args.port).start()
    print(fake.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
