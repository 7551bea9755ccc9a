"""Other libraries' internals, each used in exactly one module here, named for the library.

Each module checks at start-up that the shapes it relies on are there, logs once which path is
in use, and counts every fallback to the slow path in `sluice_fast_path_fallbacks_total{what}`.
"""
