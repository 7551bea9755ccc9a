"""The Markdown that `bench.compare` prints and writes into docs/benchmarks.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench._common import machine_line, md_table

TARGET_N = 750


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.1f}"


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "—" if value is None else fmt.format(value)


def _step(server: dict[str, Any], n: int) -> dict[str, Any] | None:
    steps: list[dict[str, Any]] = server["steps"]
    return next((s for s in steps if s["n"] == n), None)


def _held(server: dict[str, Any]) -> dict[str, Any] | None:
    held: list[dict[str, Any]] = [s for s in server["steps"] if s["holds"]]
    return max(held, key=lambda s: int(s["n"])) if held else None


def _cpu(server: dict[str, Any] | None, n: int) -> float | None:
    step = _step(server, n) if server else None
    return float(step["cpu_us_per_token"]) if step and step["cpu_us_per_token"] is not None else None


def _end(server: dict[str, Any] | None, n: int) -> float | None:
    """KB per open stream at the end of the window: what finished streams keep counted."""
    step = _step(server, n) if server else None
    return float(step["kb_per_stream_end"]) if step and step.get("kb_per_stream_end") is not None else None


def _kb_end(step: dict[str, Any] | None) -> str:
    return _num(step.get("kb_per_stream_end")) if step else "—"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


def summary(run: dict[str, Any]) -> str:
    ref = run["config"]["reference"]
    by_key = {s["key"]: s for s in run["servers"]}
    fastapi, floor = by_key.get("fastapi"), by_key.get("floor")
    rows = []
    for server in run["servers"]:
        step, held = _step(server, ref), _held(server)
        cpu = _cpu(server, ref)
        rows.append([
            server["label"],
            _num(cpu),
            _ratio(cpu, _cpu(fastapi, ref)),
            _ratio(cpu, _cpu(floor, ref)),
            held["n"] if held else "none",
            _num(held["delivered_tps"]) if held else "—",
            _num(step["kb_per_stream"]) if step else "—",
            _kb_end(step),
            _ratio(_end(server, ref), _end(fastapi, ref)),
            f"{_ms(step['ttft_added']['p50'])} / {_ms(step['ttft_added']['p99'])}" if step else "—",
            _ms(step["cancel"]["p99"]) if step and server["key"] == "sluice" else "—",
            sum(s["errors"] for s in server["steps"]),
        ])
    return md_table(
        ["server", f"CPU µs/token (N={ref})", "× FastAPI", "× floor", "largest N held", "max sustained tokens/s",
         f"KB per open stream (N={ref})", f"KB per open stream, finished ones counted (N={ref})",
         "× FastAPI (finished counted)", f"TTFT added p50 / p99 ms (N={ref})", f"cancel p99 ms (N={ref})",
         "errors (all steps)"],
        rows,
    )


def _per_answering(step: dict[str, Any], kb_per_n: float) -> str:
    """KB per stream that had its first token at the end of the window (RSS growth / answering)."""
    return f"{kb_per_n * step['n'] / step['answering_at_end']:.0f}" if step.get("answering_at_end") else "—"


def _memory_target(sluice: dict[str, Any], fastapi: dict[str, Any] | None,
                   met: Callable[[bool | None], str]) -> list[str]:
    """Issue 19's row: judged at every N where both servers hold (and failed where only the peer
    holds). A server that falls behind has users still waiting for an answer, which cost it no
    memory, so its figure per N is then too low; at such a step both figures are also given per
    stream answering, for reading only."""
    label = "memory per open stream, finished ones counted, ≤ 0.8× the FastAPI peer's (issue 19, at each N both hold)"
    if fastapi is None:
        return [label, "(the FastAPI peer was not measured in this run)", met(None)]
    parts, verdicts = [], []
    for step in sluice["steps"]:
        peer = _step(fastapi, step["n"])
        ours, theirs = step.get("kb_per_stream_end"), peer.get("kb_per_stream_end") if peer else None
        if peer is None or ours is None or theirs is None:
            continue
        ratio = ours / theirs
        if peer["holds"] and not step["holds"]:  # Sluice falling behind where the peer keeps up fails it
            verdicts.append(False)
        if step["holds"] and peer["holds"]:
            verdicts.append(ratio <= 0.8)
            parts.append(f"N={step['n']}: {ours:.0f} KB vs {theirs:.0f} KB ({ratio:.2f}×)")
            continue

        who = "neither holds" if not (step["holds"] or peer["holds"]) else (
            "Sluice does not hold" if not step["holds"] else
            f"FastAPI does not hold, {peer.get('answering_at_end', '—')} of {step['n']} answering")
        judged = "not met" if peer["holds"] else "not judged"
        parts.append(f"N={step['n']} ({who}, {judged}): {ours:.0f} vs {theirs:.0f} KB per N ({ratio:.2f}×), "
                     f"{_per_answering(step, ours)} vs {_per_answering(peer, theirs)} KB per stream answering")
    return [label, "; ".join(parts) or "—", met(all(verdicts) if verdicts else None)]


def targets(run: dict[str, Any]) -> str:
    """Sluice against the issue's targets: figures, not assertions."""
    by_key = {s["key"]: s for s in run["servers"]}
    sluice = by_key.get("sluice")
    if sluice is None or not sluice["steps"]:
        return "(Sluice was not measured in this run.)"
    ref = run["config"]["reference"]
    fastapi, floor = _cpu(by_key.get("fastapi"), ref), _cpu(by_key.get("floor"), ref)
    cpu = _cpu(sluice, ref)
    step, held = _step(sluice, ref), _held(sluice)
    load = _step(sluice, TARGET_N) or sluice["steps"][-1]

    def met(ok: bool | None) -> str:
        return "—" if ok is None else ("**met**" if ok else "not met")

    kb = step["kb_per_stream"] if step else None
    ttft50 = step["ttft_added"]["p50"] if step else None
    cancel = load["cancel"]["p99"]
    rows = [
        [f"CPU per token ≤ ⅓ of the FastAPI peer's (N={ref})", f"{_num(cpu)} µs vs {_num(fastapi)} µs / 3",
         met(None if cpu is None or fastapi is None else cpu <= fastapi / 3)],
        [f"CPU per token ≤ 2× the minimal relay's (N={ref})", f"{_num(cpu)} µs vs 2 × {_num(floor)} µs",
         met(None if cpu is None or floor is None else cpu <= 2 * floor)],
        [f"{TARGET_N} streams: relay p99 < 50 ms, TTFT p99 < 500 ms, no errors",
         f"largest N held: {held['n'] if held else 'none'}", met(held is not None and held["n"] >= TARGET_N)],
        [f"memory per open stream ≤ 64 KB (N={ref})", f"{_num(kb)} KB", met(None if kb is None else kb <= 64)],
        _memory_target(sluice, by_key.get("fastapi"), met),
        [f"TTFT added p50 < 2 ms (N={ref})", f"{_ms(ttft50)} ms", met(None if ttft50 is None else ttft50 < 0.002)],
        [f"cancel p99 < 50 ms (N={load['n']})", f"{_ms(cancel)} ms (n={load['cancel']['n']})",
         met(None if cancel is None else cancel < 0.050)],
    ]
    return md_table(["target (issues 10, 19)", "measured", "result"], rows)


