"""A fake Anthropic Messages API on 127.0.0.1: messages (plain and SSE), token counting, models.

It answers in Anthropic's wire format so the real ``anthropic`` SDK can be pointed at it,
checks the key (``x-api-key``, or ``Authorization: Bearer`` as SDK 2.x sends it) and
``anthropic-version``, and records what it received. Usage is sent the way Anthropic sends
it: ``input_tokens`` *excludes* cache reads and writes, which come in their own fields; in a
stream they arrive in ``message_start`` and the output count in ``message_delta``. Each
request takes the next queued ``Reply`` (or ``default``), which can also be an error body, a
429 with retry-after, a 500 or 529, a delay past the client's timeout, a stream cut off or
stalled mid-answer, or an ``error`` event inside the stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.fakes.wire import Exchange, QueuedFake, Received

API_KEY = "sk-ant-test-0123456789abcdef"

STALL_SECONDS = 30.0  # a stalled stream waits this long (or until the server stops)


@dataclass
class Reply:
    """How the fake answers one request; the defaults are a successful answer."""

    text: str = "Hello from the fake Anthropic server."
    model: str | None = None  # the model named in the answer; None echoes the request's
    input_tokens: int = 20  # Anthropic's own: without cache reads or writes
    output_tokens: int = 9
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cumulative_delta_usage: bool = False  # message_delta repeats the input counts (newer API versions)
    stop_reason: str = "end_turn"
    status: int = 200
    error_type: str = "api_error"
    error_message: str = "Internal server error"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the first byte
    cut_after: int | None = None  # streams: send this many events, then cut
    # drop the socket; end the HTTP body without message_stop; send an ``error`` event; or go quiet
    cut: Literal["abort", "clean", "error", "stall"] = "abort"
    # A tool-use answer: each {"id", "name", "input"}, sent as tool_use blocks after ``text``
    # (left out when empty); stop_reason defaults to "tool_use".
    tool_uses: list[dict[str, Any]] | None = None


def tool_use_reply(*uses: tuple[str, str, dict[str, Any]], text: str = "", **kw: Any) -> Reply:
    """An answer asking for tools: ``("toolu_1", "weather__forecast", {"city": "Oslo"})`` each."""
    return Reply(text=text, tool_uses=[{"id": i, "name": n, "input": a} for i, n, a in uses],
                 stop_reason="tool_use", **kw)


def error_reply(status: int, error_type: str, message: str, *, headers: dict[str, str] | None = None) -> Reply:
    """An error in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""
    return Reply(status=status, error_type=error_type, error_message=message, headers=headers or {})


class FakeAnthropic(QueuedFake):
    """``with FakeAnthropic() as fake:`` point a client at ``fake.base_url``; see ``fake.received``."""

    path = ""

    def __init__(self, api_key: str = API_KEY):
        self.api_key = api_key
        self.models = [
            {"type": "model", "id": "claude-haiku-4-5-20251001", "display_name": "Claude Haiku 4.5",
             "created_at": "2025-10-01T00:00:00Z", "lifecycle": "active", "max_input_tokens": 200_000},
        ]
        super().__init__(Reply())

    # --- routing ------------------------------------------------------------------------------

    def _route(self, req: Received, ex: Exchange) -> None:
        reply, serial = self.next_reply()
        request_id = f"req_fake_{serial:04d}"
        headers = {"request-id": request_id, **reply.headers}
        if reply.delay:
            ex.wait(reply.delay)
        bearer = (req.header("authorization") or "").removeprefix("Bearer ")
        if self.api_key not in (req.header("x-api-key"), bearer):
            return ex.json(401, _error("authentication_error", "invalid x-api-key", request_id), headers)
        if not req.header("anthropic-version"):
            return ex.json(400, _error("invalid_request_error", "anthropic-version: header is required",
                                       request_id), headers)
        if reply.status != 200:
            return ex.json(reply.status, _error(reply.error_type, reply.error_message, request_id), headers)
        route = (req.method, req.path.split("?")[0])
        if route == ("POST", "/v1/messages"):
            return self._messages(req, ex, reply, headers)
        if route == ("POST", "/v1/messages/count_tokens"):
            return ex.json(200, {"input_tokens": reply.input_tokens}, headers)
        if route == ("GET", "/v1/models"):
            return ex.json(200, {"data": self.models, "has_more": False, "first_id": self.models[0]["id"],
                                 "last_id": self.models[-1]["id"]}, headers)
        ex.json(404, _error("not_found_error", f"Not found: {req.method} {req.path}", request_id), headers)

    def _messages(self, req: Received, ex: Exchange, reply: Reply, headers: dict[str, str]) -> None:
        body = req.body or {}
        if not isinstance(body.get("max_tokens"), int):
            return ex.json(400, _error("invalid_request_error", "max_tokens: Field required",
                                       headers["request-id"]), headers)
        model = reply.model or body.get("model", "")
        usage = {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": reply.cache_creation_input_tokens,
            "cache_read_input_tokens": reply.cache_read_input_tokens,
            "output_tokens": reply.output_tokens,
            "service_tier": "standard",
        }
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}]
        if reply.tool_uses:
            content = [c for c in content if c["text"]] + [
                {"type": "tool_use", "id": u["id"], "name": u["name"], "input": u["input"]} for u in reply.tool_uses]
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                   "content": content, "stop_reason": reply.stop_reason,
                   "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return ex.json(200, message, headers)
        # message_start carries the input side and a placeholder output count; message_delta the
        # final output count (and, in newer API versions, the input counts again).
        start_usage = usage | {"output_tokens": 1}
        delta_usage: dict[str, Any] = {"output_tokens": reply.output_tokens}
        if reply.cumulative_delta_usage:
            delta_usage |= {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens",
                                                  "cache_read_input_tokens")}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start",
                               "message": message | {"content": [], "stop_reason": None, "usage": start_usage}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
        ]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": piece}})
                   for piece in re.findall(r"\S+\s*", reply.text)]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                               "usage": delta_usage}),
            ("message_stop", {"type": "message_stop"}),
        ]
        ex.start_stream(headers)
        for sent, (name, data) in enumerate(events):
            if reply.cut_after is not None and sent >= reply.cut_after:
                if reply.cut == "abort":
                    return ex.abort()
                if reply.cut == "stall":  # go quiet mid-answer, past any sensible read timeout
                    ex.wait(STALL_SECONDS)
                    return ex.abort()
                if reply.cut == "error":
                    ex.event(json.dumps({"type": "error", "error": {"type": reply.error_type,
                                                                    "message": reply.error_message}}), "error")
                return ex.end_stream()
            ex.event(json.dumps(data), name)
        ex.end_stream()


def _error(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}


@contextmanager
def serve(api_key: str = API_KEY) -> Iterator[str]:
    """A running fake for as long as the block lasts; yields the base URL to give the SDK."""
    with FakeAnthropic(api_key) as fake:
        yield fake.base_url
