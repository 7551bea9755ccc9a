"""The OpenAI Responses API streaming wire format (`POST /v1/responses`).

Every event is `event: <type>` + `data: {"type": <type>, "sequence_number": n, ...}`, numbered
from 0 with no gaps, and the stream simply ends after its terminal event (no `[DONE]`):

    response.created, response.in_progress
    [reasoning]  output_item.added, reasoning_summary_part.added,
                 reasoning_summary_text.delta ... (or reasoning_text.delta with think_as=reasoning_text),
                 reasoning_summary_text.done, reasoning_summary_part.done, output_item.done
    [message]    output_item.added, content_part.added, output_text.delta ... (refusal.delta for a
                 refusal), output_text.done, content_part.done, output_item.done
    [calls]      per call: output_item.added (function_call), function_call_arguments.delta ...,
                 function_call_arguments.done, output_item.done
    response.completed | response.incomplete (max_output_tokens, content_filter)

A mid-stream error (`error_after`) is an `error` event, or with `error_as=failed` a
`response.failed` carrying the response's `error`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from . import openai_wire
from .script import Plan, Script, count_words, split_json

PATH = "/v1/responses"

check_headers = openai_wire.check_headers
error_body = openai_wire.error_body


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def inspect_body(body: dict[str, Any]) -> tuple[str, str | None, int]:
    """(text holding the directive, latest function_call_output or None, input tokens)."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    directive_text = ""
    tool_result: str | None = None
    texts = [str(body.get("instructions") or "")]
    for item in items or []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            text = _text_of(item.get("content"))
            texts.append(text)
            if item.get("role") == "user" and "[fake" in text:
                directive_text = text
        elif kind == "function_call":
            texts.append(str(item.get("arguments", "")))
        elif kind == "function_call_output":
            tool_result = str(item.get("output", ""))
            texts.append(tool_result)
    return directive_text, tool_result, count_words(*texts)


def check_input(body: dict[str, Any]) -> str | None:
    """What the API rejects in a tool round: an output for a call that is not in the input."""
    items = body.get("input") if isinstance(body.get("input"), list) else []
    calls = {i.get("call_id") for i in items if isinstance(i, dict) and i.get("type") == "function_call"}
    for item in items:
        if isinstance(item, dict) and item.get("type") == "function_call_output" and item.get("call_id") not in calls:
            return f"No tool call found for function call output with call_id {item.get('call_id')}."
    return None


def max_tokens_of(body: dict[str, Any]) -> int | None:
    value = body.get("max_output_tokens")
    return int(value) if value is not None else None


def _event(seq: int, type_: str, fields: dict[str, Any]) -> bytes:
    data = json.dumps({"type": type_, "sequence_number": seq, **fields}, separators=(",", ":"))
    return f"event: {type_}\ndata: {data}\n\n".encode()