def steps(run: dict[str, Any]) -> str:
    rows = []
    for server in run["servers"]:
        for s in server["steps"]:
            lat = s["latency"]
            rows.append([
                server["key"], s["n"], _num(s["offered_tps"]), _num(s["delivered_tps"]),
                f"{_ms(lat['p50'])} / {_ms(lat['p99'])} / {_ms(lat['max'])}",
                _ms(s["ttft"]["p99"]),
                f"{_ms(s['ttft_added']['p50'])} / {_ms(s['ttft_added']['p99'])}",
                _num(100 * s["server_cpu_s"] / s["window_s"]),
                _num(s["cpu_us_per_token"]),
                _num(s["rss"] / 2**20),
                _num(s["kb_per_stream"]),
                _kb_end(s),
                f"{s.get('answering_at_end', '—')} / {s.get('finished', '—')}",
                _ms(s["cancel"]["p99"]) if server["key"] == "sluice" else "—",
                s["errors"],
                _num(100 * s["load_core_cpu"]) + (" (saturated)" if s["load_core_cpu"] > 0.9 else ""),
                _num(None if s.get("others_on_server_core") is None else 100 * s["others_on_server_core"]),
                "yes" if s["holds"] else "**no**",
            ])
    return md_table(
        ["server", "N", "offered tok/s", "delivered tok/s", "relay p50 / p99 / max ms", "TTFT p99 ms",
         "TTFT added p50 / p99 ms", "server CPU %", "CPU µs/token", "RSS MB", "KB/stream",
         "KB/stream, finished counted", "answering at the end / finished", "cancel p99 ms",
         "errors", "load core CPU %", "others on server core %", "holds"],
        rows,
    )


def error_notes(run: dict[str, Any]) -> list[str]:
    notes = []
    for server in run["servers"]:
        for s in server["steps"]:
            if s["error_kinds"]:
                kinds = ", ".join(f"{k} ×{v}" for k, v in sorted(s["error_kinds"].items()))
                notes.append(f"- {server['key']} N={s['n']}: {kinds}")
    return notes


def render(run: dict[str, Any]) -> str:
    cfg = run["config"]
    before, after = run["loadavg_before"], run["loadavg_after"]
    others = [s["others_on_server_core"] for v in run["servers"] for s in v["steps"]
              if s.get("others_on_server_core") is not None]
    worst = max(others, default=0.0)
    lines = [
        f"Command: `{run['command']}` ({run['seconds'] / 60:.1f} minutes)",
        "",
        "Machine: " + machine_line(run["machine"]),
        "",
        f"Load average (1 min) before / after the run: {before[0]:.1f} / {after[0]:.1f}; other processes took up "
        f"to {100 * worst:.0f} % of the server's core during a measured window"
        + (" — **measured while other jobs ran on this machine**: each server had only a share of its core, "
           "so the figures are pessimistic and noisy." if worst > 0.1 else "."),
        "",
        f"Load: steps of N = {', '.join(map(str, cfg['steps']))} concurrent streams × {cfg['tokens']} tokens at "
        f"20 tokens/s (each user reopens a stream as soon as one ends); streams start over {cfg['ramp']:g} s, "
        f"then {cfg['window']:g} s are measured. Each server alone on core 0; the fake upstream and the load "
        f"generator on core 1. A step holds when relay p99 < 50 ms, TTFT p99 < 500 ms and no errors; past "
        f"N={cfg['reference']}, stepping stops at a clear failure or at a second failure in a row.",
        "",
        "Sluice: `gunicorn -c deploy/gunicorn.conf.py` with "
        + ", ".join(f"`{k}={v}`" for k, v in run.get("sluice_env", {}).items()) + ".",
        "",
        summary(run),
        "",
        "Sluice against the targets of issues 10 and 19:",
        "",
        targets(run),
        "",
        "Every step:",
        "",
        steps(run),
    ]
    notes = error_notes(run)
    if notes:
        lines += ["", "Errors:", "", *notes]
    return "\n".join(lines)
