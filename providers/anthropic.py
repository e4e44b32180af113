"""Anthropic's Messages API through the official ``anthropic`` SDK: text, streaming, token counts.

The one thing to get right here is usage. Anthropic's ``input_tokens`` counts only the
uncached part of the prompt; cache reads and cache writes come in their own fields. Our
``Usage.input_tokens`` is the whole prompt, so::

    input_tokens        = input_tokens + cache_read_input_tokens + cache_creation_input_tokens
    cached_input_tokens = cache_read_input_tokens
    cache_write_tokens  = cache_creation_input_tokens

In a stream the input side arrives in ``message_start`` and the output count in
``message_delta`` (cumulative; newer API versions repeat the input counts there too); only
``message_stop`` says the answer is complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2

from providers import _errors
from providers.base import (
    AuthError,
    BadRequest,
    Chunk,
    Config,
    Health,
    Message,
    ModelInfo,
    ProviderError,
    Request,
    Result,
    Timeout,
    ToolCall,
    TruncatedStream,
    Unavailable,
    Usage,
)

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 1024  # Anthropic requires max_tokens; this is what a request without one gets
HEALTH_TIMEOUT = 10.0

# What the model picker offers; any other model id can still be called.
ANTHROPIC_MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("claude-opus-5-5", "text", 1_000_000),
    ModelInfo("claude-sonnet-5-5", "text", 1_000_000),
    ModelInfo("claude-haiku-5-5", "text", 1_000_000),
    ModelInfo("claude-opus-5", "text", 1_000_000),
    ModelInfo("claude-sonnet-5", "text", 1_000_000),
    ModelInfo("claude-opus-4-8", "text", 1_000_000),
    ModelInfo("claude-opus-4-7", "text", 1_000_000),
    ModelInfo("claude-sonnet-4-6", "text", 1_000_000),
    ModelInfo("claude-opus-4-5", "text", 200_000),
    ModelInfo("claude-haiku-4-5", "text", 200_000),
)


class AnthropicProvider:
    """Claude models: text, plain and streamed, and exact prompt token counts."""

    kinds: frozenset[str] = frozenset({"text"})
    label = "Anthropic"

    def __init__(self, config: Config, *, name: str | None = None):
        self.id = name or "anthropic"
        if not config.api_key:
            raise AuthError(f"{self.label} needs an API key: add one in this provider's settings.",
                            provider=self.id)
        self._key = config.api_key
        self._timeout = config.timeout
        self._client = anthropic.Anthropic(
            api_key=config.api_key,  # given explicitly, the SDK reads no key from the environment
            base_url=config.base_url or ANTHROPIC_BASE_URL,  # nor a base URL
            timeout=config.timeout,
            max_retries=0,  # the engine's router owns retries, fallbacks and their backoff
            default_headers=dict(config.headers) or None,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, base_url={str(self._client.base_url)!r})"

    # --- the protocol -------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return list(ANTHROPIC_MODELS)

    def generate(self, req: Request) -> Result:
        self._check_text(req)
        try:
            message = self._client.messages.create(**self._args(req))
        except anthropic.AnthropicError as err:
            raise self._error(err) from None
        counts = {"input": 0, "output": 0, "read": 0, "write": 0}
        _count(counts, message.usage)
        return Result(
            text="".join(block.text for block in message.content if block.type == "text"),
            usage=_usage(counts),
            model=message.model or req.model,
            finish_reason=message.stop_reason,
            vendor_request_id=message._request_id,
            tool_calls=tuple(ToolCall(block.id, block.name, block.input if isinstance(block.input, dict) else None,
                                      json.dumps(block.input))
                             for block in message.content if block.type == "tool_use"),
        )

    def stream(self, req: Request) -> Iterator[Chunk | Result]:
        self._check_text(req)
        if req.tools:  # tool_use deltas are not assembled here: a stream would drop the calls
            raise BadRequest(f"{self.label}: calls with tools are made without streaming.", provider=self.id)
        try:
            events = self._client.messages.create(stream=True, **self._args(req))
        except anthropic.AnthropicError as err:
            raise self._error(err) from None
        pieces: list[str] = []
        counts = {"input": 0, "output": 0, "read": 0, "write": 0}
        stop_reason: str | None = None
        model = req.model
        done = False
        request_id = events.response.headers.get("request-id")

        def so_far() -> Result:
            return Result(text="".join(pieces), usage=_usage(counts), model=model, finish_reason=stop_reason,
                          vendor_request_id=request_id)

        with events:
            try:
                for event in events:
                    if event.type == "message_start":
                        model = event.message.model or model
                        _count(counts, event.message.usage)
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        pieces.append(event.delta.text)
                        yield Chunk(event.delta.text)
                    elif event.type == "message_delta":
                        stop_reason = event.delta.stop_reason or stop_reason
                        _count(counts, event.usage)
                    elif event.type == "message_stop":
                        done = True
            # The SDK passes transport failures inside a stream through unwrapped.
            except (anthropic.APITimeoutError, httpx2.TimeoutException):
                raise Timeout(f"{self.label} stopped sending mid-answer and the wait timed out.",
                              provider=self.id, partial=so_far()) from None
            except (anthropic.APIConnectionError, httpx2.TransportError) as err:
                raise TruncatedStream(f"{self.label} dropped the connection mid-answer ({_cause(err)}).",
                                      provider=self.id, partial=so_far()) from None
            except anthropic.AnthropicError as err:
                raise self._error(err, partial=so_far()) from None
        result = so_far()
        if not done:
            raise TruncatedStream(f"{self.label}'s stream ended before the answer was complete "
                                  "(no message_stop received).", provider=self.id, partial=result)
        yield result

    def count_tokens(self, req: Request) -> int:
        """The prompt's exact input tokens, from Anthropic's own counter (POST /v1/messages/count_tokens)."""
        args = self._args(req)
        args.pop("max_tokens")
        try:
            return self._client.messages.count_tokens(**args).input_tokens
        except anthropic.AnthropicError as err:
            raise self._error(err) from None

    def health(self) -> Health:
        started = time.perf_counter()
        try:
            self._client.models.list(limit=1, timeout=min(self._timeout, HEALTH_TIMEOUT))
        except anthropic.AnthropicError as err:
            return Health(ok=False, detail=str(self._error(err)), latency_ms=_ms_since(started))
        return Health(ok=True, detail="models listed", latency_ms=_ms_since(started))

    # --- requests -----------------------------------------------------------------------------

    def _check_text(self, req: Request) -> None:
        if req.kind != "text":
            raise BadRequest(f"{self.label} serves text only, not {req.kind}.", provider=self.id)

    def _args(self, req: Request) -> dict[str, Any]:
        # Anthropic takes the system prompt apart from the turns, which must be user/assistant.
        system = "\n\n".join([*([req.system] if req.system else []),
                              *(m.content for m in req.messages if m.role == "system")])
        messages = _wire_messages([m for m in req.messages if m.role != "system"])
        if not messages and req.prompt:
            messages.append({"role": "user", "content": req.prompt})
        args: dict[str, Any] = {
            "model": req.model,
            "messages": messages,
            "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
            "timeout": min(req.timeout, self._timeout),
        }
        if system:
            args["system"] = system
        if req.tools:
            args["tools"] = [{"name": t.name, "description": t.description, "input_schema": dict(t.input_schema)}
                             for t in req.tools]
        # No temperature: the Messages API this SDK speaks has no sampling settings left to send.
        return args

    # --- errors -------------------------------------------------------------------------------

    def _error(self, err: anthropic.AnthropicError, *, partial: Result | None = None) -> ProviderError:
        if isinstance(err, anthropic.APIStatusError):
            why = _errors.reason(err.api_message or _text(err.body) or err.message, self._key)
            if err.status_code == 200:  # an ``error`` event inside a stream that had begun well
                return _errors.for_type(err.type, why, provider=self.id, label=self.label, partial=partial)
            return _errors.for_status(err.status_code, why, provider=self.id, label=self.label,
                                      headers=err.response.headers, partial=partial)
        if isinstance(err, anthropic.APITimeoutError):
            return Timeout(f"{self.label} did not answer in time.", provider=self.id, partial=partial)
        if isinstance(err, anthropic.APIConnectionError):
            return Unavailable(f"Could not reach {self.label} at {self._client.base_url}: {_cause(err)}.",
                               provider=self.id, partial=partial)
        return Unavailable(f"{self.label}: {_errors.reason(str(err), self._key)}", provider=self.id,
                           partial=partial)


def _wire_messages(turns: list[Message]) -> list[dict[str, Any]]:
    """Turns as Messages API content: ``tool_use`` blocks on the assistant turn, and each run of
    tool results as ``tool_result`` blocks of one user turn (the API wants roles to alternate)."""
    out: list[dict[str, Any]] = []
    for m in turns:
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content,
                     **({"is_error": True} if m.is_error else {})}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list) and all(
                    b.get("type") == "tool_result" for b in out[-1]["content"]):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments or {})}
                       for c in m.tool_calls]
            out.append({"role": m.role, "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _usage(counts: dict[str, int]) -> Usage:
    """Our usage from Anthropic's counts, whose ``input`` leaves out what the cache read and wrote."""
    read, write = counts["read"], counts["write"]
    return Usage(input_tokens=counts["input"] + read + write, output_tokens=counts["output"],
                 cached_input_tokens=read, cache_write_tokens=write)


def _count(counts: dict[str, int], usage: Any) -> None:
    """Fold one event's usage into the running counts; fields it leaves out keep their value."""
    for key, field in (("input", "input_tokens"), ("output", "output_tokens"),
                       ("read", "cache_read_input_tokens"), ("write", "cache_creation_input_tokens")):
        value = getattr(usage, field, None)
        if value is not None:
            counts[key] = value


def _text(body: object) -> str:
    return body if isinstance(body, str) else ""


def _cause(err: BaseException) -> str:
    return str(err.__cause__ or err) or type(err.__cause__ or err).__name__


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
