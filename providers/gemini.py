"""Google Gemini text generation over its REST API (generateContent, streamGenerateContent).

Usage comes from ``usageMetadata``: ``promptTokenCount`` already includes the cached tokens
(``cachedContentTokenCount``), and thinking tokens (``thoughtsTokenCount``) are billed as
output, so they are added to ``candidatesTokenCount``. A stream that ends before a candidate
carries a ``finishReason`` is a failure (``TruncatedStream``) that still reports what was
received. Prompts or answers blocked for safety are a ``BadRequest`` in plain words.

Tool calling is not built here: a request offering tools, or carrying tool calls and results
from another model's turns, is refused (``BadRequest``) before anything is sent, rather than
answered without the tools or with the tool traffic flattened into user text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx

from providers import tools_refusal
from providers._http import VendorError, VendorHTTP, json_body, path_segment
from providers.base import (
    BadRequest,
    Chunk,
    Config,
    Health,
    ModelInfo,
    ProviderError,
    Request,
    Result,
    Timeout,
    TruncatedStream,
    Unavailable,
    Usage,
)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"

MODELS = (
    ModelInfo("gemini-2.5-pro", "text", 1_048_576),
    ModelInfo("gemini-2.5-flash", "text", 1_048_576),
    ModelInfo("gemini-2.5-flash-lite", "text", 1_048_576),
    ModelInfo("gemini-2.0-flash", "text", 1_048_576),
    ModelInfo("gemini-2.0-flash-lite", "text", 1_048_576),
)

# finishReasons that mean Gemini withheld the answer rather than finished it.
BLOCKED = {
    "SAFETY": "it was flagged as unsafe",
    "RECITATION": "it recited copyrighted material",
    "BLOCKLIST": "it contained a blocked term",
    "PROHIBITED_CONTENT": "it contained prohibited content",
    "SPII": "it contained sensitive personal information",
    "IMAGE_SAFETY": "an image was flagged as unsafe",
    "LANGUAGE": "the language is not supported",
}
FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
TOO_LONG = re.compile(r"exceeds the maximum number of tokens|input token count.*exceeds|too long", re.I)


class GeminiProvider:
    """A Gemini API key; text only."""

    kinds = frozenset({"text"})

    def __init__(self, config: Config, *, name: str | None = None):
        self.id = name or "gemini"
        self._http = VendorHTTP(provider=self.id, label="Gemini", config=config,
                                default_base_url=DEFAULT_BASE_URL, auth_header="x-goog-api-key",
                                describe=_describe)

    def __repr__(self) -> str:
        return f"<GeminiProvider id={self.id!r} base_url={self._http.base_url!r}>"

    def close(self) -> None:
        self._http.close()

    def models(self) -> list[ModelInfo]:
        return list(MODELS)

    def health(self) -> Health:
        return self._http.health("models")

    def generate(self, req: Request) -> Result:
        self._check(req)
        response = self._http.request("POST", f"models/{path_segment(req.model)}:generateContent",
                                      json=_body(req), timeout=req.timeout)
        answer = _Answer(req.model)
        answer.add(_json_object(response, self._http))
        return answer.finish(self._http)

    def stream(self, req: Request) -> Iterator[Chunk | Result]:
        self._check(req)
        answer = _Answer(req.model)
        path = f"models/{path_segment(req.model)}:streamGenerateContent"
        with self._http.stream("POST", path, params={"alt": "sse"}, json=_body(req),
                               timeout=req.timeout) as response:
            try:
                for data in _sse_data(response):
                    event = _parse_event(data, self._http)
                    if "error" in event:
                        raise _stream_error(event["error"], self._http)
                    piece = answer.add(event)
                    if piece:
                        yield Chunk(piece)
            except httpx.TimeoutException as exc:
                raise Timeout(f"The Gemini stream stalled for more than {req.timeout:g} s.",
                              provider=self.id, partial=answer.partial()) from exc
            except httpx.TransportError as exc:
                # The connection dropped mid-answer: a cut stream, not an outage.
                raise TruncatedStream(f"The Gemini stream was cut off mid-answer ({type(exc).__name__}).",
                                      provider=self.id, partial=answer.partial()) from exc
            except ProviderError as exc:
                exc.partial = exc.partial or answer.partial()
                raise
        yield answer.finish(self._http)

    def count_tokens(self, req: Request) -> int:
        """The prompt's exact token count from Gemini's own tokenizer (countTokens)."""
        body = {"generateContentRequest": {"model": f"models/{req.model}", **_body(req)}}
        body["generateContentRequest"].pop("generationConfig", None)
        response = self._http.request("POST", f"models/{path_segment(req.model)}:countTokens",
                                      json=body, timeout=req.timeout)
        return int(_json_object(response, self._http).get("totalTokens", 0))

    def _check(self, req: Request) -> None:
        if req.kind != "text":
            raise BadRequest(f"Gemini here makes text, not {req.kind}.", provider=self.id)
        if not (req.messages or req.prompt):
            raise BadRequest("The request has no prompt to send to Gemini.", provider=self.id)
        if req.tools or any(m.role == "tool" or m.tool_calls for m in req.messages):
            raise BadRequest(tools_refusal("gemini"), provider=self.id)


# --- request --------------------------------------------------------------------------------


def _body(req: Request) -> dict[str, Any]:
    system = [req.system] if req.system else []
    contents = []
    for message in req.messages:
        if message.role == "system":
            system.append(message.content)
        else:
            role = "model" if message.role == "assistant" else "user"
            contents.append({"role": role, "parts": [{"text": message.content}]})
    if req.prompt:
        contents.append({"role": "user", "parts": [{"text": req.prompt}]})
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    if req.temperature is not None:
        config["temperature"] = req.temperature
    if req.max_tokens is not None:
        config["maxOutputTokens"] = req.max_tokens
    if req.params.get("stop"):
        stop = req.params["stop"]
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if req.params.get("thinking_budget") is not None:
        config["thinkingConfig"] = {"thinkingBudget": int(req.params["thinking_budget"])}
    if config:
        body["generationConfig"] = config
    return body


# --- response -------------------------------------------------------------------------------


class _Answer:
    """What Gemini has said so far, from one response or many stream events."""

    def __init__(self, model: str):
        self.model = model
        self.parts: list[str] = []
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.block_reason: str | None = None
        self.response_id: str | None = None

    def add(self, event: dict[str, Any]) -> str:
        """Takes one response object in; returns the new answer text it carried."""
        self.model = event.get("modelVersion") or self.model
        self.response_id = event.get("responseId") or self.response_id
        if isinstance(event.get("usageMetadata"), dict):
            self.usage = _usage(event["usageMetadata"])  # each event carries the running total
        feedback = event.get("promptFeedback") or {}
        self.block_reason = feedback.get("blockReason") or self.block_reason
        candidates = event.get("candidates") or []
        if not candidates:
            return ""
        candidate = candidates[0]
        self.finish_reason = candidate.get("finishReason") or self.finish_reason
        parts = (candidate.get("content") or {}).get("parts") or []
        # Thought summaries (``thought: true``) are not the answer.
        text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))
        if text:
            self.parts.append(text)
        return text

    def partial(self) -> Result:
        return Result(text="".join(self.parts), usage=self.usage, model=self.model,
                      finish_reason=None, vendor_request_id=self.response_id)

    def finish(self, http: VendorHTTP) -> Result:
        if self.block_reason:
            raise BadRequest(
                f"Gemini blocked the prompt ({self.block_reason}); rephrase it and try again.",
                provider=http.provider, partial=self.partial())
        if self.finish_reason in BLOCKED:
            raise BadRequest(
                f"Gemini withheld the answer because {BLOCKED[self.finish_reason]} "
                f"({self.finish_reason}); rephrase the prompt and try again.",
                provider=http.provider, partial=self.partial())
        if self.finish_reason is None:
            raise TruncatedStream("Gemini's answer ended before Gemini said it was complete.",
                                  provider=http.provider, partial=self.partial())
        return Result(text="".join(self.parts), usage=self.usage, model=self.model,
                      finish_reason=FINISH.get(self.finish_reason, self.finish_reason.lower()),
                      vendor_request_id=self.response_id)


def _usage(meta: dict[str, Any]) -> Usage:
    count = lambda key: int(meta.get(key) or 0)  # noqa: E731 - absent counts are zero
    return Usage(
        # Tool-use prompt tokens are counted apart from the prompt but billed like it.
        input_tokens=count("promptTokenCount") + count("toolUsePromptTokenCount"),
        cached_input_tokens=count("cachedContentTokenCount"),
        output_tokens=count("candidatesTokenCount") + count("thoughtsTokenCount"),
    )


def _sse_data(response: httpx.Response) -> Iterator[str]:
    """The data of each complete server-sent event; a half-sent last event is dropped."""
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def _parse_event(data: str, http: VendorHTTP) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except json.JSONDecodeError:
        raise Unavailable("Gemini sent a stream event that is not JSON.", provider=http.provider) from None
    return event if isinstance(event, dict) else {}


def _json_object(response: httpx.Response, http: VendorHTTP) -> dict[str, Any]:
    body = json_body(response)
    if not isinstance(body, dict):
        raise Unavailable("Gemini answered with something other than JSON.", provider=http.provider)
    return body


def _stream_error(error: Any, http: VendorHTTP) -> ProviderError:
    error = error if isinstance(error, dict) else {"message": str(error)}
    return http.error_for(int(error.get("code") or 500), _vendor_error(error))


def _describe(response: httpx.Response) -> VendorError:
    body = json_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return VendorError(response.text[:300] or response.reason_phrase)
    return _vendor_error(error)


def _vendor_error(error: dict[str, Any]) -> VendorError:
    """Google's error shape: {code, message, status, details: [ErrorInfo, RetryInfo, …]}."""
    message = str(error.get("message") or error.get("status") or "")
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reasons = {d.get("reason") for d in details}
    retry_after = None
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            retry_after = _seconds(detail.get("retryDelay"))
    return VendorError(
        message=message,
        too_long=bool(TOO_LONG.search(message)),
        # A wrong key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID, not a 401.
        auth="API_KEY_INVALID" in reasons or error.get("status") in ("UNAUTHENTICATED", "PERMISSION_DENIED"),
        retry_after=retry_after,
    )


def _seconds(duration: Any) -> float | None:
    """A protobuf Duration in JSON form, such as "37s" or "0.5s"."""
    try:
        return float(str(duration).removesuffix("s"))
    except ValueError:
        return None
