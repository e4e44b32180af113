"""The one protocol every vendor module speaks, and the values that cross it.

A provider turns a ``Request`` into a ``Result`` (or a stream of ``Chunk``s ending in one) by
calling its vendor, and reports the vendor's own usage numbers. It knows nothing of
workspaces, budgets, prices or the database: the engine's generation path does all of that
around it. Failures are raised as the typed errors below so the router can decide between
retry, fallback and giving up without reading vendor-specific messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

Kind = Literal["text", "image", "speech", "video"]
KINDS: tuple[Kind, ...] = ("text", "image", "speech", "video")


# --- what goes in ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: a name (``[a-zA-Z0-9_-]{1,64}``), what it does, its JSON Schema."""

    name: str
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """The model asking for one tool. ``arguments`` is None when the vendor sent text that is not
    a JSON object (``raw_arguments`` keeps it), so the caller can answer with an error."""

    id: str
    name: str
    arguments: Mapping[str, Any] | None
    raw_arguments: str = ""


@dataclass(frozen=True)
class Message:
    """One turn. An assistant turn may carry ``tool_calls``; a ``tool`` turn answers one of them
    (``tool_call_id``) with ``content``, ``is_error`` when the tool failed."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False

    def text_for_count(self) -> str:
        """The turn as the model reads it, for token estimates: the words and any tool calls."""
        calls = [f"{c.name}({c.raw_arguments or json.dumps(c.arguments or {})})" for c in self.tool_calls]
        return "\n".join(p for p in (self.content, *calls) if p)


@dataclass(frozen=True)
class Request:
    """One call. Text calls use ``messages`` (and ``system``); media calls use ``prompt``.

    ``params`` carries the kind's own knobs: image ``size``/``quality``/``n``, speech
    ``voice``/``format``, video ``duration``; a provider ignores what it does not know.
    ``request_id`` is ours, sent to vendors that accept an idempotency key.
    """

    kind: Kind
    model: str
    messages: tuple[Message, ...] = ()
    prompt: str = ""
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 120.0
    request_id: str | None = None
    tools: tuple[ToolSpec, ...] = ()  # text calls only; vendors without tool calling refuse them

    def prompt_text(self) -> str:
        """Everything the model reads, for token estimates and ledgers that keep no content."""
        parts = [self.system or "", *(m.text_for_count() for m in self.messages), self.prompt,
                 *(tools_text(self.tools),)]
        return "\n".join(p for p in parts if p)


def tools_text(tools: tuple[ToolSpec, ...]) -> str:
    """The tool definitions as the model reads them, roughly: what a token estimate should count."""
    return "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.input_schema},
                                sort_keys=True) for t in tools)


# --- what comes out -------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What the vendor reported. ``input_tokens`` includes cache reads and cache writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    images: int = 0
    characters: int = 0
    seconds: Decimal = Decimal(0)


@dataclass(frozen=True)
class Asset:
    """A generated file: image, audio or video bytes with their media type."""

    data: bytes
    mime: str


@dataclass(frozen=True)
class Result:
    text: str = ""
    assets: tuple[Asset, ...] = ()
    usage: Usage = Usage()
    model: str = ""  # the model the vendor says answered, which may be a dated snapshot
    finish_reason: str | None = None
    vendor_request_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # the model wants these run before it answers


@dataclass(frozen=True)
class Chunk:
    """A piece of a streamed answer."""

    text: str


@dataclass(frozen=True)
class ModelInfo:
    id: str
    kind: Kind
    context_window: int | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""
    latency_ms: int | None = None


# --- long media jobs ------------------------------------------------------------------------


JobState = Literal["queued", "running", "done", "failed", "cancelled"]


@dataclass(frozen=True)
class Job:
    id: str
    model: str
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    progress: float | None = None  # 0..1 when the vendor says
    queue_position: int | None = None
    result: Result | None = None  # set when state == "done"
    error: str | None = None
    logs: tuple[str, ...] = ()


# --- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """How to reach one vendor account. ``api_key`` arrives decrypted from the vault, per call."""

    api_key: str | None = field(default=None, repr=False)  # never in a repr, log or traceback
    base_url: str | None = None
    timeout: float = 120.0
    headers: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


# --- errors ---------------------------------------------------------------------------------


class ProviderError(Exception):
    """A vendor call failed. ``retryable`` says whether the same target may succeed on retry."""

    retryable = False
    fallback = False  # whether another target might succeed where this one failed

    def __init__(self, message: str, *, provider: str = "", status: int | None = None,
                 retry_after: float | None = None, partial: Result | None = None):
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        # Usage the vendor billed before failing (a cut-off stream): the engine still records it.
        self.partial = partial


class AuthError(ProviderError):
    """The key is missing, wrong, revoked or lacks access to the model."""

    fallback = True


class RateLimited(ProviderError):
    retryable = True
    fallback = True


class BadRequest(ProviderError):
    """The vendor refused the request itself; sending it again will not help."""


class ContextTooLong(BadRequest):
    """The prompt does not fit this model: a larger-context model may take it."""

    fallback = True


class Unavailable(ProviderError):
    """5xx, overloaded, connection refused."""

    retryable = True
    fallback = True


class Timeout(ProviderError):
    retryable = True
    fallback = True


class TruncatedStream(ProviderError):
    """The stream ended before the vendor said it was complete: a failure, never a success."""

    retryable = True
    fallback = True


class Cancelled(ProviderError):
    """The caller cancelled (a stream abandoned, a media job cancelled)."""


# --- the protocol ---------------------------------------------------------------------------


@runtime_checkable
class Provider(Protocol):
    """One vendor account. ``stream`` yields ``Chunk``s and then exactly one ``Result``."""

    id: str
    kinds: frozenset[str]

    def models(self) -> list[ModelInfo]: ...

    def generate(self, req: Request) -> Result: ...

    def stream(self, req: Request) -> Iterator[Chunk | Result]: ...

    def health(self) -> Health: ...


@runtime_checkable
class JobProvider(Protocol):
    """Vendors whose media jobs are submitted, polled and cancellable."""

    def submit(self, req: Request) -> Job: ...

    def poll(self, job: Job) -> JobStatus: ...

    def cancel(self, job: Job) -> None: ...


@runtime_checkable
class TokenCounter(Protocol):
    """Vendors that can count a prompt's tokens exactly before the call."""

    def count_tokens(self, req: Request) -> int: ...
