"""Usage-based billing: the outbox written with the ledger row, drained to the fake Stripe's meter once."""

from __future__ import annotations

import os
import random
import select as fd_select  # sqlalchemy's select is the other one
import signal
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from engine import db, generation
from engine.billing import meters
from engine.billing.models import MeterOutbox
from engine.config import PROJECT_ROOT
from engine.dbtypes import utcnow
from engine.models import BudgetAlert, LedgerEntry
from providers.base import Result, Usage
from tests import scripted_provider as scripted
from tests.billing_helpers import billing_on
from tests.factories import owner, scripted_routes
from tests.test_billing import subscribe

GPT = "gpt-4o-mini"


@pytest.fixture
def fake(database, data_dir, monkeypatch):
    with billing_on(monkeypatch) as fake:
        yield fake


@pytest.fixture
def pro(fake):
    actor = owner()
    subscribe(fake, actor)
    scripted_routes(actor, ("primary", "openai", GPT))
    return actor


def outbox() -> list[MeterOutbox]:
    with db.read_session() as s:
        return list(s.scalars(select(MeterOutbox).order_by(MeterOutbox.id)))


def call(actor) -> generation.Generation:
    scripted.SCRIPT[GPT] = [Result(text="ok", usage=Usage(input_tokens=12_345, output_tokens=678))]
    return generation.generate(generation.GenerationRequest(prompt="hi", max_tokens=1000), actor)


def test_a_billed_call_writes_its_outbox_row_with_the_ledger_row(pro, fake):
    g = call(pro)
    [row] = outbox()
    assert row.ledger_id == g.ledger_id and row.cost == g.cost
    assert row.value == meters.meter_value(g.cost) == 2259  # $0.00225855 in micro-dollars, rounded half-even
    with db.read_session() as s:
        assert s.get(LedgerEntry, g.ledger_id).created_at == row.event_at
    result = meters.drain()
    assert (result.sent, result.pending) == (1, 0)
    [event] = fake.meter_events.values()
    assert event["identifier"] == row.identifier and event["timestamp"] == int(row.event_at.timestamp())
    assert event["payload"] == {"stripe_customer_id": row.stripe_customer_id, "value": "2259"}
    assert meters.drain().sent == 0 and len(fake.meter_events) == 1


def test_free_and_self_hosted_workspaces_write_no_outbox_rows(database, data_dir, monkeypatch):
    actor = owner()
    scripted_routes(actor, ("primary", "openai", GPT))
    call(actor)  # self-hosted: billing off
    with billing_on(monkeypatch):
        call(actor)  # Free: overage blocked, nothing billed per use
    assert outbox() == []


def test_an_answer_lost_after_stripe_stored_the_event_is_not_billed_twice(pro, fake):
    call(pro)
    meters.drain()
    with db.transaction() as s:  # as if the process died before marking the row sent
        s.execute(update(MeterOutbox).values(state="pending", sent_at=None))
    result = meters.drain()
    assert (result.sent, result.already_there) == (0, 1)
    assert len(fake.meter_events) == 1 and fake.duplicates_refused == 1
    assert [r.state for r in outbox()] == ["sent"]


def test_stripe_unreachable_loses_nothing_and_sends_once_when_back(pro, fake):
    for _ in range(3):
        call(pro)
    fake.outage = True
    result = meters.drain()
    assert result.pending == 3 and result.sent == 0 and "could not be reached" in result.error
    assert [r.state for r in outbox()] == ["pending"] * 3 and outbox()[0].attempts == 1
    fake.outage = False
    assert meters.drain().sent == 3
    assert sorted(e["identifier"] for e in fake.meter_events.values()) == sorted(r.identifier for r in outbox())


def test_rows_unsent_for_days_raise_one_alert_and_too_old_ones_are_refused(pro, fake):
    call(pro)
    call(pro)
    old, older = outbox()
    with db.transaction() as s:
        s.execute(update(MeterOutbox).where(MeterOutbox.id == old.id).values(event_at=utcnow() - timedelta(days=4)))
        s.execute(update(MeterOutbox).where(MeterOutbox.id == older.id).values(
            event_at=utcnow() - timedelta(days=36)))
    assert meters.raise_stale_alerts() == 1
    assert meters.raise_stale_alerts() == 0  # once a day, not once a drain
    with db.read_session() as s:
        [alert] = s.scalars(select(BudgetAlert).where(BudgetAlert.kind == "billing"))
    assert "2 usage reports" in alert.message and "35 days" in alert.message
    result = meters.drain()
    assert (result.sent, result.rejected) == (1, 1)
    assert {r.id: r.state for r in outbox()} == {old.id: "sent", older.id: "rejected"}
    assert "35 calendar days" in outbox()[1].last_error
    from engine.billing import drainer

    assert drainer.deliver_alerts() == 2  # no SMTP here: kept in the app, for owners and admins
    with db.read_session() as s:
        assert {a.delivery for a in s.scalars(select(BudgetAlert).where(BudgetAlert.kind == "billing"))} == {"in_app"}


