"""A wire-level fake of the Anthropic Messages API and the OpenAI Chat Completions and Responses APIs.

A real loopback HTTP/1.1 server, so the real SDKs (pointed at it with `base_url`) parse it::

    with FakeUpstream() as fake:
        os.environ["ANTHROPIC_BASE_URL"] = fake.anthropic_base_url
        os.environ["OPENAI_BASE_URL"] = fake.openai_base_url

Each request's behaviour comes from a directive in the last user message that has one, e.g.
``"hello [fake tokens=20 pace=0.05]"``. Keys (all optional):

==================  ==============================================================================
``tokens=N``        answer length (default 12): "t0 ", "t1 ", ... "t{N-1} "
``pace=S``          seconds between tokens (default 0)
``first_delay=S``   seconds before the first token (after message_start / the role chunk)
``status=CODE``     fail before streaming, with the provider's real error body (429: retry-after)
``error_after=K``   the provider's mid-stream error event after K tokens, then end the stream
``error_type=T``    error type of that event (default overloaded_error / server_error)
``drop_after=K``    abort the TCP connection after K tokens (no terminal events)
``drop=rst``        ... with a TCP reset instead of a FIN
``stall_after=K``   send nothing more after K tokens, until the client closes (0: before any)
``hang=R``          accept call R and send nothing, not even headers, until the client closes
                    (R=1: the first call; R=2: the call that carries a tool result)
``ping_every=S``    Anthropic ``ping`` events every S seconds while paced or stalled
``tool=NAME``       without a tool result in the messages: a tool call to NAME (stop tool_use);
``args=JSON``       its arguments (no spaces). With a tool result: "result: <content> " + tokens
``json=1``          a JSON object text {"answer": "t0 t1 ...", "n": N} in 4-character pieces
``say=TEXT``        answer with this text instead (percent-encoded, e.g. ``say=%3Cb%3Ehi%3C%2Fb%3E``),
                    in 5-character pieces
``parts=N``         with ``say``: the text in N pieces of (nearly) equal length instead
``pad=N``           each token padded with N dots ("t0.... "): large fragments
``stop=REASON``     stop reason (max_tokens, stop_sequence, content_filter; OpenAI names work too);
                    ``stop=refusal``: OpenAI streams the answer as ``delta.refusal`` / ``refusal.delta``
``times=N``         ``status`` / ``hangup`` only for the first N requests carrying this directive
                    since the last reset (e.g. ``status=529 times=1``: one 529, then an answer)
``retry_after=S``   the ``retry-after`` header of a ``status`` answer (429 sends ``1`` by default);
``retry_after_ms=``  ``retry-after-ms`` likewise
``hangup=1``        close the connection with a reset after reading the request, without answering
``prefill=reject``  Anthropic: 400 (the API's message) if the last message is an assistant turn, as
                    current models do; so does any model whose name contains ``no-prefill``
``think=N``         Anthropic, with ``thinking`` enabled in the request: a signed thinking block of N
                    pieces "r0 ", "r1 ", ... (default 3) before the answer; ``redacted=1`` adds a
                    redacted_thinking block after it. Thinking blocks sent back must be unchanged
                    (signature checked), and with thinking on, an assistant tool-use turn must start
                    with them: else a 400, as the API answers.
                    OpenAI (whatever the request asks): N reasoning pieces before the answer
                    (counted as output tokens); none without ``think``
``think_as=F``      OpenAI Chat: ``reasoning_content`` (default), ``reasoning`` or ``tags`` (inline
                    ``<think>...</think>`` content); Responses: summary (default) or ``reasoning_text``
``cache_read=N``    usage: Anthropic ``cache_read_input_tokens`` (``cache_write=N``: ..._creation_...);
                    OpenAI: N of the input tokens reported as cached (``cached_tokens``; ``cached=N`` too)
``calls=N``         with ``tool=``, N parallel calls of it (every wire)
``error_as=failed`` Responses: the mid-stream failure is ``response.failed``, not an ``error`` event
==================  ==============================================================================

``POST /v1/responses`` speaks the Responses API event sequence (see ``responses_wire``).
The request's ``max_tokens`` (or ``max_completion_tokens``, ``max_output_tokens``) cuts the answer short with
max_tokens / length. Input tokens = words across all messages and system; output tokens =
tokens sent. ``GET /_fake/stats`` -> ``{"open_connections", "requests"}``; ``POST
/_fake/reset``. ``python -m tests.fake_upstream --port N`` runs it alone.
"""

from .script import Script, answer_tokens
from .server import FakeUpstream, RecordedRequest

__all__ = ["FakeUpstream", "RecordedRequest", "Script", "answer_tokens"]
