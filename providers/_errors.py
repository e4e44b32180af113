"""Turning a vendor's failure into the typed errors of ``providers.base``.

The SDK-based modules share what is the same across vendors: one status table, the
Retry-After header in its spellings, spotting a context-length refusal in the vendor's own
words, and keeping the API key out of every message we repeat::

    401, 402, 403                         → AuthError      (key wrong, revoked, no access or credit)
    408                                   → Timeout
    429                                   → RateLimited    (retry_after from the headers)
    other 4xx, worded as a context limit  → ContextTooLong
    other 4xx                             → BadRequest
    5xx (529 overloaded among them)       → Unavailable

Errors that arrive inside a stream carry no status, only the vendor's error type; ``for_type``
maps those.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from providers.base import (
    AuthError,
    BadRequest,
    ContextTooLong,
    ProviderError,
    RateLimited,
    Result,
    Timeout,
    Unavailable,
)

# How vendors and the servers that copy them word "the prompt does not fit this model".
CONTEXT_WORDING = re.compile(
    r"context[ _](length|window|size|limit)|maximum context|prompt is too long|exceeds? context"
    r"|reduce the length of the (messages|prompt)",
    re.IGNORECASE,
)

_TYPES: dict[str, type[ProviderError]] = {
    "authentication_error": AuthError,
    "permission_error": AuthError,
    "rate_limit_error": RateLimited,
    "invalid_request_error": BadRequest,
    "not_found_error": BadRequest,
    "request_too_large": BadRequest,
    "timeout_error": Timeout,
}

_MAX_REASON = 500


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    if not headers:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(float(ms) / 1000, 0.0)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def redact(text: str, secret: str | None) -> str:
    """``text`` with the key removed, wherever a vendor or a proxy chose to echo it."""
    return text.replace(secret, "[redacted]") if secret else text


def reason(text: str, secret: str | None) -> str:
    """A vendor's message made safe and short enough to show a person."""
    text = " ".join(redact(text, secret).split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def for_status(status: int, why: str, *, provider: str, label: str, headers: Mapping[str, str] | None = None,
               code: str | None = None, partial: Result | None = None) -> ProviderError:
    """The typed error for an HTTP failure; ``why`` is the vendor's reason, already made safe."""
    message = f"{label}: {why} (HTTP {status})"
    kwargs = {"provider": provider, "status": status, "partial": partial}
    if status in (401, 402, 403):
        return AuthError(message, **kwargs)
    if status == 408:
        return Timeout(message, **kwargs)
    if status == 429:
        if code == "insufficient_quota":
            # Out of credit, not out of rate: waiting will not help, another account might.
            return AuthError(message, **kwargs)
        return RateLimited(message, retry_after=retry_after(headers), **kwargs)
    if status >= 500:
        return Unavailable(message, retry_after=retry_after(headers), **kwargs)
    if code == "context_length_exceeded" or CONTEXT_WORDING.search(why):
        return ContextTooLong(message, **kwargs)
    return BadRequest(message, **kwargs)


def for_type(error_type: str | None, why: str, *, provider: str, label: str,
             partial: Result | None = None) -> ProviderError:
    """The typed error for a failure reported inside a stream, by the vendor's error type."""
    message = f"{label}: {why}"
    cls = _TYPES.get(error_type or "", Unavailable)  # server_error, api_error, overloaded_error, unknown
    if cls is BadRequest and CONTEXT_WORDING.search(why):
        cls = ContextTooLong
    return cls(message, provider=provider, partial=partial)
