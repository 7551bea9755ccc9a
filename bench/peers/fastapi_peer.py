"""The FastAPI relay as the tutorials write it: `StreamingResponse` over `AsyncAnthropic` `messages.stream`.

    uvicorn bench.peers.fastapi_peer:app --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from anthropic import AsyncAnthropic
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from bench.peers import MAX_TOKENS, MODEL

app = FastAPI()
client = AsyncAnthropic()


def sse(data: dict[str, object]) -> str:
    return f"data: {json.dumps(data)}\n\n"


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/stream")
async def stream(prompt: str, model: str = MODEL, max_tokens: int = MAX_TOKENS) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            async with client.messages.stream(
                model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}]
            ) as answer:
                async for text in answer.text_stream:
                    yield sse({"type": "text", "content": text})
                final = await answer.get_final_message()
            yield sse({"type": "done", "stop_reason": final.stop_reason, "usage": final.usage.model_dump()})
        except Exception as exc:  # noqa: BLE001  (the tutorials' catch-all: tell the page)
            yield sse({"type": "error", "error": {"type": "upstream", "message": str(exc)}})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
