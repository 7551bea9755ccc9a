"""Benchmarks: `python -m bench.compare`, `bench.lifecycle`, `bench.throughput` (see bench/README.md)."""
