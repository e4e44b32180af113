"""MCP connections per workspace: connect a catalog entry or a custom server, test it, enable, delete.

Secrets (a stdio child's environment variables, a remote server's headers) are one JSON object
encrypted by the vault, bound to the workspace and the row; pages see only their masked last
four (``secret_hints``). Settings (non-secret values such as a site URL) are stored in the clear.
Admins manage connections (``connector.manage``); every member can see them.

``server_spec`` is the only way secrets come out, for the client, right before a session.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import audit, db, redaction, vault
from engine.connectors import catalog, client, policy
from engine.connectors.models import McpConnection
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, NotFound
from engine.permissions import Actor, authorize

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
ENV_NAME = catalog.ENV_NAME
HEADER_NAME = catalog.HEADER_NAME
MAX_VALUE = 8192
MAX_ERROR = 500
# Variables a custom connector may not set: they change what runs, not what it is told.
# A query parameter or command-line flag by these names holds a credential, which would then be
# stored in the clear and shown to every member: refused, with where to put it instead.
SECRET_NAME = re.compile(r"(?i)(^|[-_])(api[-_]?key|apikey|key|token|secret|password|passwd|pwd|auth|signature|sig)$")
FORBIDDEN_ENV = {"PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "NODE_OPTIONS", "HOME"}


@dataclass(frozen=True)
class FieldView:
    target: str  # the env var or header name
    kind: str  # env | header
    label: str
    secret: bool
    required: bool
    scheme: str = ""
    placeholder: str = ""
    vendor_name: str = ""
    shown: str = ""  # a secret's masked hint, or a setting's value; "" when unset


@dataclass(frozen=True)
class ConnectionView:
    id: int
    slug: str
    name: str
    catalog_key: str | None
    transport: str
    command: str | None
    args: list[str]
    url: str | None
    fields: list[FieldView]
    enabled: bool
    tool_count: int | None
    tools: list[client.ToolInfo]  # the last listing (what Test found), for everyone to read
    tools_listed_at: datetime | None
    last_used_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    created_at: datetime

    @property
    def where(self) -> str:
        """What it runs or calls, safe to show (settings only; secrets never reach args)."""
        if self.transport == "http":
            return self.url or ""
        return shlex.join([self.command or "", *self.args])


@dataclass(frozen=True)
class TestResult:
    ok: bool
    message: str
    tools: list[client.ToolInfo]


def _binding(c: McpConnection) -> vault.SecretBinding:
    return vault.SecretBinding(c.workspace_id, c.id, "mcp-connection", "mcp")


def _view(c: McpConnection) -> ConnectionView:
    fields = []
    for f in c.fields or []:
        target = f.get("env") or f.get("header")
        secret = f.get("secret", True)
        shown = (c.secret_hints or {}).get(target, "") if secret else (c.settings or {}).get(target, "")
        fields.append(FieldView(target, "env" if f.get("env") else "header", f.get("label", target), secret,
                                f.get("required", True), f.get("scheme", ""), f.get("placeholder", ""),
                                f.get("vendor_name", ""), shown))
    return ConnectionView(c.id, c.slug, c.name, c.catalog_key, c.transport, c.command, list(c.args or []), c.url,
                          fields, c.enabled, len(c.tools) if c.tools is not None else None, stored_tools(c) or [],
                          c.tools_listed_at,
                          c.last_used_at, c.last_error, c.last_error_at, c.created_at)


def _load(s: Session, workspace_id: int, connection_id: int) -> McpConnection:
    c = s.get(McpConnection, connection_id)
    if c is None or c.workspace_id != workspace_id:
        raise NotFound("That connector does not exist in this workspace (it may have been deleted).")
    return c


# --- validation -------------------------------------------------------------------------------


def _name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInput("A connector's name is 1 to 100 characters.")
    return name


def _slug_from(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24].strip("-")
    return slug or "connector"


def _unique_slug(s: Session, workspace_id: int, wanted: str) -> str:
    taken = set(s.scalars(select(McpConnection.slug).where(McpConnection.workspace_id == workspace_id)))
    slug, n = wanted, 2
    while slug in taken:
        suffix = f"-{n}"
        slug, n = wanted[: 24 - len(suffix)] + suffix, n + 1
    return slug


def _value(label: str, value: str) -> str:
    value = (value or "").strip()
    if "\n" in value or "\r" in value or "\x00" in value:
        raise InvalidInput(f"{label}: paste one line.")
    if len(value) > MAX_VALUE:
        raise InvalidInput(f"{label} is longer than {MAX_VALUE} characters.")
    return value


def _check_url(url: str) -> str:
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
        raise InvalidInput("The server URL must start with http:// or https:// and name a host, "
                           "for example https://mcp.example.com/mcp.")
    if parts.username or parts.password:
        raise InvalidInput("Put credentials in a header, not in the URL.")
    named = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if SECRET_NAME.search(k)]
    if named or redaction.redact(url) != url:
        raise InvalidInput(f"The URL carries a credential{f' ({named[0]}=…)' if named else ''}; it would be stored and "
                           "shown in the clear. Put it in a header below (for example Authorization: Bearer …).")
    return url


def _check_argv(argv: list[str]) -> None:
    for i, arg in enumerate(argv):
        flag, _, inline = arg.lstrip("-").partition("=")
        is_flag = arg.startswith("-") and SECRET_NAME.search(flag)
        has_value = inline or (i + 1 < len(argv) and not argv[i + 1].startswith("-"))
        if (is_flag and has_value) or redaction.redact(arg) != arg:
            what = arg.split("=", 1)[0] if is_flag else "a value shaped like a key"  # never the value itself
            raise InvalidInput(f"The command carries a credential ({what}); it would be stored "
                               "and shown in the clear, and visible in the process list. Give it as an "
                               "environment variable below instead (most servers read their key from one).")


def _split_values(fields: list[dict], values: dict[str, str], *, keep: dict[str, str] | None = None):
    """(secrets, settings) from the form's values; a blank secret keeps the stored one (``keep``)."""
    secrets_, settings = {}, {}
    for f in fields:
        target = f.get("env") or f.get("header")
        label = f.get("label", target)
        given = _value(label, values.get(target, ""))
        if f.get("secret", True):
            if given:
                secrets_[target] = given
            elif keep and target in keep:
                secrets_[target] = keep[target]
        elif given:
            settings[target] = given
        have = secrets_ if f.get("secret", True) else settings
        if f.get("required", True) and target not in have:
            raise InvalidInput(f"{label} is needed to connect.")
    unknown = set(values) - {f.get("env") or f.get("header") for f in fields}
    if unknown:
        raise InvalidInput(f"Unknown field {sorted(unknown)[0]!r} for this connector.")
    return secrets_, settings


