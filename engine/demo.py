"""The demo workspace: ``python -m engine demo-data``, and the first start of ``python -m engine up``.

People, clients and projects are made through the engine's own services, so the demo obeys
the rules real data does. The usage ledger is generated in bulk (``engine.demo_ledger``) and
written in batches on one transaction, through the driver's fastest path: COPY on
PostgreSQL, ``executemany`` on SQLite. One ORM object per row would make a million rows
take many minutes; the values written are exactly what the column types would store.

Seeding is all or nothing. The services commit one step at a time, so a failure (or
Ctrl-C) part-way removes what this seed had made before it re-raises; the ledger's own
transaction simply rolls back. Only a process killed outright between two steps can leave
a partial demo behind (a later seed then refuses, as the demo's addresses are taken).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
from sqlalchemy import delete, select

from engine import accounts, db, demo_ledger
from engine import clients as client_service
from engine import notebooks as notebook_service
from engine import projects as project_service
from engine.dbtypes import MONEY_PLACES, utcnow
from engine.errors import Conflict, InvalidInput
from engine.models import AuditEvent, Client, Invitation, LedgerEntry, Membership, Project, User, Workspace
from engine.permissions import Actor

DEMO_EMAIL = "demo@meterbook.local"
DEMO_PASSWORD = "try-meterbook-2026"  # shown on the sign-in page; everyone in the demo shares it
WORKSPACE = "Northwind Analytics"
TIMEZONE = "Europe/London"

# (email, name, role); the order is the ``people`` slots the ledger's workloads refer to.
PEOPLE = (
    (DEMO_EMAIL, "Alex Morgan", "owner"),
    ("priya.shah@meterbook.local", "Priya Shah", "admin"),
    ("tom.becker@meterbook.local", "Tom Becker", "editor"),
    ("lucia.fernandez@meterbook.local", "Lucía Fernández", "editor"),
    ("sam.okafor@meterbook.local", "Sam Okafor", "viewer"),
)
CLIENTS = (
    ("Bluewater Retail", "ops@bluewater-retail.example", "Online homeware shop: support assistant and catalogue data."),
    ("Helix Health", "it@helixhealth.example", "Clinic group. No patient identifiers leave their tenancy."),
    ("Kestrel Capital", "research@kestrelcapital.example", "Investment research desk, invoiced monthly."),
)
# (name, client index or None, budget in USD or None, description); sized for the default volume.
PROJECTS = (
    ("Support Assistant", 0, "60", "Customer-support chat on Bluewater's storefront."),
    ("Catalogue Enrichment", 0, "40", "Nightly product-data extraction, plus product shots."),
    ("Clinical Notes Summariser", 1, "150", "Summaries of consultation notes for Helix clinicians."),
    ("Research Desk", 2, "120", "Analyst questions over filings and broker notes."),
    ("Earnings Call Digest", 2, None, "Call transcripts to one-page digests, in earnings season."),
    ("Internal Tools", None, "25", "Our own coding assistant and scripts."),
)
BATCH_ROWS = 20_000
HISTORY_LEAD = timedelta(days=21)  # the workspace existed a little before its first recorded call


@dataclass(frozen=True)
class DemoSummary:
    workspace_id: int
    workspace: str
    email: str
    password: str
    users: int
    clients: int
    projects: int
    days: int
    rows: int
    total_cost: Decimal
    seconds: float
    user_ids: tuple[int, ...]  # in PEOPLE order
    project_ids: tuple[int, ...]  # in PROJECTS order

    def describe(self) -> str:
        return (
            f"Demo workspace “{self.workspace}”: {self.users} people, {self.clients} clients, "
            f"{self.projects} projects and {self.rows:,} ledger rows over {self.days} days "
            f"(${self.total_cost:,.2f} of spend), created in {self.seconds:.1f} s.\n"
            f"Sign in as {self.email} with password {self.password}"
        )


def is_empty() -> bool:
    """No one has an account yet: a first start."""
    return accounts.needs_first_run()


def has_demo_user() -> bool:
    with db.read_session() as s:
        return s.scalar(select(User.id).where(User.email == DEMO_EMAIL)) is not None


def seed(
    *,
    seed: int,
    days: int = 90,
    rows: int | None = None,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    """Create the demo workspace and ``rows`` ledger rows over the ``days`` before ``now``.

    Same ``seed`` and ``now`` on an empty database, same rows. Refused if the demo exists.
    """
    started = time.perf_counter()
    if days < 1:
        raise InvalidInput("The demo needs at least one day of history.")
    rows = demo_ledger.default_rows(days) if rows is None else rows
    if rows < 0:
        raise InvalidInput("The number of demo rows cannot be negative.")
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    _refuse_if_present()
    made = _Made()
    try:
        workspace_id, user_ids, client_ids, project_ids = _create_people_and_projects(made)
        ledger = demo_ledger.generate(
            seed, now=now, days=days, rows=rows, workspace_id=workspace_id, timezone=TIMEZONE,
            people=user_ids, projects=project_ids,
        )
        ledger.check_prices()
        _backdate(workspace_id, user_ids, now - timedelta(days=days) - HISTORY_LEAD)
        insert_ledger(ledger, progress)
        notebook_service.install_starters(Actor(user_ids[0], workspace_id), shared=True)
    except BaseException:
        _remove(made)
        raise
    return DemoSummary(
        workspace_id, WORKSPACE, DEMO_EMAIL, DEMO_PASSWORD, len(user_ids), len(client_ids), len(project_ids),
        days, len(ledger), ledger.total_cost(), time.perf_counter() - started, user_ids, project_ids,
    )


def _refuse_if_present() -> None:
    emails = [email for email, _, _ in PEOPLE]
    with db.read_session() as s:
        taken = set(s.scalars(select(User.email).where(User.email.in_(emails))))
    if DEMO_EMAIL in taken:
        raise Conflict(
            f"The demo workspace already exists: sign in as {DEMO_EMAIL} with password {DEMO_PASSWORD}. "
            "To rebuild it, start from an empty database."
        )
    if taken:
        raise Conflict(f"The demo needs these addresses, which already have accounts: {', '.join(sorted(taken))}.")


@dataclass
class _Made:
    """What a seed has committed so far, for removing it again if a later step fails."""

    workspace_id: int | None = None
    user_ids: list[int] = field(default_factory=list)


def _create_people_and_projects(made: _Made) -> tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    _, owner_name, _ = PEOPLE[0]
    if is_empty():
        owner, workspace = accounts.create_first_owner(DEMO_EMAIL, owner_name, DEMO_PASSWORD, WORKSPACE, TIMEZONE)
        made.user_ids.append(owner.id)
    else:  # Meterbook is already in use: the demo becomes one more workspace beside the real ones
        owner = accounts.create_user(DEMO_EMAIL, owner_name, DEMO_PASSWORD)
        made.user_ids.append(owner.id)
        workspace = accounts.create_workspace(owner.id, WORKSPACE, TIMEZONE)
    made.workspace_id = workspace.id
    actor = Actor(owner.id, workspace.id)
    for email, name, role in PEOPLE[1:]:
        token = accounts.invite(actor, email, role)
        made.user_ids.append(accounts.accept_invitation(token, name=name, password=DEMO_PASSWORD).id)
    user_ids = list(made.user_ids)
    client_ids = [client_service.create_client(actor, *c).id for c in CLIENTS]
    project_ids = [
        project_service.create_project(
            actor, name, client_id=None if ci is None else client_ids[ci], description=text, budget_usd=budget
        ).id
        for name, ci, budget, text in PROJECTS
    ]
    return workspace.id, tuple(user_ids), tuple(client_ids), tuple(project_ids)


def _remove(made: _Made) -> None:
    """Delete what a failed seed committed: its workspace with everything in it, and its people."""
    with db.transaction() as s:
        if made.workspace_id is not None:
            # These keys are ON DELETE RESTRICT, so children go first; the rest cascades from the workspace.
            for model in (LedgerEntry, Project, Client):
                s.execute(delete(model).where(model.workspace_id == made.workspace_id))
            s.execute(delete(Workspace).where(Workspace.id == made.workspace_id))
        if made.user_ids:
            s.execute(delete(User).where(User.id.in_(made.user_ids)))


def _backdate(workspace_id: int, user_ids: tuple[int, ...], anchor: datetime) -> None:
    """Move the setup back in time: a workspace “created today” with 90 days of usage looks broken."""
    with db.transaction() as s:
        shift = s.get(Workspace, workspace_id).created_at - anchor
        objects = [s.get(Workspace, workspace_id), *s.scalars(select(User).where(User.id.in_(user_ids)))]
        for model in (Membership, Invitation, Client, Project, AuditEvent):
            objects += s.scalars(select(model).where(model.workspace_id == workspace_id))
        for o in objects:
            for attr in ("created_at", "expires_at", "accepted_at"):
                if getattr(o, attr, None) is not None:
                    setattr(o, attr, getattr(o, attr) - shift)


def insert_ledger(ledger: demo_ledger.Ledger, progress: Callable[[int, int], None] | None = None) -> None:
    """Append the ledger's rows in one transaction, calling ``progress(done, total)`` after each batch."""
    engine, total = db.get_engine(), len(ledger)
    progress = progress or (lambda done, total: None)
    names = ", ".join(demo_ledger.COLUMNS)
    with engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        if engine.dialect.name == "postgresql":
            with raw.cursor() as cur, cur.copy(f"COPY usage_ledger ({names}) FROM STDIN") as copy:
                for lo in range(0, total, BATCH_ROWS):
                    hi = min(lo + BATCH_ROWS, total)
                    for row in zip(*ledger.columns(lo, hi, _text_money, _text_time)):
                        copy.write_row(row)
                    progress(hi, total)
        elif engine.dialect.name == "sqlite":
            sql = f"INSERT INTO usage_ledger ({names}) VALUES ({', '.join('?' * len(demo_ledger.COLUMNS))})"
            cur = raw.cursor()
            try:
                for lo in range(0, total, BATCH_ROWS):
                    hi = min(lo + BATCH_ROWS, total)
                    cur.executemany(sql, zip(*ledger.columns(lo, hi, _sqlite_money, _sqlite_time)))
                    progress(hi, total)
            finally:
                cur.close()
        else:
            raise NotImplementedError(f"demo data cannot be written to {engine.dialect.name}")


# What Money and UTCDateTime would bind, computed a batch at a time.
def _sqlite_money(units: np.ndarray) -> list[int]:
    return units.tolist()  # Money on SQLite is an integer count of 1e-10 USD


def _text_money(units: np.ndarray) -> list[str]:
    whole, frac = np.divmod(units, 10**MONEY_PLACES)
    return [f"{w}.{f:010d}" for w, f in zip(whole.tolist(), frac.tolist())]


def _sqlite_time(us: np.ndarray) -> list[str]:
    # SQLAlchemy's SQLite DATETIME format (always six fraction digits), so range queries compare correctly.
    return [s.replace("T", " ") for s in np.datetime_as_string(us.astype("datetime64[us]"), unit="us").tolist()]


def _text_time(us: np.ndarray) -> list[str]:
    return np.datetime_as_string(us.astype("datetime64[us]"), unit="us", timezone="UTC").tolist()
