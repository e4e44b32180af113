"""OpenAI, and every server that speaks its chat API, through the official ``openai`` SDK.

``OpenAIProvider`` is OpenAI itself: chat text, streaming with usage in the final chunk,
images, a static model list. ``OpenAICompatibleProvider`` is the same code pointed at any base
URL — OpenRouter, Groq, Together, Mistral, DeepSeek, or a self-hosted Ollama, vLLM, llama.cpp
or LM Studio (presets in ``data/openai_compatible.yaml``) — with the key optional.

Usage is what the vendor reported: ``prompt_tokens`` is the whole prompt, so it is our
``input_tokens`` as it stands, and cached tokens are a part of it. A server that reports no
usage leaves every count at zero; the engine sees that and estimates, we never guess here.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import openai

from providers import _errors
from providers.base import (
    Asset,
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

OPENAI_BASE_URL = "https://api.openai.com/v1"
HEALTH_TIMEOUT = 10.0

# What the model picker offers for OpenAI itself; any other model id can still be called.
OPENAI_MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("gpt-5.5", "text", 1_000_000),
    ModelInfo("gpt-5.4", "text", 1_050_000),
    ModelInfo("gpt-5.4-mini", "text", 400_000),
    ModelInfo("gpt-5.4-nano", "text", 400_000),
    ModelInfo("gpt-5", "text", 400_000),
    ModelInfo("gpt-5-mini", "text", 400_000),
    ModelInfo("gpt-5-nano", "text", 400_000),
    ModelInfo("gpt-4.1", "text", 1_047_576),
    ModelInfo("gpt-4.1-mini", "text", 1_047_576),
    ModelInfo("gpt-4.1-nano", "text", 1_047_576),
    ModelInfo("gpt-4o", "text", 128_000),
    ModelInfo("gpt-4o-mini", "text", 128_000),
    ModelInfo("o3", "text", 200_000),
    ModelInfo("o4-mini", "text", 200_000),
    ModelInfo("gpt-image-2", "image"),
    ModelInfo("gpt-image-1.5", "image"),
    ModelInfo("gpt-image-1", "image"),
    ModelInfo("gpt-image-1-mini", "image"),
)

_IMAGE_PARAMS = ("size", "quality", "style", "background", "output_format")
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
         "svg": "image/svg+xml"}
# Where servers put a model's context window in GET /models: OpenRouter and Together, Groq,
# vLLM, Mistral.
_CONTEXT_FIELDS = ("context_length", "context_window", "max_model_len", "max_context_length")


class OpenAIProvider:
    """OpenAI's own API: text (plain and streamed) and images.

    ``Config.options`` may set ``organization`` and ``project`` (OpenAI's headers), ``kinds``
    (narrow or, for a compatible server with /images/generations, widen what is served) and
    ``stream_usage: false`` (never ask a server for usage in streams).
    """

    kinds: frozenset[str] = frozenset({"text", "image"})
    provider_type = "openai"
    key_required = True
    max_tokens_field = "max_completion_tokens"  # o-series models refuse the older max_tokens
    usage_required = True  # asked for usage, OpenAI always sends it: a stream without it was cut
    sends_request_id = True  # OpenAI keeps X-Client-Request-Id with the request, for support

    def __init__(self, config: Config, *, name: str | None = None):
        self.id = name or self.provider_type
        self.label = self._label(config, name)
        if self.key_required and not config.api_key:
            raise AuthError(f"{self.label} needs an API key: add one in this provider's settings.",
                            provider=self.id)
        self._key = config.api_key
        self._timeout = config.timeout
        self._stream_usage = bool(config.options.get("stream_usage", True))
        self._client = openai.OpenAI(
            # A keyless server gets no Authorization header at all (see _headers); the SDK
            # insists on some key, and passing one also stops it reading OPENAI_API_KEY.
            api_key=config.api_key or "no-key",
            # Explicit, so that OPENAI_BASE_URL in the environment cannot redirect the calls.
            base_url=self._base_url(config),
            timeout=config.timeout,
            max_retries=0,  # the engine's router owns retries, fallbacks and their backoff
            default_headers=dict(config.headers) or None,
            organization=config.options.get("organization"),
            project=config.options.get("project"),
        )
        if "kinds" in config.options:
            self.kinds = frozenset(config.options["kinds"]) & {"text", "image"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, base_url={str(self._client.base_url)!r})"

    def _label(self, config: Config, name: str | None) -> str:
        return "OpenAI"

    def _base_url(self, config: Config) -> str:
        return config.base_url or OPENAI_BASE_URL

    # --- the protocol -------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return list(OPENAI_MODELS)

    def generate(self, req: Request) -> Result:
        if req.kind == "image" and "image" in self.kinds:
            return self._image(req)
        self._check_text(req)
        try:
            completion = self._client.chat.completions.create(**self._chat_args(req))
        except openai.OpenAIError as err:
            raise self._error(err) from None
        choice = completion.choices[0] if completion.choices else None
        return Result(
            text=(choice.message.content or "") if choice else "",
            usage=_usage(completion.usage),
            model=completion.model or req.model,
            finish_reason=choice.finish_reason if choice else None,
            vendor_request_id=completion._request_id,
            tool_calls=_tool_calls(choice.message.tool_calls) if choice else (),
        )

    def stream(self, req: Request) -> Iterator[Chunk | Result]:
        self._check_text(req)
        _no_streamed_tools(req, self.label, self.id)
        args = self._chat_args(req)
        try:
            sdk_stream, asked_usage = self._open_stream(args)
        except openai.OpenAIError as err:
            raise self._error(err) from None
        pieces: list[str] = []
        usage: Any = None
        finish: str | None = None
        model = req.model
        request_id = sdk_stream.response.headers.get("x-request-id")

        def so_far() -> Result:
            return Result(text="".join(pieces), usage=_usage(usage), model=model, finish_reason=finish,
                          vendor_request_id=request_id)

        with sdk_stream:
            try:
                for chunk in sdk_stream:
                    model = chunk.model or model
                    # Groq once sent usage only under x_groq; vLLM may repeat it on every chunk.
                    usage = chunk.usage or _get(getattr(chunk, "x_groq", None), "usage") or usage
                    for choice in chunk.choices[:1]:
                        if choice.finish_reason:
                            finish = choice.finish_reason
                        if choice.delta and choice.delta.content:
                            pieces.append(choice.delta.content)
                            yield Chunk(choice.delta.content)
            except openai.APITimeoutError:
                raise Timeout(f"{self.label} stopped sending mid-answer and the wait timed out.",
                              provider=self.id, partial=so_far()) from None
            except openai.APIConnectionError as err:
                raise TruncatedStream(f"{self.label} dropped the connection mid-answer ({_cause(err)}).",
                                      provider=self.id, partial=so_far()) from None
            except openai.OpenAIError as err:
                raise self._error(err, partial=so_far()) from None
        result = so_far()
        if finish is None or (asked_usage and self.usage_required and usage is None):
            raise TruncatedStream(f"{self.label}'s stream ended before the answer was complete "
                                  f"(no {'finish reason' if finish is None else 'usage'} received).",
                                  provider=self.id, partial=result)
        yield result

    def health(self) -> Health:
        started = time.perf_counter()
        try:
            page = self._client.models.list(timeout=min(self._timeout, HEALTH_TIMEOUT),
                                            extra_headers=self._headers(None))
        except openai.OpenAIError as err:
            return Health(ok=False, detail=str(self._error(err)), latency_ms=_ms_since(started))
        return Health(ok=True, detail=f"models endpoint answered ({len(page.data)} listed)",
                      latency_ms=_ms_since(started))

    # --- text ---------------------------------------------------------------------------------

    def _check_text(self, req: Request) -> None:
        if req.kind != "text" or "text" not in self.kinds:
            raise BadRequest(f"{self.label} is not set up for {req.kind} here.", provider=self.id)

    def _chat_args(self, req: Request) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if req.system:
            messages.append({"role": "system", "content": req.system})
        messages += [_wire_message(m) for m in req.messages]
        if not req.messages and req.prompt:
            messages.append({"role": "user", "content": req.prompt})
        args: dict[str, Any] = {"model": req.model, "messages": messages, "extra_headers": self._headers(req),
                                "timeout": min(req.timeout, self._timeout)}
        if req.tools:
            args["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": dict(t.input_schema)}}
                for t in req.tools]
        if req.max_tokens is not None:
            args[self.max_tokens_field] = req.max_tokens
        if req.temperature is not None:
            args["temperature"] = req.temperature
        return args

    def _open_stream(self, args: dict[str, Any]) -> tuple[openai.Stream[Any], bool]:
        """The SDK stream, and whether usage was asked for."""
        if not self._stream_usage:
            return self._client.chat.completions.create(stream=True, **args), False
        try:
            return self._client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **args), True
        except openai.APIStatusError as err:
            refused = err.status_code in (400, 422) and "stream_options" in err.message
            if self.usage_required or not refused:
                raise
        # This server refuses the field rather than ignoring it: stop asking, and say nothing of usage.
        self._stream_usage = False
        return self._client.chat.completions.create(stream=True, **args), False

    def _headers(self, req: Request | None) -> dict[str, Any]:
        headers: dict[str, Any] = {}
        if not self._key:
            headers["Authorization"] = openai.Omit()
        if req is not None and req.request_id and self.sends_request_id:
            headers["X-Client-Request-Id"] = req.request_id
        return headers

    # --- images -------------------------------------------------------------------------------

    def _image(self, req: Request) -> Result:
        args: dict[str, Any] = {
            "model": req.model,
            "prompt": req.prompt or req.prompt_text(),
            "n": int(req.params.get("n", 1)),
            "timeout": min(req.timeout, self._timeout),
            "extra_headers": self._headers(req),
            **{k: req.params[k] for k in _IMAGE_PARAMS if req.params.get(k) is not None},
        }
        if not req.model.startswith(("gpt-image", "chatgpt-image")):
            # DALL·E and most compatible servers answer with URLs unless asked for the bytes;
            # gpt-image models always send bytes and refuse the parameter.
            args["response_format"] = "b64_json"
        try:
            response = self._client.images.generate(**args)
        except openai.OpenAIError as err:
            raise self._error(err) from None
        images = response.data or []
        if not images or any(not image.b64_json for image in images):
            raise BadRequest(f"{self.label} answered without image data (a URL or nothing at all).",
                             provider=self.id)
        mime = _MIME.get(response.output_format or "png", "image/png")
        tokens = response.usage
        return Result(
            assets=tuple(Asset(base64.b64decode(image.b64_json or ""), mime) for image in images),
            usage=Usage(images=len(images), input_tokens=tokens.input_tokens if tokens else 0,
                        output_tokens=tokens.output_tokens if tokens else 0),
            model=req.model,
            vendor_request_id=response._request_id,
        )

    # --- errors -------------------------------------------------------------------------------

    def _error(self, err: openai.OpenAIError, *, partial: Result | None = None) -> ProviderError:
        if isinstance(err, openai.APIStatusError):
            body = err.body
            code = body.get("code") if isinstance(body, dict) else None
            return _errors.for_status(err.status_code, self._why(body, err.message), provider=self.id,
                                      label=self.label, headers=err.response.headers,
                                      code=str(code) if code is not None else None, partial=partial)
        if isinstance(err, openai.APITimeoutError):
            return Timeout(f"{self.label} did not answer in time.", provider=self.id, partial=partial)
        if isinstance(err, openai.APIConnectionError):
            return Unavailable(f"Could not reach {self.label} at {self._client.base_url}: {_cause(err)}.",
                               provider=self.id, partial=partial)
        if isinstance(err, openai.APIError):  # an error object sent inside a stream
            kind = err.body.get("type") if isinstance(err.body, dict) else None
            return _errors.for_type(kind, self._why(err.body, err.message), provider=self.id,
                                    label=self.label, partial=partial)
        return Unavailable(f"{self.label}: {_errors.reason(str(err), self._key)}", provider=self.id,
                           partial=partial)

    def _why(self, body: object, fallback: str) -> str:
        """The vendor's own words: OpenAI's error.message, vLLM's top-level message, or the raw body."""
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            text = body["message"]
        elif isinstance(body, str) and body:
            text = body
        else:
            text = fallback
        return _errors.reason(text, self._key)


class OpenAICompatibleProvider(OpenAIProvider):
    """Any server that speaks OpenAI's chat API at ``config.base_url``; a key only if it wants one."""

    kinds = frozenset({"text"})
    provider_type = "openai-compatible"
    key_required = False
    max_tokens_field = "max_tokens"  # what Ollama, llama.cpp and most others read
    usage_required = False  # many servers ignore stream_options: a missing usage is not a cut
    sends_request_id = False

    def _label(self, config: Config, name: str | None) -> str:
        return name or urlsplit(config.base_url or "").netloc or "OpenAI-compatible server"

    def _base_url(self, config: Config) -> str:
        if not config.base_url:
            raise ValueError(f"{self.label} needs a base URL, such as http://localhost:11434/v1 for Ollama.")
        return config.base_url

    def models(self) -> list[ModelInfo]:
        """What the server lists at GET /models, with context windows where it says."""
        try:
            page = self._client.models.list(timeout=min(self._timeout, HEALTH_TIMEOUT),
                                            extra_headers=self._headers(None))
        except openai.OpenAIError as err:
            raise self._error(err) from None
        return [
            ModelInfo(model.id, "image" if _get(model, "type") == "image" else "text",
                      next((int(v) for f in _CONTEXT_FIELDS if isinstance(v := _get(model, f), int)), None))
            for model in page.data
        ]


# --- helpers --------------------------------------------------------------------------------


def _wire_message(m: Message) -> dict[str, Any]:
    """One turn in chat-completions form: tool calls on the assistant turn, ``tool`` turns for results."""
    if m.role == "tool":
        # Chat completions has no error flag on a tool result: the words say it.
        return {"role": "tool", "tool_call_id": m.tool_call_id or "",
                "content": f"Error: {m.content}" if m.is_error else m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {
            "name": c.name, "arguments": c.raw_arguments or json.dumps(dict(c.arguments or {}))}}
            for c in m.tool_calls]
    return out


