"""Tools for Sluice written as plain functions (SLUICE_TOOLS=examples.tools.shop); see docs/integrate.md."""
