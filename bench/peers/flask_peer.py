"""A naive Flask relay on gevent: the sync Anthropic SDK's `messages.stream`, one generator per request.

    gunicorn -k gevent -w 1 bench.peers.flask_peer:app
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from anthropic import Anthropic
from flask import Flask, Response, request, stream_with_context

from bench.peers import MAX_TOKENS, MODEL

app = Flask(__name__)
client = Anthropic()


def sse(data: dict[str, object]) -> str:
    return f"data: {json.dumps(data)}\n\n"


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/stream")
def stream() -> Response:
    prompt = request.args["prompt"]
    model = request.args.get("model", MODEL)
    max_tokens = int(request.args.get("max_tokens", MAX_TOKENS))

    def events() -> Iterator[str]:
        try:
            with client.messages.stream(
                model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}]
            ) as answer:
                for text in answer.text_stream:
                    yield sse({"type": "text", "content": text})
                final = answer.get_final_message()
            yield sse({"type": "done", "stop_reason": final.stop_reason, "usage": final.usage.model_dump()})
        except Exception as exc:  # noqa: BLE001  (tell the page, as the tutorials do)
            yield sse({"type": "error", "error": {"type": "upstream", "message": str(exc)}})
        yield "data: [DONE]\n\n"

    return Response(stream_with_context(events()), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
