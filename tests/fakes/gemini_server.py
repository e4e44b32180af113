"""A fake Gemini API (v1beta) on 127.0.0.1: generateContent, streamGenerateContent?alt=sse,
countTokens and the models list, in Google's wire format.

It checks the ``x-goog-api-key`` header the way Google does (a wrong key is a 400 with reason
API_KEY_INVALID, a missing one a 403) and records what it received. Each request takes the
next queued ``Reply`` (or ``default``), which can be an error body, a 429 with Retry-After or
RetryInfo, a 5xx, a delay past the client's timeout, a blocked prompt or answer, or a stream
cut off mid-answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.fakes.wire import Exchange, QueuedFake, Received

API_KEY = "AIzaSy-test-0123456789abcdef"


@dataclass
class Reply:
    """How the fake answers one request; the defaults are a successful answer."""

    text: str = "Hello from the fake Gemini server."
    thought: str | None = None  # a thought-summary part sent ahead of the answer
    model_version: str | None = None  # None echoes the model in the URL
    prompt_tokens: int = 11
    candidates_tokens: int = 6
    cached_tokens: int | None = None
    thoughts_tokens: int | None = None
    finish_reason: str | None = "STOP"  # None: never say the answer is complete
    block_reason: str | None = None  # promptFeedback.blockReason, and no candidates
    status: int = 200
    error: dict[str, Any] | None = None  # Google's error object when status is not 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    cut_after: int | None = None  # streams: send this many events, then cut
    cut: Literal["abort", "clean", "error"] = "abort"  # drop the socket / end the body / send an error event


def error_reply(status: int, message: str, status_name: str, *, details: list[dict[str, Any]] | None = None,
                headers: dict[str, str] | None = None) -> Reply:
    """An error in Google's shape: ``{"error": {"code", "message", "status", "details"}}``."""
    error: dict[str, Any] = {"code": status, "message": message, "status": status_name}
    if details is not None:
        error["details"] = details
    return Reply(status=status, error=error, headers=headers or {})


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


class FakeGemini(QueuedFake):
    """``with FakeGemini() as fake:`` point a provider at ``fake.base_url``; see ``fake.received``."""

    path = "/v1beta"

    def __init__(self, api_key: str = API_KEY):
        self.api_key = api_key
        super().__init__(Reply())

    # --- routing ------------------------------------------------------------------------------

    def _route(self, req: Received, ex: Exchange) -> None:
        reply, serial = self.next_reply()
        response_id = f"fake-response-{serial}"
        if reply.delay:
            ex.wait(reply.delay)
        key = req.header("x-goog-api-key")
        if key is None:
            return ex.json(403, _error(403, "Method doesn't allow unregistered callers (callers without "
                                            "established identity). Please use API Key or other form of "
                                            "API consumer identity to call this API.", "PERMISSION_DENIED"))
        if key != self.api_key:
            return ex.json(400, _error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT",
                                       [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                         "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                                         "metadata": {"service": "generativelanguage.googleapis.com"}}]))
        if reply.status != 200:
            return ex.json(reply.status, {"error": reply.error}, reply.headers)
        path, _, query = req.path.partition("?")
        if req.method == "GET" and path == "/v1beta/models":
            return ex.json(200, {"models": [{"name": "models/gemini-2.5-flash", "version": "001",
                                             "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
                                             "supportedGenerationMethods": ["generateContent", "countTokens"]}]})
        match = re.fullmatch(r"/v1beta/models/([\w.\-]+):(generateContent|streamGenerateContent|countTokens)", path)
        if req.method != "POST" or not match:
            return ex.json(404, _error(404, f"Not found: {req.method} {path}", "NOT_FOUND"))
        model, method = match.groups()
        if method == "countTokens":
            inner = (req.body or {}).get("generateContentRequest") or {}
            return ex.json(200, {"totalTokens": _words(inner)})
        if not (req.body or {}).get("contents"):
            return ex.json(400, _error(400, "* GenerateContentRequest.contents: contents is not specified",
                                       "INVALID_ARGUMENT"))
        version = reply.model_version or model
        if method == "generateContent":
            return ex.json(200, _response(reply, reply.text, reply.finish_reason, version, response_id,
                                          final=True, thought=reply.thought))
        if "alt=sse" not in query:
            return ex.json(400, _error(400, "This fake only streams as server-sent events (alt=sse).",
                                       "INVALID_ARGUMENT"))
        self._stream(reply, version, response_id, ex)

    def _stream(self, reply: Reply, version: str, response_id: str, ex: Exchange) -> None:
        pieces = re.findall(r"\S+\s*", reply.text) or [""]
        events = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            events.append(_response(reply, piece, reply.finish_reason if last else None, version, response_id,
                                    final=last, thought=reply.thought if i == 0 else None))
        ex.start_stream(reply.headers)
        for sent, event in enumerate(events):
            if reply.cut_after is not None and sent >= reply.cut_after:
                if reply.cut == "abort":
                    return ex.abort()
                if reply.cut == "error":
                    ex.event(json.dumps({"error": reply.error or {"code": 503, "message": "The model is "
                                                                  "overloaded. Please try again later.",
                                                                  "status": "UNAVAILABLE"}}))
                return ex.end_stream()
            ex.event(json.dumps(event))
        ex.end_stream()


def _response(reply: Reply, text: str, finish: str | None, version: str, response_id: str, *, final: bool,
              thought: str | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": reply.prompt_tokens}
    if reply.cached_tokens is not None:
        usage["cachedContentTokenCount"] = reply.cached_tokens
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.cached_tokens}]
    if final:
        usage["candidatesTokenCount"] = reply.candidates_tokens
        if reply.thoughts_tokens is not None:
            usage["thoughtsTokenCount"] = reply.thoughts_tokens
    billed = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount")
    usage["totalTokenCount"] = sum(usage.get(k, 0) for k in billed)
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.prompt_tokens}]
    body: dict[str, Any] = {"usageMetadata": usage, "modelVersion": version, "responseId": response_id}
    if reply.block_reason:
        body["promptFeedback"] = {"blockReason": reply.block_reason,
                                  "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                                                     "probability": "HIGH"}]}
        return body
    parts = ([{"text": thought, "thought": True}] if thought else []) + [{"text": text}]
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body["candidates"] = [candidate]
    return body


def _words(request: dict[str, Any]) -> int:
    """A stand-in tokenizer: one token per word of every text part, system instruction included."""
    texts = [p.get("text", "") for c in request.get("contents", []) for p in c.get("parts", [])]
    texts += [p.get("text", "") for p in (request.get("systemInstruction") or {}).get("parts", [])]
    return sum(len(t.split()) for t in texts)


def _error(code: int, message: str, status: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}
