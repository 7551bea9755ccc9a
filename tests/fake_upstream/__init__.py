"""A wire-level fake of the Anthropic Messages API and the OpenAI Chat Completions API.

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
``ping_every=S``    Anthropic ``ping`` events every S seconds while paced or stalled
``tool=NAME``       without a tool result in the messages: a tool call to NAME (stop tool_use);
``args=JSON``       its arguments (no spaces). With a tool result: "result: <content> " + tokens
``json=1``          a JSON object text {"answer": "t0 t1 ...", "n": N} in 4-character pieces
``say=TEXT``        answer with this text instead (percent-encoded, e.g. ``say=%3Cb%3Ehi%3C%2Fb%3E``),
                    in 5-character pieces
``pad=N``           each token padded with N dots ("t0.... "): large fragments
``stop=REASON``     stop reason (max_tokens, stop_sequence, content_filter; OpenAI names work too)
==================  ==============================================================================

The request's ``max_tokens`` (or ``max_completion_tokens``) cuts the answer short with
max_tokens / length. Input tokens = words across all messages and system; output tokens =
tokens sent. ``GET /_fake/stats`` -> ``{"open_connections", "requests"}``; ``POST
/_fake/reset``. ``python -m tests.fake_upstream --port N`` runs it alone.
"""

from .script import Script, answer_tokens
from .server import FakeUpstream, RecordedRequest

__all__ = ["FakeUpstream", "RecordedRequest", "Script", "answer_tokens"]
