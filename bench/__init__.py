"""Benchmarks: `python -m bench.lifecycle`, `python -m bench.throughput` (see bench/README.md)."""
