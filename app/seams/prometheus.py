"""prometheus_client's internals Sluice relies on: its storage, chosen again in a worker.

prometheus_client chooses where metric values live (`values.ValueClass`: memory-mapped files
shared by every worker, or this process's memory) once, when it is first imported, from
PROMETHEUS_MULTIPROC_DIR. Under gunicorn something may import it before that variable is set
(`deploy/gunicorn.conf.py` sets it in the master); its choice is then stale, and each worker
would answer a scrape with its own values only. `use_multiprocess_values()` makes it choose
again (`values.get_value_class()`), before any of Sluice's metrics is created.

Imports nothing of Sluice's: `app/observability/metrics.py` calls it while building its
metrics, and counts a fallback (`what="prometheus"`) when it returns False.
"""

from __future__ import annotations

import logging

log = logging.getLogger("sluice.seams")

FALLBACK = "prometheus"

_MULTIPROCESS_VALUE = "MmapedValue"  # the class prometheus_client's MultiProcessValue() returns

_logged = False


def use_multiprocess_values() -> bool:
    """Make metrics created from now on store their values in the multiprocess directory.

    Call only with PROMETHEUS_MULTIPROC_DIR set. True if they will; False if prometheus_client's
    shapes are not there (then each worker's values are its own: logged once).
    """
    global _logged
    problem = None
    try:
        from prometheus_client import values

        if values.ValueClass.__name__ != _MULTIPROCESS_VALUE:
            # Imported (by someone) before the directory was set: choose again, the env is final.
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
            if values.ValueClass.__name__ != _MULTIPROCESS_VALUE:
                problem = f"values.get_value_class() chose {values.ValueClass.__name__}"
            chosen = "chosen again in this worker"
        else:
            chosen = "as chosen at import"
    except (ImportError, AttributeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if not _logged:
        _logged = True
        if problem is None:
            log.info("seams: prometheus: metric values in the multiprocess directory (%s)", chosen)
        else:
            log.warning(
                "seams: prometheus: %s; metric values stay in this worker's memory (a scrape sees one"
                ' worker\'s), counted in sluice_fast_path_fallbacks_total{what="%s"}',
                problem, FALLBACK,
            )
    return problem is None
