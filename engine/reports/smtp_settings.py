"""A workspace's own mail server for reports: host, port, security, sign-in and sender, the password in the vault.

The password is write-only: it goes in through ``save``, is stored by ``engine.vault`` (bound to
the workspace and to this use), is shown only as its masked hint, and comes out decrypted only
in ``config_for``, which the delivery worker calls before it connects. A workspace without its
own server sends through the ``METERBOOK_SMTP_*`` settings, as alerts do.

Admins change the settings; every member may see them (without the password).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import select

from engine import audit, db, smtp, vault
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, NotFound
from engine.models import User
from engine.notify import DeliveryFailed
from engine.permissions import Actor, authorize
from engine.reports.addresses import check_address
from engine.reports.models import SECURITY, WorkspaceSmtp

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()  # ``save(password=KEEP)``: leave the stored password as it is


@dataclass(frozen=True)
class SmtpView:
    """The workspace's server as anyone may see it: the password only as its hint."""

    host: str
    port: int
    security: str
    username: str | None
    from_address: str
    password_hint: str | None
    last_test_at: datetime | None
    last_test_ok: bool | None
    last_test_error: str | None
    updated_at: datetime


def _binding(workspace_id: int) -> vault.SecretBinding:
    return vault.SecretBinding(workspace_id, 0, "report-smtp-password", "smtp")


def _view(row: WorkspaceSmtp) -> SmtpView:
    return SmtpView(row.host, row.port, row.security, row.username, row.from_address,
                    row.password_hint if row.password_ciphertext is not None else None,
                    row.last_test_at, row.last_test_ok, row.last_test_error, row.updated_at)


def _row(s, workspace_id: int) -> WorkspaceSmtp | None:
    return s.scalar(select(WorkspaceSmtp).where(WorkspaceSmtp.workspace_id == workspace_id))


def get(actor: Actor) -> SmtpView | None:
    """The workspace's own server, or None when it sends through the environment's."""
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        row = _row(s, actor.workspace_id)
        return _view(row) if row else None


def environment_server() -> str | None:
    """Where email goes without a workspace server ("host:port"), or None when none is set up."""
    config = smtp.from_settings()
    return config.where if config else None


def _check(host: str, port: int | str, security: str, username: str | None, from_address: str):
    host = (host or "").strip()
    if not host or len(host) > 255 or any(c in host for c in " /\\@:"):
        raise InvalidInput("The mail server is a host name or address, like smtp.example.com (no port, no scheme).")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise InvalidInput(f"The port is a whole number from 1 to 65535, not {port!r}.") from None
    if isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidInput(f"The port is a whole number from 1 to 65535, not {port}.")
    if security not in SECURITY:
        raise InvalidInput("Security is STARTTLS, TLS (SMTPS) or none.")
    username = (username or "").strip() or None
    if username and len(username) > 320:
        raise InvalidInput("The user name must be 320 characters or fewer.")
    return host, port, security, username, check_address(from_address, "The sender address")


def save(actor: Actor, *, host: str, port: int | str, security: str = "starttls", username: str | None = None,
         password: str | None | _Keep = KEEP, from_address: str) -> SmtpView:
    """Create or change the workspace's server. ``password``: a new one, ``None`` to remove it, or KEEP."""
    host, port, security, username, from_address = _check(host, port, security, username, from_address)
    if isinstance(password, str) and len(password) > 1024:
        raise InvalidInput("The password must be 1,024 characters or fewer.")
    with db.transaction() as s:
        authorize(s, actor, "workspace.settings")
        row = _row(s, actor.workspace_id)
        if row is None:
            row = WorkspaceSmtp(workspace_id=actor.workspace_id)
            s.add(row)
        row.host, row.port, row.security, row.username, row.from_address = host, port, security, username, from_address
        changed = isinstance(password, str) and bool(password)  # an empty field keeps the stored one
        if password is None:
            row.password_ciphertext = row.password_nonce = row.password_hint = None
        elif changed:
            row.password_ciphertext, row.password_nonce = vault.encrypt_secret(s, _binding(actor.workspace_id), password)
            row.password_hint = vault.mask(password)
        row.updated_by, row.updated_at = actor.user_id, utcnow()
        row.last_test_at = row.last_test_ok = row.last_test_error = None  # a test of the old settings says nothing
        s.flush()
        audit.record_for(s, actor, "smtp.saved", "workspace_smtp", row.id, host=host, port=port, security=security,
                         password="changed" if changed else "removed" if password is None else "kept")
        return _view(row)


def clear(actor: Actor) -> None:
    """Forget the workspace's server: email goes through the environment's again."""
    with db.transaction() as s:
        authorize(s, actor, "workspace.settings")
        row = _row(s, actor.workspace_id)
        if row is None:
            raise NotFound("This workspace has no mail server of its own.")
        audit.record_for(s, actor, "smtp.removed", "workspace_smtp", row.id, host=row.host)
        s.delete(row)


def config_for(workspace_id: int) -> smtp.SmtpConfig:
    """How to send this workspace's email, password decrypted; ``DeliveryFailed`` when none is set up."""
    with db.read_session() as s:
        row = _row(s, workspace_id)
        if row is not None:
            password = None
            if row.password_ciphertext is not None:
                password = vault.decrypt_secret(s, _binding(workspace_id), row.password_ciphertext, row.password_nonce)
            return smtp.SmtpConfig(row.host, row.port, row.security, row.username, password, row.from_address,
                                     "workspace")
    config = smtp.from_settings()
    if config is None:
        raise DeliveryFailed("Email is not set up: add this workspace's mail server under Settings → Email, or set "
                             "METERBOOK_SMTP_HOST (and the other METERBOOK_SMTP_* settings).")
    return config


def send_test(actor: Actor) -> str:
    """Send a short email to the acting admin through the workspace's server; records how it went.

    Returns the address it went to; raises ``DeliveryFailed`` with the server's words otherwise.
    """
    with db.read_session() as s:
        authorize(s, actor, "workspace.settings")
        email = s.get(User, actor.user_id).email
    config = config_for(actor.workspace_id)
    msg = smtp.plain_message(config, [email], "Meterbook test email",
                        f"This is a test from Meterbook, sent through {config.where} ({config.security}).\n"
                        "Scheduled reports from this workspace will go out the same way.")
    error = None
    try:
        smtp.send(config, msg, [email])
    except DeliveryFailed as exc:
        error = str(exc)
    if config.source == "workspace":
        with db.transaction() as s:
            row = _row(s, actor.workspace_id)
            if row is not None:
                row.last_test_at, row.last_test_ok, row.last_test_error = utcnow(), error is None, error
    if error:
        raise DeliveryFailed(error)
    return email
