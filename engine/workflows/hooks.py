"""Webhook triggers: a secret URL per hook that starts a run of its workflow, optionally signed.

A hook's URL is ``/hooks/<workflow id>/<token>`` on the sidecar (``engine/sidecar/http.py``).
The id, not the name, so renaming a workflow does not break the senders that call it.

- **The token** (``mbh_`` + 32 random bytes, URL-safe) is shown once, when the hook is created
  or rotated; only its SHA-256 is stored, with its last four characters for lists. A token is
  looked up by its hash and compared again in constant time; an unknown token and a token of
  another workflow get the same ``NotFound``, so a URL reveals nothing.
- **Signing** (optional, per hook): a secret (``mbs_…``, shown once, kept in the vault). The
  sender puts the Unix time in ``X-Meterbook-Timestamp`` and
  ``sha256=HMAC-SHA256(secret, "<timestamp>." + body)`` in ``X-Meterbook-Signature``. A
  timestamp more than five minutes away is refused, and a signed delivery without its own
  ``Idempotency-Key`` is keyed by its signature, so a captured request replayed inside those
  five minutes gets the first run back instead of starting another.
- **Runs run as the hook's creator** through ``runs.trigger(trigger="webhook")``, so that
  member's role, the plan's run limit and the budgets apply; a creator who left the workspace
  or lost the right to run workflows makes the hook refuse (``PermissionDenied``).
- **Inputs**: the JSON object sent becomes the run's inputs, key by key. A workflow that
  declares an input named ``body`` gets the whole request there instead, shaped as n8n's
  Webhook node gives it (``{"body": <the object>, "headers", "query", "params"}``), because
  that is what an imported n8n flow reads: n8n's ``$json.body.email`` was converted to
  ``inputs.body.body.email`` (see n8n.py). Credentials in headers are left out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import shlex
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine import audit, db, vault
from engine.config import get_settings
from engine.db import write_lock
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from engine.models import User
from engine.permissions import Actor, authorize, in_workspace
from engine.workflows import runs, spec as specs, store
from engine.workflows.hook_models import WorkflowHook
from engine.workflows.models import FINISHED, Workflow, WorkflowRun

TOKEN_PREFIX = "mbh_"
SECRET_PREFIX = "mbs_"
SIGNATURE_HEADER = "X-Meterbook-Signature"
TIMESTAMP_HEADER = "X-Meterbook-Timestamp"
TOLERANCE_S = 300
MAX_BODY = 1024 * 1024
MAX_WAIT_S = 60.0
MAX_CLIENT_KEY = runs.MAX_KEY - 10  # room for our "hook:" prefix
UNKNOWN = "There is no such webhook. Check the URL, or create a new hook on the Workflows page."


class BadSignature(PermissionDenied):
    """The delivery is not signed with the hook's secret, or is too old: nothing was run."""


class HookDisabled(Conflict):
    pass


class WorkflowPaused(Conflict):
    pass


class UnsupportedBody(InvalidInput):
    """A body that is not JSON by its Content-Type (HTTP 415)."""


@dataclass(frozen=True)
class HookView:
    id: int
    workflow_id: int
    workflow_name: str
    token_hint: str  # the token's last four characters
    path: str  # the URL's path with the token masked: /hooks/7/…abcd
    require_signature: bool
    secret_hint: str | None
    enabled: bool
    created_by: str | None  # the member the runs run as
    created_at: datetime
    rotated_at: datetime | None
    last_used_at: datetime | None


class Issued(NamedTuple):
    """What is shown once: the hook, its token and (for a signed hook) its signing secret."""

    view: HookView
    token: str
    secret: str | None


@dataclass(frozen=True)
class Delivery:
    run: runs.RunView
    repeated: bool  # the idempotency key (or signature) had started this run already


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def path_for(workflow_id: int, token: str) -> str:
    return f"/hooks/{workflow_id}/{token}"


def masked_path(workflow_id: int | str, hint: str) -> str:
    return f"/hooks/{workflow_id}/…{hint}"