def _store_secrets(s: Session, c: McpConnection, secrets_: dict[str, str]) -> None:
    if secrets_:
        c.secret_ciphertext, c.secret_nonce = vault.encrypt_secret(s, _binding(c), json.dumps(secrets_))
    else:
        c.secret_ciphertext = c.secret_nonce = None
    c.secret_hints = {k: vault.mask(v) for k, v in secrets_.items()}


def _secrets(s: Session, c: McpConnection) -> dict[str, str]:
    if c.secret_ciphertext is None:
        return {}
    try:
        values = json.loads(vault.decrypt_secret(s, _binding(c), c.secret_ciphertext, c.secret_nonce))
    except vault.SecretUnreadable:
        raise vault.SecretUnreadable(
            f"The stored credentials of the connector {c.name!r} cannot be decrypted (they were altered, or "
            "copied from another workspace). Enter them again with Change credentials on the Connectors page."
        ) from None
    for v in values.values():
        redaction.register_secret(v)  # each value alone, so a log line holding one is scrubbed too
    return values


# --- writing ----------------------------------------------------------------------------------


def connect(actor: Actor, catalog_key: str, values: dict[str, str] | None = None, *, name: str | None = None) -> ConnectionView:
    """Connect a catalog entry's MCP server with the credentials and settings it needs."""
    entry = catalog.load().get(catalog_key)
    if entry.mcp is None:
        raise InvalidInput(f"{entry.name} has no MCP server; use its preset with the workflow http node.")
    if entry.mcp.transport == "stdio":
        policy.check_stdio(entry.name, custom=False, host_access=entry.mcp.host_access)
    fields = [f.model_dump(exclude_none=True) for f in entry.mcp.credentials]
    secrets_, settings = _split_values(fields, dict(values or {}))
    return _create(actor, name=_name(name or entry.name), catalog_key=entry.key, transport=entry.mcp.transport,
                   command=entry.mcp.command, args=list(entry.mcp.args), url=entry.mcp.url, fields=fields,
                   secrets_=secrets_, settings=settings)