def _no_streamed_tools(req: Request, label: str, provider: str) -> None:
    if req.tools:  # streamed tool-call deltas are not assembled here: a stream would drop the calls
        raise BadRequest(f"{label}: calls with tools are made without streaming.", provider=provider)


def _tool_calls(calls: Any) -> tuple[ToolCall, ...]:
    """The answer's function calls; arguments that are not a JSON object arrive as None."""
    out = []
    for call in calls or ():
        function = _get(call, "function")
        raw = _get(function, "arguments") or ""
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except ValueError:
            parsed = None
        out.append(ToolCall(_get(call, "id") or "", _get(function, "name") or "",
                            parsed if isinstance(parsed, dict) else None, raw))
    return tuple(out)


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK model or of a plain dict (the SDK keeps unknown fields as dicts)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    details = _get(usage, "prompt_tokens_details")
    cached = _get(details, "cached_tokens")
    if cached is None:
        cached = _get(usage, "prompt_cache_hit_tokens")  # DeepSeek's spelling
    return Usage(
        input_tokens=_get(usage, "prompt_tokens") or 0,
        output_tokens=_get(usage, "completion_tokens") or 0,
        cached_input_tokens=cached or 0,
        cache_write_tokens=_get(details, "cache_write_tokens") or 0,
    )


def _cause(err: BaseException) -> str:
    return str(err.__cause__ or err) or type(err.__cause__ or err).__name__


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