def base_url() -> str:
    """Where senders reach the sidecar: ``METERBOOK_SIDECAR_URL``, else the address it listens on."""
    settings = get_settings()
    if settings.sidecar_url:
        return settings.sidecar_url.rstrip("/")
    host = settings.sidecar_host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host and host != "::" else host)
    return f"http://{'[::1]' if host == '::' else host}:{settings.sidecar_port}"


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The two headers a sender adds (the same recipe the Workflows page shows)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: str(t), SIGNATURE_HEADER: f"sha256={mac}"}


def curl_example(url: str, body: dict, secret: str | None) -> str:
    """A shell recipe that delivers ``body`` to ``url``, signed the way ``sign`` does when there is a secret."""
    data = json.dumps(body, separators=(",", ":"))
    send = f"curl -sS -X POST {shlex.quote(url)} \\\n  -H 'Content-Type: application/json' \\\n"
    if secret is None:
        return send + f"  -H 'Idempotency-Key: my-event-1' \\\n  --data {shlex.quote(data)}"
    return (f"BODY={shlex.quote(data)}\nTS=$(date +%s)\n"
            f"SIG=$(printf '%s.%s' \"$TS\" \"$BODY\" | openssl dgst -sha256 -hmac {shlex.quote(secret)} "
            "| sed 's/^.* //')\n"
            + send + '  -H "X-Meterbook-Timestamp: $TS" \\\n  -H "X-Meterbook-Signature: sha256=$SIG" \\\n'
            '  --data "$BODY"')


def _binding(hook: WorkflowHook) -> vault.SecretBinding:
    return vault.SecretBinding(hook.workspace_id, hook.id, f"workflow-hook:{hook.id}", "webhook")


def _view(s: Session, hook: WorkflowHook) -> HookView:
    wf = s.get(Workflow, hook.workflow_id)
    creator = s.get(User, hook.created_by) if hook.created_by is not None else None
    return HookView(hook.id, hook.workflow_id, wf.name, hook.token_hint, masked_path(hook.workflow_id, hook.token_hint),
                    hook.require_signature, hook.secret_hint, hook.enabled,
                    (creator.name or creator.email) if creator is not None else None,
                    hook.created_at, hook.rotated_at, hook.last_used_at)


