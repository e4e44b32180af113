"""For the report tests: a real SMTP server on 127.0.0.1 that keeps each message's bytes, and a workspace with data."""

from __future__ import annotations

import email
import socket
import threading
from decimal import Decimal
from email.message import EmailMessage
from email.policy import default

from aiosmtpd.controller import Controller

from engine import db, notebook_runs, notebooks, usage
from engine.permissions import Actor


class Inbox:
    """Messages the server accepted: (envelope sender, envelope recipients, parsed message)."""

    def __init__(self, refuse: str | None = None):
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.refuse = refuse  # an SMTP reply to every RCPT, like "550 5.1.1 Mailbox unavailable"
        self.arrived = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        self.arrived.set()
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MailServer:
    """A plain SMTP server (no TLS, no AUTH) on a port chosen up front, so a test can start it late."""

    def __init__(self, port: int | None = None, refuse: str | None = None):
        self.port = port or free_port()
        self.inbox = Inbox(refuse)
        self.controller: Controller | None = None

    def start(self) -> MailServer:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self):
        return self.inbox.messages


def spend(actor: Actor, rows=(("openai", "gpt-4o-mini", "0.25"), ("openai", "gpt-4o", "1.50"),
                              ("anthropic", "claude", "0.75"))) -> None:
    with db.transaction() as s:
        for provider, model, cost in rows:
            usage.record(s, workspace_id=actor.workspace_id, provider=provider, model=model, input_tokens=100,
                         output_tokens=20, cost=Decimal(cost), latency_ms=400)


def chart_notebook(actor: Actor, *, run: bool = True, shared: bool = True) -> int:
    """A notebook with a note, a SQL cell of spend by provider and a bar chart of it; run when asked."""
    nb = notebooks.create_notebook(actor, "Spend review", shared=shared)
    notebooks.add_cell(actor, nb.id, "markdown", source="# Weekly spend\nBy **provider**.")
    sql = notebooks.add_cell(actor, nb.id, "sql", source="SELECT provider, sum(cost) AS spend, count(*) AS calls "
                                                          "FROM ledger GROUP BY 1 ORDER BY 1")
    notebooks.add_cell(actor, nb.id, "chart", options={"type": "bar", "x": "provider", "y": "spend",
                                                       "source": sql.id, "title": "Spend by provider"})
    if run:
        notebook_runs.run_cell(actor, sql.id)
    return nb.id


def parts(msg: EmailMessage) -> list[EmailMessage]:
    return list(msg.walk())


def html_of(msg: EmailMessage) -> str:
    return msg.get_body(preferencelist=("html",)).get_content()


def attachments(msg: EmailMessage) -> dict[str, tuple[str, bytes]]:
    return {p.get_filename(): (p.get_content_type(), p.get_payload(decode=True)) for p in msg.iter_attachments()}


def inline_images(msg: EmailMessage) -> dict[str, bytes]:
    return {p["Content-ID"].strip("<>"): p.get_payload(decode=True) for p in msg.walk()
            if p.get_content_type() == "image/png" and p["Content-ID"]}