def create_custom(
    actor: Actor, *, name: str, command: str | None = None, url: str | None = None,
    env: dict[str, str] | None = None, headers: dict[str, str] | None = None,
) -> ConnectionView:
    """A server that is not in the catalog: a stdio command line (``npx -y pkg --flag``) or a URL.

    ``env`` values go to the child's environment and ``headers`` values to every request; both
    are stored encrypted. Give one of ``command`` or ``url``.
    """
    name = _name(name)
    command, url = (command or "").strip(), (url or "").strip()
    if bool(command) == bool(url):
        raise InvalidInput("Give a command to run (stdio) or a server URL (HTTP), one of the two.")
    fields: list[dict[str, Any]] = []
    secrets_: dict[str, str] = {}
    if command:
        policy.check_stdio(name, custom=True, host_access=False)
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise InvalidInput(f"The command cannot be read: {exc}.") from None
        if not argv or not argv[0].strip():
            raise InvalidInput("The command is empty.")
        _check_argv(argv)
        if headers:
            raise InvalidInput("A stdio server takes environment variables, not headers.")
        for key, value in (env or {}).items():
            key = (key or "").strip()
            if not ENV_NAME.match(key):
                raise InvalidInput(f"{key!r} is not an environment variable name (A-Z, 0-9 and _).")
            if key in FORBIDDEN_ENV:
                raise InvalidInput(f"{key} cannot be set for a connector.")
            secrets_[key] = _value(key, value)
            if not secrets_[key]:
                raise InvalidInput(f"Give a value for {key}.")
            fields.append({"env": key, "label": key})
        transport, args, the_url = "stdio", argv[1:], None
        if len(argv[0]) > 500:
            raise InvalidInput("The command is longer than 500 characters.")
        command = argv[0]
    else:
        the_url = _check_url(url)
        if env:
            raise InvalidInput("An HTTP server takes headers, not environment variables.")
        for key, value in (headers or {}).items():
            key = (key or "").strip()
            if not HEADER_NAME.match(key):
                raise InvalidInput(f"{key!r} is not a header name (letters, digits and dashes).")
            secrets_[key] = _value(key, value)
            if not secrets_[key]:
                raise InvalidInput(f"Give a value for the {key} header.")
            fields.append({"header": key, "label": key})
        transport, args, command = "http", [], None
    return _create(actor, name=name, catalog_key=None, transport=transport, command=command, args=args,
                   url=the_url, fields=fields, secrets_=secrets_, settings={})


def _create(actor, *, name, catalog_key, transport, command, args, url, fields, secrets_, settings) -> ConnectionView:
    from engine.billing import limits

    with db.read_session() as s:
        authorize(s, actor, "connector.manage")  # a viewer hears "not allowed", not "upgrade your plan"
    limits.require_feature(actor.workspace_id, "mcp_connectors")
    with db.transaction() as s:
        authorize(s, actor, "connector.manage")
        c = McpConnection(workspace_id=actor.workspace_id, name=name, slug=_unique_slug(s, actor.workspace_id, _slug_from(name)),
                          catalog_key=catalog_key, transport=transport, command=command, args=args, url=url,
                          fields=fields, settings=settings, secret_hints={}, enabled=True, created_by=actor.user_id)
        s.add(c)
        try:
            s.flush()  # the id is part of what the secrets are bound to
        except IntegrityError:
            raise Conflict("Another connector was added with the same name just now; try again.") from None
        _store_secrets(s, c, secrets_)
        audit.record_for(s, actor, "connector.created", "mcp_connection", c.id, name=name, catalog_key=catalog_key,
                         transport=transport, secrets=sorted(c.secret_hints))
        return _view(c)


def update_values(actor: Actor, connection_id: int, values: dict[str, str]) -> ConnectionView:
    """New credentials or settings; a blank secret keeps the stored one."""
    with db.transaction() as s:
        authorize(s, actor, "connector.manage")
        c = _load(s, actor.workspace_id, connection_id)
        secrets_, settings = _split_values(c.fields or [], dict(values), keep=_secrets(s, c))
        _store_secrets(s, c, secrets_)
        c.settings = settings
        c.tools = c.tools_listed_at = c.last_error = c.last_error_at = None  # what was listed was for the old key
        c.updated_at = utcnow()
        audit.record_for(s, actor, "connector.updated", "mcp_connection", c.id, name=c.name,
                         changed=sorted(k for k, v in values.items() if v))
        return _view(c)


def set_enabled(actor: Actor, connection_id: int, enabled: bool) -> ConnectionView:
    with db.transaction() as s:
        authorize(s, actor, "connector.manage")
        c = _load(s, actor.workspace_id, connection_id)
        c.enabled, c.updated_at = bool(enabled), utcnow()
        audit.record_for(s, actor, "connector.enabled" if enabled else "connector.disabled", "mcp_connection", c.id, name=c.name)
        return _view(c)