def _new_credentials(s: Session, hook: WorkflowHook, signed: bool) -> tuple[str, str | None]:
    """A fresh token (and secret, when signed) on the row; the plain values, to show once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    hook.token_sha256, hook.token_hint = hash_token(token), token[-4:]
    hook.require_signature = signed
    secret = None
    if signed:
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        hook.secret_ciphertext, hook.secret_nonce = vault.encrypt_secret(s, _binding(hook), secret)
        hook.secret_hint = vault.mask(secret)
    else:
        hook.secret_ciphertext = hook.secret_nonce = hook.secret_hint = None
    return token, secret


def _hook(s: Session, actor: Actor, hook_id: int) -> WorkflowHook:
    return in_workspace(s, WorkflowHook, hook_id, actor.workspace_id, "webhook")


# --- managing hooks (the Workflows page) ----------------------------------------------------------


def create_hook(actor: Actor, workflow_id: int, *, require_signature: bool = False) -> Issued:
    """A new hook whose runs run as ``actor``. The token and secret are in the answer and nowhere else."""
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.write")
        authorize(s, actor, "workflow.run")  # the hook runs as its creator: they must be able to run it
        wf = store._load(s, actor, workflow_id)
        hook = WorkflowHook(workspace_id=actor.workspace_id, workflow_id=wf.id, created_by=actor.user_id,
                            token_sha256="", token_hint="")
        s.add(hook)
        s.flush()  # the id first: the secret's vault binding names it
        token, secret = _new_credentials(s, hook, bool(require_signature))
        s.flush()
        audit.record_for(s, actor, "workflow_hook.create", "workflow_hook", hook.id, workflow_id=wf.id,
                         signed=hook.require_signature)
        return Issued(_view(s, hook), token, secret)


def rotate(actor: Actor, hook_id: int, *, require_signature: bool | None = None) -> Issued:
    """A new token (and a new secret for a signed hook); the old ones stop working at once."""
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.write")
        hook = _hook(s, actor, hook_id)
        signed = hook.require_signature if require_signature is None else bool(require_signature)
        token, secret = _new_credentials(s, hook, signed)
        hook.rotated_at = utcnow()
        audit.record_for(s, actor, "workflow_hook.rotate", "workflow_hook", hook.id, signed=signed)
        s.flush()
        return Issued(_view(s, hook), token, secret)


def set_enabled(actor: Actor, hook_id: int, enabled: bool) -> HookView:
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.write")
        hook = _hook(s, actor, hook_id)
        hook.enabled = bool(enabled)
        audit.record_for(s, actor, "workflow_hook.enable" if enabled else "workflow_hook.disable", "workflow_hook",
                         hook.id)
        s.flush()
        return _view(s, hook)


def disable(actor: Actor, hook_id: int) -> HookView:
    return set_enabled(actor, hook_id, False)


def enable(actor: Actor, hook_id: int) -> HookView:
    return set_enabled(actor, hook_id, True)


def delete(actor: Actor, hook_id: int) -> None:
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.write")
        hook = _hook(s, actor, hook_id)
        audit.record_for(s, actor, "workflow_hook.delete", "workflow_hook", hook.id, workflow_id=hook.workflow_id)
        s.delete(hook)


def list_hooks(actor: Actor, workflow_id: int) -> list[HookView]:
    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        store._load(s, actor, workflow_id)
        return [_view(s, h) for h in s.scalars(select(WorkflowHook).where(
            WorkflowHook.workflow_id == workflow_id).order_by(WorkflowHook.id))]


# --- deliveries (the sidecar's HTTP server) ---------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    getter = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is None:  # a plain dict: match the name without regard to case, as HTTP does
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


def _check_signature(s: Session, hook: WorkflowHook, body: bytes, headers: Mapping[str, str], now: float) -> None:
    stamp, given = _header(headers, TIMESTAMP_HEADER), _header(headers, SIGNATURE_HEADER)
    if not stamp or not given:
        raise BadSignature(f"This webhook needs a signature: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}.")
    try:
        t = int(stamp.strip())
    except ValueError:
        raise BadSignature(f"{TIMESTAMP_HEADER} must be the Unix time in seconds.") from None
    secret = vault.decrypt_secret(s, _binding(hook), hook.secret_ciphertext, hook.secret_nonce)
    expected = "sha256=" + hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        raise BadSignature("The signature does not match this webhook's secret; nothing was run.")
    if abs(now - t) > TOLERANCE_S:  # after the MAC: only a genuine old delivery learns it is old
        raise BadSignature(f"The signed timestamp is more than {TOLERANCE_S // 60} minutes from now (a replay, or "
                           "the sender's clock is wrong); nothing was run.")


def verify(workflow_ref: str | int, token: str, body: bytes, headers: Mapping[str, str], *,
           now: float | None = None) -> WorkflowHook:
    """The enabled hook this URL and (when it is signed) this signature belong to, or an error."""
    digest = hash_token(token or "")
    with db.read_session() as s:
        hook = s.scalar(select(WorkflowHook).where(WorkflowHook.token_sha256 == digest))
        if hook is None or not hmac.compare_digest(hook.token_sha256, digest) \
                or not hmac.compare_digest(str(hook.workflow_id).encode(), str(workflow_ref).strip().encode()):
            raise NotFound(UNKNOWN)
        if hook.require_signature:
            _check_signature(s, hook, body, headers, time.time() if now is None else now)
        if not hook.enabled:
            raise HookDisabled("This webhook is disabled; enable it on the Workflows page.")
        s.expunge(hook)
        return hook


def parse_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The JSON object sent; an empty body is an empty object (many senders ping that way)."""
    if len(body) > MAX_BODY:
        raise InvalidInput(f"The body is over {MAX_BODY // 1024} KiB.")
    if not body.strip():
        return {}
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind and kind != "application/json" and not kind.endswith("+json"):
        raise UnsupportedBody(f"Send the body as JSON (Content-Type: application/json), not {kind}.")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"The body is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise InvalidInput("The body must be a JSON object ({…}); its keys become the run's inputs.")
    return data


