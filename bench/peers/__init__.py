"""The servers Sluice is measured against (`python -m bench.compare`); each speaks Sluice's SSE.

Every peer answers `GET /stream?prompt=...` with `data: {"type":"text","content":...}` events,
one terminal `done` (or `error`) event and `data: [DONE]`, and `GET /healthz` with 200; each
reads `ANTHROPIC_BASE_URL` and `ANTHROPIC_API_KEY`, like the SDK. What they leave out on
purpose (auth, validation, replay, cancel, metrics) is what a tutorial leaves out.
"""

MODEL = "claude-bench"  # the fake upstream answers any model name
MAX_TOKENS = 1024