def delete(actor: Actor, connection_id: int) -> str:
    with db.transaction() as s:
        authorize(s, actor, "connector.manage")
        c = _load(s, actor.workspace_id, connection_id)
        name = c.name
        audit.record_for(s, actor, "connector.deleted", "mcp_connection", c.id, name=name)
        s.delete(c)
    return name


# --- reading ----------------------------------------------------------------------------------


def list_connections(actor: Actor) -> list[ConnectionView]:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        rows = s.scalars(select(McpConnection).where(McpConnection.workspace_id == actor.workspace_id)
                         .order_by(McpConnection.name, McpConnection.id))
        return [_view(c) for c in rows]


def get(actor: Actor, connection_id: int) -> ConnectionView:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        return _view(_load(s, actor.workspace_id, connection_id))


def resolve(workspace_id: int, ref: str | int) -> int:
    """A connection's id from its id, slug or name (what a workflow spec writes)."""
    with db.read_session() as s:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
            c = s.get(McpConnection, int(ref))
            if c is not None and c.workspace_id == workspace_id:
                return c.id
        text = str(ref).strip()
        rows = list(s.scalars(select(McpConnection).where(McpConnection.workspace_id == workspace_id)))
        for match in ([c for c in rows if c.slug == text.lower()], [c for c in rows if c.name == text],
                      [c for c in rows if c.name.lower() == text.lower()]):
            if len(match) == 1:
                return match[0].id
    raise NotFound(f"There is no connector {str(ref)!r} in this workspace. Add it on the Connectors page.")


def server_spec(s: Session, workspace_id: int, connection_id: int) -> tuple[McpConnection, client.ServerSpec]:
    """The row and how to reach its server, secrets decrypted. For the client only: never show or log it."""
    c = _load(s, workspace_id, connection_id)
    secrets_ = _secrets(s, c)
    settings = dict(c.settings or {})
    if c.transport == "http":
        headers = {}
        for f in c.fields or []:
            h = f.get("header")
            if h and h in secrets_:
                headers[h] = f"{f['scheme']} {secrets_[h]}" if f.get("scheme") else secrets_[h]
        return c, client.ServerSpec(c.name, "http", url=c.url, headers=headers)
    entry = _catalog_entry(c.catalog_key)
    policy.check_stdio(c.name, custom=entry is None, host_access=bool(entry and entry.mcp and entry.mcp.host_access))
    args = tuple(catalog.PLACEHOLDER.sub(lambda m: settings.get(m.group(1), ""), a) for a in c.args or [])
    env = {**settings, **{k: v for k, v in secrets_.items()}}
    return c, client.ServerSpec(c.name, "stdio", command=c.command, args=args, env=env, hidden=tuple(secrets_.values()))


def _catalog_entry(key: str | None) -> catalog.Entry | None:
    """The row's catalog entry, or None for a custom server (or one whose entry has left the catalog)."""
    if key is None:
        return None
    try:
        return catalog.load().get(key)
    except InvalidInput:
        return None


def record_outcome(workspace_id: int, connection_id: int, *, error: str | None,
                   tools: list[client.ToolInfo] | None = None, used: bool = True) -> None:
    """Keep last-used, the last error (or clear it) and, after a listing, the tools.

    One UPDATE and no read first: on SQLite a read-then-write transaction fails with "database
    is locked" when calls from several threads finish together.
    """
    now = utcnow()
    values: dict[str, Any] = {"last_error": error[:MAX_ERROR] if error else None, "last_error_at": now if error else None}
    if used:
        values["last_used_at"] = now
    if tools is not None:
        values["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in tools]
        values["tools_listed_at"] = now
    with db.transaction() as s:
        s.execute(update(McpConnection).where(McpConnection.id == connection_id,
                                              McpConnection.workspace_id == workspace_id).values(**values))


def stored_tools(c: McpConnection) -> list[client.ToolInfo] | None:
    if c.tools is None:
        return None
    return [client.ToolInfo(t["name"], t.get("description", ""), t.get("input_schema", {})) for t in c.tools]


def test(actor: Actor, connection_id: int) -> TestResult:
    """Connect, list the tools with their input schemas, and remember the outcome on the row."""
    with db.read_session() as s:
        authorize(s, actor, "connector.manage")
        _, spec = server_spec(s, actor.workspace_id, connection_id)
    try:
        tools = client.list_tools(spec)
    except client.ServerFailure as failure:
        record_outcome(actor.workspace_id, connection_id, error=failure.message)
        return TestResult(False, failure.message, [])
    record_outcome(actor.workspace_id, connection_id, error=None, tools=tools)
    return TestResult(True, f"Connected: {len(tools)} tool{'s' if len(tools) != 1 else ''}.", tools)


test.__test__ = False  # a service, not a pytest test