class ResponseStream:
    """One streamed response: iterate for ("head" | "token" | "tail", bytes) in wire order.

    Stands in for the wire module in the server's streaming loop (`error_event`), because an
    error event needs the next sequence number.
    """

    def __init__(self, plan: Plan, model: str, input_tokens: int, counter: list[int], body: dict[str, Any]) -> None:
        self.plan = plan
        self.input_tokens = input_tokens
        self.counter = counter
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.response: dict[str, Any] = {
            "id": "resp_" + uuid.uuid4().hex,
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": self.output,
            "parallel_tool_calls": True,
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "temperature": body.get("temperature", 1.0),
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "top_p": 1.0,
            "usage": None,
        }

    def event(self, type_: str, **fields: Any) -> bytes:
        data = _event(self.seq, type_, fields)
        self.seq += 1
        return data

    def error_event(self, script: Script) -> bytes:
        """The mid-stream failure: an `error` event, or `response.failed` (error_as=failed).

        The server calls this in place of the event it has just drawn and not sent, so the
        failure takes that event's sequence number: the numbers stay gapless.
        """
        self.seq -= 1
        code = script.error_type or "server_error"
        message = "The server had an error while processing your request. Sorry about that!"
        if script.error_as == "failed":
            self.response.update(status="failed", error={"code": code, "message": message})
            return self.event("response.failed", response=self.response)
        return self.event("error", code=code, message=message, param=None)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        plan = self.plan
        snapshot = dict(self.response, output=[])
        yield "head", self.event("response.created", response=snapshot)
        yield "head", self.event("response.in_progress", response=snapshot)
        if plan.reasoning:
            yield from self._reasoning()
        if plan.is_tool_call:
            for _ in range(plan.tool_count):
                yield from self._call()
        else:
            yield from self._message()
        yield "tail", self._terminal()

    def _reasoning(self) -> Iterator[tuple[str, bytes]]:
        index, item_id = len(self.output), "rs_" + uuid.uuid4().hex
        as_text = self.plan.think_as == "reasoning_text"
        item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
        yield "head", self.event("response.output_item.added", output_index=index, item=item)
        where = {"item_id": item_id, "output_index": index}
        if as_text:
            for piece in self.plan.reasoning:
                yield "token", self.event("response.reasoning_text.delta", **where, content_index=0, delta=piece)
        else:
            part = {"type": "summary_text", "text": ""}
            yield "head", self.event("response.reasoning_summary_part.added", **where, summary_index=0, part=part)
            for piece in self.plan.reasoning:
                yield "token", self.event(
                    "response.reasoning_summary_text.delta", **where, summary_index=0, delta=piece
                )
        text = "".join(self.plan.reasoning)
        if as_text:
            yield "tail", self.event("response.reasoning_text.done", **where, content_index=0, text=text)
            done = dict(item, content=[{"type": "reasoning_text", "text": text}])
        else:
            yield "tail", self.event("response.reasoning_summary_text.done", **where, summary_index=0, text=text)
            part = {"type": "summary_text", "text": text}
            yield "tail", self.event("response.reasoning_summary_part.done", **where, summary_index=0, part=part)
            done = dict(item, summary=[part])
        # The item to send back in the next round: only the complete one carries the whole
        # encrypted reasoning.
        done["encrypted_content"] = "gAAAA" + uuid.uuid4().hex
        self.output.append(done)
        yield "tail", self.event("response.output_item.done", output_index=index, item=done)

    def _message(self) -> Iterator[tuple[str, bytes]]:
        index, item_id = len(self.output), "msg_" + uuid.uuid4().hex
        refusal = self.plan.stop_reason == "refusal"
        item = {"id": item_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
        yield "head", self.event("response.output_item.added", output_index=index, item=item)
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        text_part = {"type": "output_text", "annotations": [], "text": ""}
        empty = {"type": "refusal", "refusal": ""} if refusal else text_part
        yield "head", self.event("response.content_part.added", **where, part=empty)
        for piece in self.plan.pieces:
            if refusal:
                yield "token", self.event("response.refusal.delta", **where, delta=piece)
            else:
                yield "token", self.event("response.output_text.delta", **where, delta=piece, logprobs=[])
        text = "".join(self.plan.pieces)
        if refusal:
            part = {"type": "refusal", "refusal": text}
            yield "tail", self.event("response.refusal.done", **where, refusal=text)
        else:
            part = {"type": "output_text", "annotations": [], "text": text}
            yield "tail", self.event("response.output_text.done", **where, text=text, logprobs=[])
        yield "tail", self.event("response.content_part.done", **where, part=part)
        status = "completed" if self.plan.stop_reason in ("end_turn", "refusal") else "incomplete"
        done = dict(item, status=status, content=[part])
        self.output.append(done)
        yield "tail", self.event("response.output_item.done", output_index=index, item=done)

    def _call(self) -> Iterator[tuple[str, bytes]]:
        index, item_id = len(self.output), "fc_" + uuid.uuid4().hex
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": "call_" + uuid.uuid4().hex[:24],
            "name": self.plan.tool_name,
        }
        yield "head", self.event("response.output_item.added", output_index=index, item=item)
        where = {"item_id": item_id, "output_index": index}
        pieces = split_json(self.plan.tool_args or {})
        for piece in pieces:
            yield "token", self.event("response.function_call_arguments.delta", **where, delta=piece)
        arguments = "".join(pieces)
        yield "tail", self.event("response.function_call_arguments.done", **where, arguments=arguments)
        done = dict(item, status="completed", arguments=arguments)
        self.output.append(done)
        yield "tail", self.event("response.output_item.done", output_index=index, item=done)

    def _terminal(self) -> bytes:
        sent = self.counter[0]
        self.response["usage"] = {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {
                "cached_tokens": min(self.plan.cached, self.input_tokens),
                "cache_write_tokens": 0,
            },
            "output_tokens": sent,
            "output_tokens_details": {"reasoning_tokens": min(sent, len(self.plan.reasoning))},
            "total_tokens": self.input_tokens + sent,
        }
        reason = {"max_tokens": "max_output_tokens", "content_filter": "content_filter"}.get(self.plan.stop_reason)
        if reason is None:
            self.response["status"] = "completed"
            return self.event("response.completed", response=self.response)
        self.response.update(status="incomplete", incomplete_details={"reason": reason})
        return self.event("response.incomplete", response=self.response)
