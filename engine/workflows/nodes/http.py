"""The http node: one request through httpx, with a stored credential, a timeout and the statuses it expects.

The credential's value goes only into the request's headers; the step's logs name the method,
host and path and the answer's status, never headers or the query string. Where the request may
go (this host's own networks or not) is ``engine.outbound``'s to say, for every redirect too.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from engine import outbound
from engine.errors import MeterbookError, PermissionDenied
from engine.workflows import credentials
from engine.workflows.nodes import NodeContext, NodeFailed, NodeResult, NodeType, Params, register

MAX_BODY_BYTES = 5_000_000


class HttpParams(Params):
    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] = Field(default_factory=dict)
    body: Any = None  # a mapping or list is sent as JSON, text as it is
    credential: str | None = None
    timeout_s: float = Field(30.0, gt=0, le=600)
    expect_status: list[int] | None = None  # None: any 2xx
    response: Literal["auto", "json", "text"] = "auto"


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}{parts.path or '/'}"


def _allowed(request: httpx.Request) -> None:
    """Every request the node sends, each redirect too, goes only where this instance lets workspaces go."""
    outbound.check_host(request.url.host, request.url.port)


def run_http(ctx: NodeContext, p: HttpParams) -> NodeResult:
    parts = urlsplit(p.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeFailed(f"The url must start with http:// or https://, not {p.url[:80]!r}.", retry=False)
    if ctx.dry_run:
        return NodeResult({"dry_run": True, "method": p.method, "url": f"{parts.scheme}://{_where(p.url)}"})
    headers = dict(p.headers)
    if p.credential:
        try:
            name, value = credentials.header_for(ctx.workspace_id, p.credential)
        except MeterbookError as exc:
            raise NodeFailed(str(exc), retry=False) from None
        headers[name] = value
    kwargs: dict[str, Any] = {}
    if isinstance(p.body, dict | list):
        kwargs["json"] = p.body
    elif p.body is not None:
        kwargs["content"] = str(p.body).encode()
    try:
        with httpx.Client(timeout=min(p.timeout_s, ctx.timeout_s), follow_redirects=True,
                          event_hooks={"request": [_allowed]}) as client:
            r = client.request(p.method, p.url, headers=headers, params=p.query or None, **kwargs)
    except PermissionDenied as exc:
        raise NodeFailed(str(exc), retry=False) from None
    except httpx.TimeoutException:
        raise NodeFailed(f"{p.method} {_where(p.url)} did not answer within {p.timeout_s:g} s.") from None
    except httpx.HTTPError as exc:
        raise NodeFailed(f"{p.method} {_where(p.url)} failed: {type(exc).__name__}.") from None
    log = f"{p.method} {_where(p.url)} → {r.status_code} in {int(r.elapsed.total_seconds() * 1000)} ms"
    expected = p.expect_status
    if (expected is not None and r.status_code not in expected) or (expected is None and not r.is_success):
        retry = r.status_code in (408, 425, 429) or r.status_code >= 500
        raise NodeFailed(f"{p.method} {_where(p.url)} answered {r.status_code}: {r.text[:300]}", retry=retry)
    if len(r.content) > MAX_BODY_BYTES:
        raise NodeFailed(f"The answer is {len(r.content):,} bytes; the limit is {MAX_BODY_BYTES:,}.", retry=False)
    body: Any = r.text
    is_json = "json" in r.headers.get("content-type", "")
    if p.response == "json" or (p.response == "auto" and is_json):
        try:
            body = r.json() if r.content else None
        except json.JSONDecodeError:
            raise NodeFailed(f"The answer from {_where(p.url)} is not JSON: {r.text[:200]}", retry=False) from None
    keep = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "etag", "last-modified", "location")}
    return NodeResult({"status": r.status_code, "headers": keep, "body": body}, logs=log)


register(NodeType("http", HttpParams, run_http, side_effects=True, summary="an HTTP request"))
