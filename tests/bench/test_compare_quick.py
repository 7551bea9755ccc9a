"""The side-by-side benchmark harness runs end to end and reports every figure (a tiny load).

Sluice only (the peers' packages are optional), 4 streams of 40 tokens, 2 cancel probes:
this proves the harness (fake, pinning, load generator, /proc readings, report), not Sluice's
speed: no figure is compared with a target here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_compare_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--servers", "sluice", "--steps", "4", "--ramp", "1",
         "--window", "2", "--tokens", "40", "--cancels", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CPU µs/token" in proc.stdout and "Sluice against the targets of issues 10 and 19" in proc.stdout

    run = json.loads(out.read_text())
    [server] = run["servers"]
    assert server["key"] == "sluice"
    [step] = server["steps"]
    assert step["n"] == 4
    assert step["errors"] == 0, step["error_kinds"]
    assert step["tokens_window"] > 0 and step["latency"]["n"] == step["tokens_window"]
    assert step["latency"]["p99"] is not None and step["latency"]["p99"] > 0
    assert step["cpu_us_per_token"] is not None and step["cpu_us_per_token"] > 0
    assert step["rss"] > 0 and step["idle_rss"] > 0 and step["kb_per_stream"] is not None
    assert step["rss_end"] > 0 and step["kb_per_stream_end"] is not None  # finished streams counted
    assert step["ttft"]["n"] >= 4 and step["ttft_added"]["p50"] is not None
    # both probes were cancelled: Sluice answered 200 and the stream got its `cancelled` event
    assert step["cancel_status"] == {"200": 2} and step["cancel"]["n"] == 2
