"""Provider connections: the vendor accounts a workspace can call, each with its encrypted key.

Keys are write-only: they go in through ``create_connection``/``update_connection``, are
stored by ``engine.vault``, and come out decrypted only through ``provider_config``, which the
router calls per request. Everything shown to people carries the masked hint (``sk-…abcd``).
Admins and owners manage connections; every member can see them.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import providers
from engine import audit, db, redaction, router, vault
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import ProviderConnection, RouteTarget
from engine.permissions import Actor, authorize
from providers.base import Config, ModelInfo, ProviderError

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_KEY_LENGTH = 4096
MAX_TIMEOUT_S = 600
MAX_TEST_ERROR = 500
# Header names that carry credentials: those belong in the encrypted key, never in options.
AUTH_HEADER_RE = re.compile(r"(?i)authorization|api[-_]?key|token|secret|cookie")
# Vendors with a fixed endpoint and a key; the others ("openai-compatible") need a base URL.
KEY_REQUIRED = {"openai", "anthropic", "gemini", "elevenlabs", "fal"}
URL_REQUIRED = {"openai-compatible"}


@dataclass(frozen=True)
class ConnectionView:
    """A connection as anyone may see it: the key only as its masked hint."""

    id: int
    workspace_id: int
    name: str
    provider_type: str
    base_url: str | None
    price_provider: str | None
    key_hint: str | None
    options: dict[str, Any]
    enabled: bool
    last_tested_at: datetime | None
    last_test_ok: bool | None
    last_test_error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def has_key(self) -> bool:
        return self.key_hint is not None


@dataclass(frozen=True)
class ConnectionCheck:
    """The outcome of "Test connection"; ``detail`` is safe to show (redacted)."""

    ok: bool
    detail: str
    latency_ms: int | None


@dataclass(frozen=True)
class Deleted:
    name: str
    route_targets_removed: int

    def describe(self) -> str:
        routes = f" and removed it from {self.route_targets_removed} route target(s)" if self.route_targets_removed else ""
        return f"Deleted connection {self.name!r}{routes}. Past usage keeps its ledger rows."


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()  # ``update_connection``: leave this field as it is


def _view(c: ProviderConnection) -> ConnectionView:
    return ConnectionView(
        c.id, c.workspace_id, c.name, c.provider_type, c.base_url, c.price_provider,
        c.secret_hint if c.secret_ciphertext is not None else None, dict(c.options or {}), c.enabled,
        c.last_tested_at, c.last_test_ok, c.last_test_error, c.created_at, c.updated_at,
    )


def _binding(c: ProviderConnection) -> vault.SecretBinding:
    return vault.SecretBinding(c.workspace_id, c.id, c.name, c.provider_type)


# --- validation -------------------------------------------------------------------------------


def check_name(name: str) -> str:
    name = (name or "").strip().lower()
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(
            "A connection name is 1–64 characters of letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (for example 'openai' or 'local-ollama')."
        )
    return name


def check_type(provider_type: str) -> str:
    if provider_type not in providers.TYPES:
        raise InvalidInput(f"Unknown provider type {provider_type!r}. Choose one of: {', '.join(providers.TYPES)}.")
    return provider_type


def check_base_url(url: str | None, provider_type: str) -> str | None:
    url = (url or "").strip().rstrip("/")
    if not url:
        if provider_type in URL_REQUIRED:
            raise InvalidInput("An OpenAI-compatible connection needs its base URL, e.g. http://localhost:11434/v1.")
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"The base URL must start with http:// or https:// and name a host; got {url!r}.")
    if parts.username or parts.password or parts.query or parts.fragment:
        # Anything there would be stored in the clear; the key has its own encrypted field.
        raise InvalidInput("The base URL cannot contain a user name, password, query string or fragment; put the key in the API key field.")
    if len(url) > 500:
        raise InvalidInput("The base URL is longer than 500 characters.")
    return url


def check_price_provider(value: str | None, provider_type: str) -> str | None:
    value = (value or "").strip().lower()
    if not value:
        return None if provider_type in URL_REQUIRED else provider_type
    if not NAME_RE.fullmatch(value):
        raise InvalidInput("The pricing provider is a catalog id such as 'groq' or 'openai'.")
    return value


def check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    if "timeout" in options:
        timeout = options["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
            raise InvalidInput(f"The timeout option is a number of seconds between 0 and {MAX_TIMEOUT_S}.")
    headers = options.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise InvalidInput("The headers option maps header names to text values.")
    if any(AUTH_HEADER_RE.search(k) for k in headers):
        raise InvalidInput("Credentials cannot go in extra headers, which are stored in the clear; use the API key field.")
    return options


def check_key(api_key: str) -> str:
    api_key = api_key.strip()
    if len(api_key) > MAX_KEY_LENGTH or any(ch.isspace() for ch in api_key):
        raise InvalidInput("That does not look like an API key: it contains spaces or line breaks, or is too long.")
    return api_key


# --- reading ----------------------------------------------------------------------------------


def list_connections(actor: Actor) -> list[ConnectionView]:
    with db.read_session() as s:
        authorize(s, actor, "provider.read")
        rows = s.scalars(
            select(ProviderConnection).where(ProviderConnection.workspace_id == actor.workspace_id)
            .order_by(ProviderConnection.name)
        )
        return [_view(c) for c in rows]


def get_connection(actor: Actor, connection_id: int) -> ConnectionView:
    with db.read_session() as s:
        authorize(s, actor, "provider.read")
        return _view(_load(s, actor.workspace_id, connection_id))


def _load(s: Session, workspace_id: int, connection_id: int) -> ProviderConnection:
    c = s.get(ProviderConnection, connection_id)
    if c is None or c.workspace_id != workspace_id:
        raise NotFound("That provider connection does not exist in this workspace (it may have been deleted).")
    return c


def _name_taken(s: Session, workspace_id: int, name: str, except_id: int | None = None) -> None:
    q = select(ProviderConnection.id).where(ProviderConnection.workspace_id == workspace_id, ProviderConnection.name == name)
    if except_id is not None:
        q = q.where(ProviderConnection.id != except_id)
    if s.scalar(q) is not None:
        raise Conflict(f"This workspace already has a connection named {name!r}; choose another name.")


def provider_config(session: Session | None, workspace_id: int, connection_id: int) -> tuple[ConnectionView, Config]:
    """The connection and a ``providers.base.Config`` holding its decrypted key, for the router.

    Disabled connections are returned too (``view.enabled`` says so; the router skips them).
    No permission check: the caller has already authorised the call it is making. The Config
    must go straight to ``providers.build`` and never to a page, a log or an error message.
    """
    if session is None:
        with db.read_session() as s:
            return provider_config(s, workspace_id, connection_id)
    c = _load(session, workspace_id, connection_id)
    api_key = None
    if c.secret_ciphertext is not None:
        api_key = vault.decrypt_secret(session, _binding(c), c.secret_ciphertext, c.secret_nonce)
    options = dict(c.options or {})
    timeout = float(options.pop("timeout", 120.0))
    headers = options.pop("headers", {})
    return _view(c), Config(api_key=api_key, base_url=c.base_url, timeout=timeout, headers=headers, options=options)


# --- writing ----------------------------------------------------------------------------------


def create_connection(
    actor: Actor,
    *,
    name: str,
    provider_type: str,
    api_key: str | None = None,
    base_url: str | None = None,
    price_provider: str | None = None,
    options: dict[str, Any] | None = None,
    enabled: bool = True,
) -> ConnectionView:
    name = check_name(name)
    provider_type = check_type(provider_type)
    base_url = check_base_url(base_url, provider_type)
    price_provider = check_price_provider(price_provider, provider_type)
    options = check_options(options)
    api_key = check_key(api_key) if api_key else None
    if api_key is None and provider_type in KEY_REQUIRED:
        raise InvalidInput(f"A {provider_type} connection needs an API key.")
    with db.transaction() as s:
        authorize(s, actor, "provider.write")
        _name_taken(s, actor.workspace_id, name)
        c = ProviderConnection(
            workspace_id=actor.workspace_id, name=name, provider_type=provider_type, base_url=base_url,
            price_provider=price_provider, options=options, enabled=enabled, created_by=actor.user_id,
        )
        s.add(c)
        try:
            s.flush()  # the row's id is part of what the key is bound to
        except IntegrityError:
            raise Conflict(f"This workspace already has a connection named {name!r}; choose another name.") from None
        if api_key is not None:
            _store_key(s, c, api_key)
        audit.record_for(s, actor, "provider.created", "provider_connection", c.id, name=name,
                         provider_type=provider_type, base_url=base_url, key=c.secret_hint)
        return _view(c)


def _store_key(s: Session, c: ProviderConnection, api_key: str) -> None:
    c.secret_ciphertext, c.secret_nonce = vault.encrypt_secret(s, _binding(c), api_key)
    c.secret_hint = vault.mask(api_key)


def update_connection(
    actor: Actor,
    connection_id: int,
    *,
    name: str | _Keep = KEEP,
    provider_type: str | _Keep = KEEP,
    base_url: str | None | _Keep = KEEP,
    price_provider: str | None | _Keep = KEEP,
    options: dict[str, Any] | _Keep = KEEP,
    enabled: bool | _Keep = KEEP,
    api_key: str | None = None,
    clear_key: bool = False,
) -> ConnectionView:
    """Change what is given. No ``api_key`` (None or empty) keeps the stored key; ``clear_key`` removes it."""
    new_key = check_key(api_key) if api_key else None
    with db.transaction() as s:
        authorize(s, actor, "provider.write")
        c = _load(s, actor.workspace_id, connection_id)
        new_type = c.provider_type if provider_type is KEEP else check_type(provider_type)
        new_name = c.name if name is KEEP else check_name(name)
        new_url = check_base_url(c.base_url if base_url is KEEP else base_url, new_type)
        new_price = check_price_provider(c.price_provider if price_provider is KEEP else price_provider, new_type)
        new_options = dict(c.options or {}) if options is KEEP else check_options(options)
        has_key = new_key is not None or (c.secret_ciphertext is not None and not clear_key)
        if not has_key and new_type in KEY_REQUIRED:
            raise InvalidInput(f"A {new_type} connection needs an API key.")
        if new_name != c.name:
            _name_taken(s, actor.workspace_id, new_name, except_id=c.id)
        # The key is bound to the name and type: re-encrypt it under the new ones.
        kept_key = None
        if new_key is None and not clear_key and c.secret_ciphertext is not None and (new_name, new_type) != (c.name, c.provider_type):
            kept_key = vault.decrypt_secret(s, _binding(c), c.secret_ciphertext, c.secret_nonce)

        changed = [field for field, old, new in (
            ("name", c.name, new_name), ("provider_type", c.provider_type, new_type), ("base_url", c.base_url, new_url),
            ("price_provider", c.price_provider, new_price), ("options", c.options or {}, new_options),
            ("enabled", c.enabled, c.enabled if enabled is KEEP else bool(enabled)),
        ) if old != new]
        c.name, c.provider_type, c.base_url, c.price_provider, c.options = new_name, new_type, new_url, new_price, new_options
        if enabled is not KEEP:
            c.enabled = bool(enabled)
        if new_key is not None or kept_key is not None:
            _store_key(s, c, new_key or kept_key)
        elif clear_key:
            c.secret_ciphertext = c.secret_nonce = c.secret_hint = None
        if new_key is not None or clear_key:
            changed.append("key")
        if {"provider_type", "base_url", "key"} & set(changed):
            c.last_tested_at = c.last_test_ok = c.last_test_error = None  # the last test was of something else
        c.updated_at = utcnow()
        try:
            s.flush()
        except IntegrityError:
            raise Conflict(f"This workspace already has a connection named {new_name!r}; choose another name.") from None
        router.forget_routing(actor.workspace_id)  # calls must see the new key, URL or state at once
        audit.record_for(s, actor, "provider.updated", "provider_connection", c.id, name=c.name, changed=changed,
                         key=c.secret_hint if "key" in changed else None)
        return _view(c)


def delete_connection(actor: Actor, connection_id: int, *, remove_from_routes: bool = False) -> Deleted:
    """Delete a connection. If routes use it, refuse unless ``remove_from_routes``; ledger rows stay."""
    with db.transaction() as s:
        authorize(s, actor, "provider.write")
        c = _load(s, actor.workspace_id, connection_id)
        targets = s.scalar(select(func.count()).select_from(RouteTarget).where(RouteTarget.connection_id == c.id)) or 0
        if targets and not remove_from_routes:
            raise Conflict(
                f"Connection {c.name!r} is used by {targets} route target(s). Remove it from the routes first, "
                "or delete it together with those targets."
            )
        name = c.name
        s.execute(RouteTarget.__table__.delete().where(RouteTarget.connection_id == c.id))
        s.delete(c)
        router.forget_routing(actor.workspace_id)
        audit.record_for(s, actor, "provider.deleted", "provider_connection", connection_id, name=name,
                         route_targets_removed=targets)
    return Deleted(name, targets)


def test_connection(actor: Actor, connection_id: int) -> ConnectionCheck:
    """Call the vendor's health check with the stored key and keep the outcome on the connection.

    The database is not held open during the call. An error message is redacted (the key
    and anything key-shaped removed) before it is stored, shown or logged.
    """
    with db.read_session() as s:
        authorize(s, actor, "provider.write")
        view, config = provider_config(s, actor.workspace_id, connection_id)
    started = time.perf_counter()
    try:
        health = providers.build(view.provider_type, config, name=view.name).health()
        ok, detail, latency = health.ok, health.detail, health.latency_ms
    except Exception as exc:  # a diagnostic: every failure becomes the test's answer
        ok, detail, latency = False, f"{type(exc).__name__}: {exc}", None
        log.info("Connection test of %r failed: %s", view.name, detail)
    if latency is None:
        latency = round((time.perf_counter() - started) * 1000)
    if config.api_key:
        detail = detail.replace(config.api_key, redaction.REDACTED)
    detail = redaction.redact(detail)[:MAX_TEST_ERROR] or ("Connected." if ok else "The provider did not say why.")
    with db.transaction() as s:
        c = _load(s, actor.workspace_id, connection_id)
        c.last_tested_at, c.last_test_ok, c.last_test_error = utcnow(), ok, None if ok else detail
        audit.record_for(s, actor, "provider.tested", "provider_connection", c.id, name=c.name, ok=ok)
    return ConnectionCheck(ok, detail, latency)


test_connection.__test__ = False  # a service, not a pytest test, wherever it is imported


def list_models(actor: Actor, connection_id: int) -> list[ModelInfo]:
    """The models the connection offers, for the model picker: a vendor's own list, or what a
    compatible server answers at GET /models. Any other model id can still be routed by hand."""
    with db.read_session() as s:
        authorize(s, actor, "provider.read")
        view, config = provider_config(s, actor.workspace_id, connection_id)
    try:
        return providers.build(view.provider_type, config, name=view.name).models()
    except (ProviderError, ValueError) as exc:
        detail = str(exc).replace(config.api_key, redaction.REDACTED) if config.api_key else str(exc)
        raise InvalidInput(f"Could not list the models of {view.name!r}: {redaction.redact(detail)}") from None
