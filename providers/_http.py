"""Plumbing shared by the vendor modules that speak REST over httpx (Gemini, ElevenLabs, fal).

One ``VendorHTTP`` per provider instance holds one keep-alive ``httpx.Client``. It attaches the
key only to requests for the vendor's own origin, so a download link in a response (a CDN,
say) never sees it, and it turns every failure into the typed errors of ``providers.base``:

    a failed HTTP status           → providers._errors.for_status (the one status table)
    the vendor says "bad key"      → AuthError, whatever the status (Gemini answers 400)
    the vendor says "too long"     → ContextTooLong
    httpx.TimeoutException         → Timeout
    other httpx.TransportError     → Unavailable   (refused, reset, protocol errors)

Each vendor words its errors differently, so each module passes a ``describe`` function that
reads a failed response into a ``VendorError``. Messages are the vendor's own words, with the
key removed should a vendor ever echo it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from providers._errors import for_status, reason, retry_after
from providers.base import AuthError, Config, Health, ProviderError, Timeout, Unavailable

USER_AGENT = "meterbook"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class VendorError:
    """What a vendor said about a failed call, read from its own error body."""

    message: str
    too_long: bool = False
    auth: bool = False
    retry_after: float | None = None  # from the body, when the vendor puts it there


Describe = Callable[[httpx.Response], VendorError]


def json_body(response: httpx.Response) -> Any:
    """The response's JSON, or None when it has none (an HTML error page from a proxy, say)."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def path_segment(value: str) -> str:
    """A model or voice id made safe for a URL path; slashes in fal's model ids are meant."""
    return quote(value, safe="/:")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


class _KeyAuth(httpx.Auth):
    """Puts the key in the vendor's header, for the vendor's own origin only."""

    def __init__(self, header: str, value: str, base_url: str):
        self._header = header
        self._value = value
        self._origin = _origin(httpx.URL(base_url))

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        if _origin(request.url) == self._origin:
            request.headers[self._header] = self._value
        yield request

    def __repr__(self) -> str:
        return f"_KeyAuth({self._header}: [hidden])"


class VendorHTTP:
    """One vendor account's HTTP client: keep-alive, the key, and the typed error mapping."""

    def __init__(self, *, provider: str, label: str, config: Config, default_base_url: str,
                 auth_header: str, describe: Describe, auth_prefix: str = ""):
        self.provider = provider
        self.label = label  # the vendor's name as people know it, for messages
        self.base_url = (config.base_url or default_base_url).rstrip("/")
        self.timeout = config.timeout
        self._describe = describe
        self._key = config.api_key or ""
        auth = _KeyAuth(auth_header, auth_prefix + self._key, self.base_url) if self._key else None
        self.client = httpx.Client(
            auth=auth,
            headers={"user-agent": USER_AGENT, **config.headers},
            timeout=config.timeout,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=60),
        )

    def __repr__(self) -> str:
        return f"VendorHTTP({self.provider!r}, {self.base_url!r})"

    def url(self, path: str) -> str:
        """An absolute URL as given (fal hands out its own), else a path under the base URL."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def close(self) -> None:
        self.client.close()

    # --- calls ------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, timeout: float | None = None, check: bool = True,
                **kwargs: Any) -> httpx.Response:
        """One call; a failed status raises its typed error unless ``check`` is off."""
        self._require_key()
        timeout = self.timeout if timeout is None else timeout
        with self.mapped(timeout):
            response = self.client.request(method, self.url(path), timeout=timeout, **kwargs)
        if check:
            self.raise_for_status(response)
        return response

    @contextmanager
    def stream(self, method: str, path: str, *, timeout: float | None = None,
               **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed call whose status is checked before the body is read.

        Errors while the caller reads the body are the caller's to map (``mapped``), since only
        it knows what it has already received.
        """
        self._require_key()
        timeout = self.timeout if timeout is None else timeout
        with ExitStack() as stack:
            with self.mapped(timeout):
                response = stack.enter_context(
                    self.client.stream(method, self.url(path), timeout=timeout, **kwargs))
                if response.status_code >= 300:
                    response.read()
            self.raise_for_status(response)
            yield response

    @contextmanager
    def mapped(self, timeout: float | None = None) -> Iterator[None]:
        """Turns httpx's transport failures into Timeout / Unavailable."""
        try:
            yield
        except httpx.TimeoutException as exc:
            limit = f" within {timeout:g} s" if timeout is not None else ""
            raise Timeout(f"{self.label} did not answer{limit}.", provider=self.provider) from exc
        except httpx.TransportError as exc:
            detail = reason(str(exc), self._key) or type(exc).__name__
            raise Unavailable(f"Could not reach {self.label}: {detail}", provider=self.provider) from exc

    def health(self, path: str, *, also_ok: tuple[int, ...] = ()) -> Health:
        """Whether an authenticated read answers, and how fast; ``also_ok`` are statuses that
        still prove the key was accepted."""
        started = time.perf_counter()
        try:
            response = self.request("GET", path, timeout=min(self.timeout, 15.0), check=False)
            if response.status_code not in also_ok:
                self.raise_for_status(response)
        except ProviderError as exc:
            return Health(ok=False, detail=str(exc), latency_ms=_ms_since(started))
        return Health(ok=True, detail=f"{self.label} accepted the key.", latency_ms=_ms_since(started))

    # --- errors -----------------------------------------------------------------------------

    def raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 300:
            return
        raise self.error(response)

    def error(self, response: httpx.Response) -> ProviderError:
        """The typed error for a failed response, in the vendor's words."""
        return self.error_for(response.status_code, self._describe(response), response.headers)

    def error_for(self, status: int, said: VendorError,
                  headers: Mapping[str, str] | None = None) -> ProviderError:
        """The typed error for a status and what the vendor said (also for errors inside a stream)."""
        why = reason(said.message, self._key) or "no reason given"
        if said.auth:
            return AuthError(f"{self.label}: {why} (HTTP {status})", provider=self.provider, status=status)
        headers = dict(headers or {})
        if said.retry_after is not None and retry_after(headers) is None:
            headers["retry-after"] = str(said.retry_after)
        return for_status(status, why, provider=self.provider, label=self.label, headers=headers,
                          code="context_length_exceeded" if said.too_long else None)

    def _require_key(self) -> None:
        if not self._key:
            raise AuthError(f"No API key is set for {self.label}.", provider=self.provider)


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
