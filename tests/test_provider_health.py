"""Target health: the last 24 hours per connection/model from the ledger, and the targets Generate offers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from engine import accounts, db, pricing, provider_health, routes
from engine.errors import InvalidInput, PermissionDenied
from engine.models import LedgerEntry, ProviderConnection, TargetHealth
from engine.permissions import Actor
from engine.routes import TargetView
from tests.factories import member, owner

NOW = datetime(2026, 3, 10, 15, 40, tzinfo=UTC)


@pytest.fixture
def ws(database):
    boss = owner()
    with db.transaction() as s:
        ids = {}
        for name, ptype, price in (("openai", "openai", None), ("groq", "openai-compatible", "groq"),
                                   ("spare", "openai", None)):
            c = ProviderConnection(workspace_id=boss.workspace_id, name=name, provider_type=ptype,
                                   price_provider=price or ptype)
            s.add(c)
            s.flush()
            ids[name] = c.id
    return boss, ids


def ledger(actor: Actor, connection_id: int | None, model: str, status: str, at: datetime, *, latency: int | None = None,
           cost: str | None = "0.001", error: str | None = None) -> None:
    with db.transaction() as s:
        s.add(LedgerEntry(workspace_id=actor.workspace_id, user_id=actor.user_id, provider="openai", model=model,
                          kind="text", status=status, created_at=at, latency_ms=latency, error=error,
                          cost=Decimal(cost) if cost is not None else None, priced=cost is not None,
                          connection_id=connection_id, request_id=f"r{at.timestamp()}{status}{model}{connection_id}"))


def test_history_summarises_the_last_24_hours_per_target(ws):
    boss, ids = ws
    oa, gq = ids["openai"], ids["groq"]
    ledger(boss, oa, "gpt-4o-mini", "ok", NOW - timedelta(minutes=5), latency=400, cost="0.002")
    ledger(boss, oa, "gpt-4o-mini", "ok", NOW - timedelta(hours=2, minutes=10), latency=600, cost="0.003")
    ledger(boss, oa, "gpt-4o-mini", "rate_limited", NOW - timedelta(hours=2, minutes=20), latency=50,
           cost="0", error="429: slow down")
    ledger(boss, oa, "gpt-4o-mini", "error", NOW - timedelta(hours=1), latency=80, cost="0", error="500: oops")
    ledger(boss, oa, "gpt-4o-mini", "cancelled", NOW - timedelta(minutes=30), latency=900, cost="0.0005")
    ledger(boss, gq, "llama-3.3-70b", "ok", NOW - timedelta(hours=23), latency=200, cost=None)
    # outside the window, in another workspace, or never linked to a connection: not counted
    ledger(boss, oa, "gpt-4o-mini", "error", NOW - timedelta(hours=25), error="too old")
    ledger(boss, None, "gpt-4o-mini", "ok", NOW - timedelta(minutes=1))
    other = Actor(boss.user_id, accounts.create_workspace(boss.user_id, "Other").id)
    with db.transaction() as s:
        c = ProviderConnection(workspace_id=other.workspace_id, name="openai", provider_type="openai")
        s.add(c)
        s.flush()
        other_id = c.id
    ledger(other, other_id, "gpt-4o-mini", "error", NOW - timedelta(minutes=1), error="not ours")

    got = provider_health.history(boss, now=NOW)
    assert [h.label for h in got] == ["openai/gpt-4o-mini", "groq/llama-3.3-70b"]  # busiest first
    oa_h, gq_h = got
    assert (oa_h.calls, oa_h.ok, oa_h.failed, oa_h.cancelled) == (5, 2, 2, 1)
    assert oa_h.success_rate == 0.5
    assert oa_h.avg_latency_ms == 500  # successful calls only
    assert oa_h.cost == Decimal("0.0055")
    assert oa_h.last_error == "500: oops"  # the latest failure's reason
    assert oa_h.last_call_at == NOW - timedelta(minutes=5)
    assert (gq_h.calls, gq_h.ok, gq_h.cost, gq_h.last_error, gq_h.success_rate) == (1, 1, Decimal(0), None, 1.0)

    # 24 hourly slots ending with the current hour, each counted in its own UTC hour
    hours = oa_h.hours
    assert len(hours) == 24 and hours[-1].hour == datetime(2026, 3, 10, 15, tzinfo=UTC)
    assert hours[0].hour == datetime(2026, 3, 9, 16, tzinfo=UTC)
    by_hour = {h.hour.hour: (h.ok, h.failed) for h in hours if h.ok or h.failed}
    assert by_hour == {13: (1, 1), 14: (0, 1), 15: (1, 0)}
    assert sum(h.ok for h in gq_h.hours) == 1 and gq_h.hours[0].ok == 1  # 23 h ago: the first slot

    assert provider_health.history(other, now=NOW)[0].last_error == "not ours"
    assert provider_health.history(boss, now=NOW + timedelta(days=2)) == []


def test_history_is_for_members_and_bounded(ws):
    boss, _ = ws
    viewer = member(boss, "viewer@example.com", "viewer")
    assert provider_health.history(viewer) == []
    with pytest.raises(PermissionDenied):
        provider_health.history(Actor(viewer.user_id, boss.workspace_id + 999))
    with pytest.raises(InvalidInput, match="between 1 and 168 hours"):
        provider_health.history(boss, hours=0)


def test_targets_carry_health_and_unit_prices_in_route_order(ws):
    boss, ids = ws
    a = routes.add_target(boss, "text", connection_id=ids["openai"], model="gpt-4o-mini")
    b = routes.add_target(boss, "text", connection_id=ids["groq"], model="my-finetune")
    off = routes.add_target(boss, "text", connection_id=ids["spare"], model="gpt-4o")
    routes.update_target(boss, off, enabled=False)
    with db.transaction() as s:
        s.add(TargetHealth(connection_id=ids["openai"], model="gpt-4o-mini", state="closed", consecutive_failures=2,
                           latency_ms=420))

    got = provider_health.targets(boss, "text")
    assert [t.label for t in got] == ["openai/gpt-4o-mini", "groq/my-finetune"]  # the disabled one is not offered
    gpt, tuned = got
    assert gpt.view.id == a and gpt.view.latency_ms == 420
    assert gpt.health == "healthy, 2 recent failures"
    assert gpt.prices is not None and gpt.prices.source == "catalog"
    assert (gpt.prices.input_mtok, gpt.prices.output_mtok) == (Decimal("0.15"), Decimal("0.6"))
    assert gpt.prices.per_image == gpt.prices.per_1k_characters == gpt.prices.per_second == 0
    assert tuned.view.id == b and tuned.prices is None and tuned.health == "not called yet"

    # A workspace price wins over the catalog and is said to be the workspace's.
    pricing.set_override(boss, provider="groq", model="my-finetune", input_mtok="0.5", output_mtok="1.25")
    tuned = provider_health.targets(boss, "text")[1]
    assert (tuned.prices.input_mtok, tuned.prices.output_mtok, tuned.prices.source) == (
        Decimal("0.5"), Decimal("1.25"), "override")

    # A disabled connection takes its targets out of the offer.
    with db.transaction() as s:
        s.get(ProviderConnection, ids["openai"]).enabled = False
    assert [t.label for t in provider_health.targets(boss, "text")] == ["groq/my-finetune"]
    assert provider_health.targets(boss, "image") == []


def test_health_text_names_each_breaker_state():
    def view(state: str, failures: int = 0) -> TargetView:
        return TargetView(1, "text", 1, 1, "openai", "gpt-4o", None, None, None, True, state, failures, None, None,
                          None)

    assert provider_health.health_text(view("open", 5)) == "paused after 5 failures"
    assert provider_health.health_text(view("unknown")) == "not called yet"
    assert provider_health.health_text(view("closed")) == "healthy"
    assert provider_health.health_text(view("closed", 1)) == "healthy, 1 recent failure"
