"""A fake OpenAI API on 127.0.0.1: chat completions (plain and SSE), image generation, models.

It answers in OpenAI's wire format so the real ``openai`` SDK can be pointed at it, checks
the bearer key, and records what it received. Each request takes the next queued ``Reply``
(or ``default`` when none is queued), which can also be an error body, a 429 with
Retry-After, a 5xx, a delay past the client's timeout, or a stream cut off mid-answer.
``stream_usage`` imitates the servers that do not send usage in streams (Ollama, llama.cpp)
or send it Groq's way; ``reject_stream_options`` those that refuse the field outright.

For quick use (the router benchmark)::

    with serve() as base_url:
        OpenAI(api_key=API_KEY, base_url=base_url).chat.completions.create(...)
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.fakes.wire import Exchange, QueuedFake, Received

API_KEY = "sk-test-0123456789abcdef"

# A 1×1 transparent PNG: what the image endpoint hands back.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)

STALL_SECONDS = 30.0  # a stalled stream waits this long (or until the server stops)


@dataclass
class Reply:
    """How the fake answers one request; the defaults are a successful answer."""

    text: str = "Hello from the fake OpenAI server."
    model: str | None = None  # the model named in the answer; None echoes the request's
    prompt_tokens: int = 12
    completion_tokens: int = 7
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens
    usage_extra: dict[str, Any] = field(default_factory=dict)  # e.g. DeepSeek's prompt_cache_hit_tokens
    usage: bool = True  # False: a server that reports no usage at all
    finish_reason: str = "stop"
    status: int = 200
    error: dict[str, Any] | None = None  # the body's "error" object when status is not 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the first byte
    cut_after: int | None = None  # streams: send this many events, then cut
    # drop the socket; end the HTTP body without [DONE]; send ``error`` as an in-stream error event;
    # or go quiet (a read timeout)
    cut: Literal["abort", "clean", "error", "stall"] = "abort"
    # A tool-call answer: each {"id", "name", "arguments"} (a dict is sent as JSON, a str as it is);
    # ``text`` then goes in ``content`` only when set, and finish_reason defaults to "tool_calls".
    tool_calls: list[dict[str, Any]] | None = None


def tool_call_reply(*calls: tuple[str, str, dict[str, Any] | str], text: str = "", **kw: Any) -> Reply:
    """An answer asking for tools: ``("call_1", "weather__forecast", {"city": "Oslo"})`` each."""
    return Reply(text=text, tool_calls=[{"id": i, "name": n, "arguments": a} for i, n, a in calls],
                 finish_reason="tool_calls", **kw)


def error_reply(status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None,
                param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return Reply(status=status, error={"message": message, "type": kind, "param": param, "code": code},
                 headers=headers or {})


class FakeOpenAI(QueuedFake):
    """``with FakeOpenAI() as fake:`` point a client at ``fake.base_url``; see ``fake.received``."""

    path = "/v1"

    def __init__(self, api_key: str | None = API_KEY, *,
                 stream_usage: Literal["requested", "never", "x_groq"] = "requested",
                 reject_stream_options: bool = False,
                 models: list[dict[str, Any]] | None = None):
        self.api_key = api_key  # None: no auth, like a local Ollama
        self.stream_usage = stream_usage
        self.reject_stream_options = reject_stream_options
        self.models = models if models is not None else [
            {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
        ]
        super().__init__(Reply())

    # --- routing ------------------------------------------------------------------------------

    def _route(self, req: Received, ex: Exchange) -> None:
        reply, serial = self.next_reply()
        request_id = f"req_fake_{serial}"
        headers = {"x-request-id": request_id, **reply.headers}
        if reply.delay:
            ex.wait(reply.delay)
        if self.api_key is not None and req.header("authorization") != f"Bearer {self.api_key}":
            given = (req.header("authorization") or "").removeprefix("Bearer ")
            # Echoes the key it was given, as some servers do: the client must not repeat it.
            return ex.json(401, _error(f"Incorrect API key provided: {given}.", code="invalid_api_key"),
                           headers)
        if reply.status != 200:
            return ex.json(reply.status, {"error": reply.error or {"message": "error", "type": "server_error",
                                                                   "param": None, "code": None}}, headers)
        route = (req.method, req.path.split("?")[0])
        if route == ("POST", "/v1/chat/completions"):
            return self._chat(req, ex, reply, headers)
        if route == ("POST", "/v1/images/generations"):
            return self._images(req, ex, reply, headers)
        if route == ("GET", "/v1/models"):
            return ex.json(200, {"object": "list", "data": self.models}, headers)
        ex.json(404, _error(f"Unknown request URL: {req.method} {req.path}.", code="unknown_url"), headers)

    def _chat(self, req: Received, ex: Exchange, reply: Reply, headers: dict[str, str]) -> None:
        body = req.body or {}
        model = reply.model or body.get("model", "")
        created = int(time.time())
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
            if reply.tool_calls:
                message["content"] = reply.text or None
                message["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
                    "name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                    else json.dumps(c["arguments"])}} for c in reply.tool_calls]
            return ex.json(200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message,
                             "logprobs": None, "finish_reason": reply.finish_reason}],
                "usage": _usage(reply) if reply.usage else None,
                "system_fingerprint": "fp_fake",
            }, headers)
        if "stream_options" in body and self.reject_stream_options:
            return ex.json(400, _error("Unrecognized request argument supplied: stream_options",
                                       param="stream_options"), headers)
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        sends_usage = reply.usage and (
            self.stream_usage == "x_groq" or (self.stream_usage == "requested" and wants_usage))

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            out = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                   "system_fingerprint": "fp_fake",
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if wants_usage and self.stream_usage == "requested":
                out["usage"] = None
            return out

        events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
        events += [chunk({"content": piece}, None) for piece in re.findall(r"\S+\s*", reply.text)]
        events.append(chunk({}, reply.finish_reason))
        if sends_usage and self.stream_usage == "x_groq":
            events[-1]["x_groq"] = {"id": "req_groq", "usage": _usage(reply)}
        elif sends_usage:
            events.append({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                           "model": model, "system_fingerprint": "fp_fake", "choices": [], "usage": _usage(reply)})
        lines = [json.dumps(e) for e in events] + ["[DONE]"]
        _send_stream(ex, lines, reply, headers)

    def _images(self, req: Received, ex: Exchange, reply: Reply, headers: dict[str, str]) -> None:
        body = req.body or {}
        model = body.get("model", "")
        n = body.get("n") or 1
        gpt_image = model.startswith("gpt-image")
        if gpt_image and "response_format" in body:
            return ex.json(400, _error("Unknown parameter: 'response_format'.", param="response_format",
                                       code="unknown_parameter"), headers)
        if gpt_image or body.get("response_format") == "b64_json":
            data = [{"b64_json": base64.b64encode(PNG).decode()} for _ in range(n)]
        else:
            data = [{"url": "https://images.example.invalid/fake.png"} for _ in range(n)]
        payload: dict[str, Any] = {"created": int(time.time()), "data": data}
        if gpt_image:
            payload |= {"output_format": body.get("output_format", "png"), "size": body.get("size", "1024x1024"),
                        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens,
                                  "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                                  "input_tokens_details": {"text_tokens": reply.prompt_tokens, "image_tokens": 0}}}
        ex.json(200, payload, headers)


def _send_stream(ex: Exchange, lines: list[str], reply: Reply, headers: dict[str, str]) -> None:
    ex.start_stream(headers)
    for sent, line in enumerate(lines):
        if reply.cut_after is not None and sent >= reply.cut_after:
            if reply.cut == "abort":
                return ex.abort()
            if reply.cut == "stall":  # go quiet mid-answer, past any sensible read timeout
                ex.wait(STALL_SECONDS)
                return ex.abort()
            if reply.cut == "error":
                ex.event(json.dumps({"error": reply.error}))
            return ex.end_stream()
        ex.event(line)
    ex.end_stream()


def _usage(reply: Reply) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }
    if reply.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens, "audio_tokens": 0}
        usage["completion_tokens_details"] = {"reasoning_tokens": 0, "audio_tokens": 0}
    return usage | reply.usage_extra


def _error(message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


@contextmanager
def serve(api_key: str | None = API_KEY, **options: Any) -> Iterator[str]:
    """A running fake for as long as the block lasts; yields the base URL to give the SDK."""
    with FakeOpenAI(api_key, **options) as fake:
        yield fake.base_url