PRIVATE_HEADERS = {"authorization", "proxy-authorization", "cookie", SIGNATURE_HEADER.lower()}


def inputs_for(spec: specs.WorkflowSpec, data: dict[str, Any], headers: Mapping[str, str] | None = None,
               query: Mapping[str, str] | None = None) -> dict[str, Any]:
    if "body" not in spec.inputs:
        return data
    seen = {k.lower(): v for k, v in (headers or {}).items() if k.lower() not in PRIVATE_HEADERS}
    return {"body": {"body": data, "headers": seen, "query": dict(query or {}), "params": {}}}


def _idempotency_key(client_key: str | None, headers: Mapping[str, str], hook: WorkflowHook) -> str | None:
    key = (client_key or "").strip()
    if key:
        if len(key) > MAX_CLIENT_KEY:
            raise InvalidInput(f"An Idempotency-Key is at most {MAX_CLIENT_KEY} characters.")
        return f"hook:{key}"
    if hook.require_signature:  # a replay of a signed request (within its five minutes) gets the same run
        signature = (_header(headers, SIGNATURE_HEADER) or "").strip().lower()
        return "hook-sig:" + hashlib.sha256(signature.encode()).hexdigest()[:48]
    return None


def deliver(workflow_ref: str | int, token: str, body: bytes, headers: Mapping[str, str], *,
            content_type: str | None = None, idempotency_key: str | None = None,
            query: Mapping[str, str] | None = None) -> Delivery:
    """Check the delivery and queue its run (or find the run its key started already)."""
    hook = verify(workflow_ref, token, body, headers)
    data = parse_body(body, content_type)
    key = _idempotency_key(idempotency_key, headers, hook)
    if hook.created_by is None:
        raise PermissionDenied("The member who created this webhook has been deleted; create a new hook.")
    actor = Actor(hook.created_by, hook.workspace_id)
    with db.read_session() as s:
        wf = s.get(Workflow, hook.workflow_id)
        existing = s.scalar(select(WorkflowRun.id).where(WorkflowRun.workflow_id == wf.id,
                                                         WorkflowRun.idempotency_key == key)) if key else None
        if existing is None and not wf.active:
            raise WorkflowPaused(f"The workflow {wf.name!r} is paused; switch it to active to run it.")
        spec = specs.from_stored(store.current_version(s, wf).spec)
    try:
        run = runs.trigger(actor, hook.workflow_id, inputs_for(spec, data, headers, query), trigger="webhook",
                           idempotency_key=key)
    except PermissionDenied:  # its words are addressed to the creator, who is not the caller here
        raise PermissionDenied("The member who created this webhook can no longer run workflows in this workspace; "
                               "create a new hook as a member who can.") from None
    with db.transaction() as s:
        s.execute(update(WorkflowHook).where(WorkflowHook.id == hook.id).values(last_used_at=utcnow()))
    return Delivery(run, existing is not None)


def wait_for(run_id: int, timeout_s: float, stop: threading.Event | None = None) -> str:
    """Wait until the run finishes (or pauses on an approval), at most ``timeout_s``; its status."""
    deadline = time.monotonic() + max(0.0, min(float(timeout_s), MAX_WAIT_S))
    pause = 0.05
    while True:
        status = runs.status_of(run_id)
        if status in FINISHED or status == "waiting" or time.monotonic() >= deadline:
            return status
        if stop is not None and stop.wait(pause):
            return status
        if stop is None:
            time.sleep(pause)
        pause = min(pause * 2, 0.5)


def result_of(run_id: int) -> dict[str, Any]:
    """What a waiting caller gets back: the status and, once finished, the outputs or the error."""
    with db.read_session() as s:
        run = s.get(WorkflowRun, run_id)
        if run is None:
            raise NotFound("The run is gone (deleted or pruned).")
        out: dict[str, Any] = {"run_id": run.id, "status": run.status}
        if run.status == "succeeded":
            out["outputs"] = run.outputs
        elif run.status in FINISHED:
            out["error"] = run.error
        return out

