"""What Sluice tells its operators: Prometheus metrics and one JSON log line per generation.

Two modules, both free of import-time side effects:

- `metrics` -- counters, gauges and histograms, correct across gunicorn workers
  (prometheus_client's multiprocess mode whenever `PROMETHEUS_MULTIPROC_DIR` is set);
- `logging` -- JSON lines on stderr for the ``sluice`` loggers, and `redact` for any text
  that might carry an API key.
"""
