"""Secrets that HTTP nodes send (a bearer token, an API key header), kept encrypted by the vault.

A spec names a credential; the value is decrypted only when the request is built and is never
written to a step's input, output or logs. Pages see the last four characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select

from engine import audit, db, vault
from engine.db import write_lock
from engine.errors import Conflict, InvalidInput, NotFound
from engine.permissions import Actor, authorize, in_workspace
from engine.workflows.models import WorkflowCredential

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
HEADER = re.compile(r"^[A-Za-z0-9-]{1,100}$")


@dataclass(frozen=True)
class CredentialView:
    id: int
    name: str
    header: str
    scheme: str
    hint: str


def _binding(workspace_id: int, name: str) -> vault.SecretBinding:
    return vault.SecretBinding(workspace_id, 0, f"workflow-credential:{name}", "http")


def _view(c: WorkflowCredential) -> CredentialView:
    return CredentialView(c.id, c.name, c.header, c.scheme, c.hint)


def create(actor: Actor, name: str, value: str, *, header: str = "Authorization", scheme: str = "Bearer") -> CredentialView:
    name, header, scheme, value = (name or "").strip(), (header or "").strip(), (scheme or "").strip(), value or ""
    if not NAME.match(name):
        raise InvalidInput("A credential name is 1 to 100 letters, digits, dots, dashes or underscores.")
    if not HEADER.match(header):
        raise InvalidInput("The header is a name like Authorization or X-Api-Key.")
    if not value.strip() or "\n" in value:
        raise InvalidInput("Paste the secret value (one line).")
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.credentials")
        if s.scalar(select(WorkflowCredential.id).where(WorkflowCredential.workspace_id == actor.workspace_id,
                                                         WorkflowCredential.name == name)):
            raise Conflict(f"There is already a credential called {name!r}; delete it first to replace it.")
        ciphertext, nonce = vault.encrypt_secret(s, _binding(actor.workspace_id, name), value.strip())
        c = WorkflowCredential(workspace_id=actor.workspace_id, name=name, header=header, scheme=scheme,
                               ciphertext=ciphertext, nonce=nonce, hint=vault.mask(value.strip()))
        s.add(c)
        s.flush()
        audit.record_for(s, actor, "workflow_credential.create", "workflow_credential", c.id, name=name)
        return _view(c)


def list_credentials(actor: Actor) -> list[CredentialView]:
    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        return [_view(c) for c in s.scalars(select(WorkflowCredential).where(
            WorkflowCredential.workspace_id == actor.workspace_id).order_by(WorkflowCredential.name))]


def delete(actor: Actor, credential_id: int) -> None:
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.credentials")
        c = in_workspace(s, WorkflowCredential, credential_id, actor.workspace_id, "credential")
        audit.record_for(s, actor, "workflow_credential.delete", "workflow_credential", c.id, name=c.name)
        s.delete(c)


def header_for(workspace_id: int, name: str) -> tuple[str, str]:
    """(header, value) to send; the value is the decrypted secret with its scheme."""
    with db.read_session() as s:
        c = s.scalar(select(WorkflowCredential).where(WorkflowCredential.workspace_id == workspace_id,
                                                      WorkflowCredential.name == name))
        if c is None:
            raise NotFound(f"There is no credential called {name!r}. Add it on the Workflows page.")
        secret = vault.decrypt_secret(s, _binding(workspace_id, name), c.ciphertext, c.nonce)
        return c.header, f"{c.scheme} {secret}" if c.scheme else secret