def test_the_daily_reconciliation_compares_our_units_with_stripes_summary(pro, fake):
    for _ in range(3):
        call(pro)
    meters.drain()
    [ok] = meters.reconcile(utcnow())
    assert ok.matches and ok.ours == sum(r.value for r in outbox()) and ok.ledger_cost == sum(r.cost for r in outbox())
    fake.meter_events.pop(next(iter(fake.meter_events)))  # Stripe lost one
    [bad] = meters.reconcile(utcnow())
    assert not bad.matches and bad.stripe < bad.ours
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(BudgetAlert).where(
            BudgetAlert.key.like("billing:reconcile:%"))) == 1


def test_killed_between_writing_usage_and_draining_many_times_every_row_is_billed_once(pro, fake, database):
    """A writer-and-drainer process SIGKILLed at random moments, restarted until it finishes."""
    total = 80
    fake.meter_reply_delay = 0.02  # widen the window between Stripe storing an event and us marking it
    env = {**os.environ, "METERBOOK_DATABASE_URL": database.url.render_as_string(hide_password=False)}
    rng = random.Random(20261201)
    kills = 0
    enough = 25  # kills; after that each worker may finish, so a slow machine still gets to the end
    for round_ in range(300):
        proc = subprocess.Popen([sys.executable, "-m", "tests.billing_kill_worker", str(pro.workspace_id),
                                 str(total), str(rng.randint(2, 12)), str(round_)], cwd=PROJECT_ROOT, env=env,
                                stdout=subprocess.PIPE, text=True)
        # The kill lands at a random moment of the work itself, not of the interpreter's start-up,
        # which on a busy machine can outlast any fixed timeout.
        ready, _, _ = fd_select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline().strip() == "ready", "the worker did not start"
        try:
            proc.wait(timeout=rng.uniform(0.0, 0.4) if kills < enough else 120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        assert proc.returncode == 0
        with db.read_session() as s:
            if s.scalar(select(func.count()).select_from(LedgerEntry).where(
                    LedgerEntry.workspace_id == pro.workspace_id, LedgerEntry.connection_id.is_(None))) >= total:
                break
    else:
        pytest.fail("the worker never finished")
    assert kills >= 5, f"only {kills} kills: too few to prove anything"
    meters.drain()
    with db.read_session() as s:
        ledger = dict(s.execute(select(LedgerEntry.id, LedgerEntry.cost).where(
            LedgerEntry.workspace_id == pro.workspace_id, LedgerEntry.provider == "openai",
            LedgerEntry.connection_id.is_(None))).all())
    rows = outbox()
    assert len(ledger) == total and sorted(r.ledger_id for r in rows) == sorted(ledger)
    assert all(r.state == "sent" and r.cost == ledger[r.ledger_id] for r in rows)
    by_id = {r.identifier: r for r in rows}
    assert sorted(fake.meter_events) == sorted(by_id)  # each row once at Stripe, nothing else
    assert sum(int(e["payload"]["value"]) for e in fake.meter_events.values()) == sum(r.value for r in rows)
    assert sum(r.cost for r in rows) == sum(ledger.values(), Decimal(0))


def test_the_outbox_row_and_the_ledger_row_commit_together_or_not_at_all(pro, fake, monkeypatch):
    original = meters.enqueue

    def enqueue_then_die(session, **fields):
        original(session, **fields)
        raise RuntimeError("the process died after writing the outbox row")

    monkeypatch.setattr(meters, "enqueue", enqueue_then_die)
    with pytest.raises(RuntimeError):
        call(pro)
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry).where(
            LedgerEntry.connection_id.isnot(None))) == 0
    assert outbox() == []


def test_the_cli_and_the_sidecar_s_job_drain_the_outbox(pro, fake, capsys):
    from engine import cli
    from engine.sidecar import jobs

    call(pro)
    assert cli.main(["billing", "drain"]) == 0
    assert "Sent 1, already at Stripe 0, refused 0, waiting 0." in capsys.readouterr().out
    assert cli.main(["billing", "reconcile", "--day", f"{utcnow():%Y-%m-%d}"]) == 0
    assert ": ok" in capsys.readouterr().out
    assert cli.main(["billing", "reconcile", "--day", "yesterday-ish"]) == 1
    call(pro)
    jobs.drain_billing()  # the sidecar's periodic job
    assert meters.pending_count() == 0 and len(fake.meter_events) == 2
