"""An operator's tool (SLUICE_TOOLS) that makes a span of its own, as an instrumented library would."""

from opentelemetry import trace


def traced_lookup(item: str) -> str:
    """Look an item up, inside a span of the operator's own."""
    with trace.get_tracer("operator").start_as_current_span("operator lookup"):
        return f"{item}: in stock"
