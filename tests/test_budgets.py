"""Budgets through the generation path: reservations, refusals, settling once, downgrades, periods and thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from engine import accounts, alerts, api_keys, budgets, clients, db, generation, monitor, projects, reservations, usage
from engine.budget_periods import EPOCH, period_at
from engine.budget_scope import COVERING, covering_params, ledger_rows
from engine.config import get_settings
from engine.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from engine.guards import CallContext
from engine.models import Budget, BudgetAlert, BudgetHold, LedgerEntry, ProviderConnection, RouteTarget
from providers.base import Result, Unavailable, Usage
from tests import scripted_provider as scripted
from tests.factories import member, owner

GPT = "gpt-4o-mini"  # $0.15/M input, $0.60/M output
NANO = "gpt-4.1-nano"  # $0.10/M input, $0.40/M output
HAIKU = "claude-haiku-4-5"
ANSWER = Usage(input_tokens=1200, output_tokens=2000)  # $0.00138 on gpt-4o-mini


@pytest.fixture
def monitor_runs(monkeypatch):
    """Runs the monitor would start after commit, recorded instead of run on a timer thread."""
    runs: list[tuple[int, tuple[int, ...], bool]] = []
    monkeypatch.setattr(monitor, "schedule", lambda ws, ids, fired: runs.append((ws, tuple(ids), fired)))
    return runs


@pytest.fixture
def ws(database, tmp_path, monkeypatch, monitor_runs):
    """A workspace with two scripted connections priced as OpenAI and Anthropic, routed in that order."""
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("METERBOOK_SECRET_KEY_FILE", str(tmp_path / "secret.key"))
    monkeypatch.delenv("METERBOOK_SECRET_KEY", raising=False)
    monkeypatch.setattr("time.sleep", lambda s: None)
    get_settings.cache_clear()
    scripted.install()
    generation._cached_provider.cache_clear()
    actor = owner()
    with db.transaction() as s:
        for position, (name, price_as, model) in enumerate([("primary", "openai", GPT), ("backup", "anthropic", HAIKU)]):
            c = ProviderConnection(workspace_id=actor.workspace_id, name=name, provider_type="scripted",
                                   price_provider=price_as)
            s.add(c)
            s.flush()
            s.add(RouteTarget(workspace_id=actor.workspace_id, kind="text", position=position, connection_id=c.id,
                              model=model))
    scripted.SCRIPT[GPT] = [Result(text="ok", usage=ANSWER)]
    yield actor
    get_settings.cache_clear()


def ask(actor, **fields) -> generation.Generation:
    return generation.generate(generation.GenerationRequest(prompt="Summarise the quarter.", **fields), actor)


def holds() -> list[BudgetHold]:
    with db.read_session() as s:
        return list(s.scalars(select(BudgetHold).order_by(BudgetHold.id)))


def ledger() -> list[LedgerEntry]:
    with db.read_session() as s:
        return list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))


def stored(budget_id: int) -> Budget:
    with db.read_session() as s:
        return s.get(Budget, budget_id)


def test_a_hard_budget_refuses_a_call_that_would_pass_it_and_says_what_is_spent_held_and_left(ws):
    worst = generation.estimate(generation.GenerationRequest(prompt="Summarise the quarter."), ws).cost
    b = budgets.create_budget(ws, name="Team monthly", scope="workspace", period="monthly", limit_usd="0.003")
    first = ask(ws)
    assert first.cost == Decimal("0.00138") and worst + first.cost > Decimal("0.003")
    with pytest.raises(budgets.BudgetExceeded) as refused:
        ask(ws)
    message = str(refused.value)
    assert "“Team monthly”" in message and "$0.0014 spent" in message and "$0.00 held" in message
    assert "$0.0016 remains" in message and "$0.003" in message
    assert len(scripted.CALLS) == 1 and len(ledger()) == 1  # the refused call never reached the vendor
    view = budgets.get_budget(ws, b.id)
    assert (view.spent, view.held, view.remaining) == (Decimal("0.00138"), 0, Decimal("0.00162"))


def test_each_attempt_is_settled_at_its_real_cost_exactly_once(ws):
    b = budgets.create_budget(ws, name="All", scope="workspace", period="total", limit_usd="10")
    g = ask(ws)
    [hold] = holds()
    assert (hold.state, hold.actual, hold.budget_id) == ("settled", g.cost, b.id)
    assert hold.amount == g.estimated_cost > g.cost  # the worst case was held, the real cost settled
    settled = reservations.Hold(ws.workspace_id, g.request_id, 1, hold.amount, (hold.id,), (b.id,))
    with db.transaction() as s:  # a retried settle after a crash between commit and acknowledgement
        reservations.HOOK.settle(s, settled, g.cost)
    reservations.HOOK.release(settled)
    assert stored(b.id).spent == g.cost and holds()[0].state == "settled"


def test_a_stopped_stream_is_settled_at_what_it_really_used(ws):
    b = budgets.create_budget(ws, name="All", scope="workspace", period="total", limit_usd="10")
    scripted.SCRIPT[GPT] = [["one", " two", " three", Result(text="one two three", usage=Usage(1, 3))]]
    stream = generation.stream(generation.GenerationRequest(prompt="Count to three."), ws)
    for _ in stream:
        break
    stream.close()
    [row], [hold] = ledger(), holds()
    assert row.status == "cancelled" and hold.state == "settled"
    assert 0 < hold.actual == row.cost < hold.amount and stored(b.id).spent == row.cost


def test_an_attempt_that_never_reached_the_vendor_releases_its_hold(ws):
    budgets.create_budget(ws, name="All", scope="workspace", period="total", limit_usd="10")
    scripted.SCRIPT[GPT] = [Unavailable("connection refused"), Result(text="ok", usage=ANSWER)]
    g = ask(ws)
    assert [(h.state, h.actual) for h in holds()] == [("released", None), ("settled", g.cost)]
    assert budgets.list_budgets(ws)[0].held == 0


def test_a_fallback_re_reserves_for_its_own_target_and_its_model_budget_can_refuse_it(ws):
    model_budget = budgets.create_budget(ws, name="Haiku cap", scope="model", target=HAIKU, period="daily",
                                         limit_usd="0.001")
    scripted.SCRIPT[GPT] = [Unavailable("overloaded", status=503)] * 3
    with pytest.raises(budgets.BudgetExceeded, match="Haiku cap"):
        ask(ws)
    assert [r.status for r in ledger()] == ["error"] * 3  # the failed primary attempts, settled at $0
    assert holds() == []  # the model budget covered only the fallback, which it refused
    assert stored(model_budget.id).spent == 0


def test_an_unpriced_model_is_refused_under_a_hard_budget_and_allowed_under_a_warning(ws):
    scripted.SCRIPT["my-finetune"] = [Result(text="x", usage=Usage(input_tokens=5, output_tokens=5))]
    hard = budgets.create_budget(ws, name="Hard", scope="workspace", period="monthly", limit_usd="100")
    with pytest.raises(budgets.BudgetExceeded, match="no known price.*“Hard”.*Settings → Prices"):
        ask(ws, target="primary/my-finetune")
    budgets.update_budget(ws, hard.id, name="Soft", scope="workspace", period="monthly", limit_usd="100",
                          action="warn")
    g = ask(ws, target="primary/my-finetune")
    assert g.cost is None and stored(hard.id).spent == 0
    assert [h.state for h in holds()] == ["settled"]


def test_a_downgrade_budget_at_its_limit_switches_the_call_to_the_cheaper_model(ws):
    scripted.SCRIPT[NANO] = [Result(text="cheap", usage=ANSWER)]
    budgets.create_budget(ws, name="Switch", scope="workspace", period="monthly", limit_usd="0.001",
                          action="downgrade", downgrade_to=f"primary/{NANO}")
    g = ask(ws)
    assert (g.text, g.model, g.target) == ("cheap", NANO, f"primary/{NANO}")
    assert [c.model for c in scripted.CALLS] == [NANO]
    [row] = ledger()
    assert row.model == NANO and row.cost == g.cost == Decimal("0.00092")
    assert [h.state for h in holds()] == ["settled"]


def test_downgrades_that_go_round_in_a_circle_refuse_instead_of_looping(ws):
    budgets.create_budget(ws, name="Mini to nano", scope="model", target=GPT, period="monthly", limit_usd="0.001",
                          action="downgrade", downgrade_to=f"primary/{NANO}")
    budgets.create_budget(ws, name="Nano to mini", scope="model", target=NANO, period="monthly",
                          limit_usd="0.0001", action="downgrade", downgrade_to=f"primary/{GPT}")
    with pytest.raises(budgets.BudgetExceeded, match="Nano to mini.*at a budget's limit too"):
        ask(ws)
    assert scripted.CALLS == [] and holds() == []


def test_each_threshold_fires_once_per_budget_and_period(ws, monitor_runs):
    b = budgets.create_budget(ws, name="Watch", scope="workspace", period="monthly", limit_usd="0.004",
                              action="warn")
    for _ in range(4):
        ask(ws)  # 34.5 %, 69 %, 103.5 %, 138 % of the limit
    with db.read_session() as s:
        fired = [(a.kind, a.detail["threshold"]) for a in s.scalars(select(BudgetAlert).order_by(BudgetAlert.id))]
    assert fired == [("threshold", 50), ("threshold", 80), ("threshold", 100)]
    assert [fired_now for _, _, fired_now in monitor_runs] == [False, True, True, False]
    with db.transaction() as s:  # a retry or a second process sees the same crossing again
        again = s.get(Budget, b.id)
        assert not alerts.fire_thresholds(s, again, Decimal(0), again.spent)
    assert len(alerts.list_alerts(ws)) == 3


def test_a_budget_created_mid_period_counts_what_was_already_spent(ws, monitor_runs):
    with db.transaction() as s:
        usage.record(s, workspace_id=ws.workspace_id, provider="openai", model=GPT, cost=Decimal("9"))
        usage.record(s, workspace_id=ws.workspace_id, provider="openai", model=GPT, cost=Decimal("1"),
                     created_at=datetime(2020, 1, 5, tzinfo=UTC))  # an earlier month
    b = budgets.create_budget(ws, name="Late", scope="workspace", period="monthly", limit_usd="12")
    assert b.spent == Decimal("9") and b.remaining == Decimal("3")
    assert [a.title for a in alerts.list_alerts(ws)] == ["Late: 50% of the budget used"]
    assert monitor_runs == [(ws.workspace_id, (b.id,), True)]


def test_a_crashed_callers_hold_blocks_only_until_it_expires(ws):
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    hook = reservations.HOOK
    budgets.create_budget(ws, name="All time", scope="workspace", period="total", limit_usd="1")
    ctx = lambda rid: CallContext(ws.workspace_id, ws.user_id, None, None, "text", (), "openai", GPT, 1, rid, 1)  # noqa: E731
    original = hook.clock
    try:
        hook.clock = lambda: now
        assert hook.reserve(ctx("crashed"), Decimal("0.70")) is not None  # its process dies before settling
        with pytest.raises(budgets.BudgetExceeded, match=r"\$0.70 held"):
            hook.reserve(ctx("waits"), Decimal("0.40"))
        hook.clock = lambda: now + reservations.HOLD_TTL + timedelta(seconds=1)
        fits = hook.reserve(ctx("fits"), Decimal("0.40"))
        assert fits is not None and budgets.list_budgets(ws, now=hook.clock())[0].held == Decimal("0.40")
    finally:
        hook.clock = original


def test_a_settle_counts_in_the_period_where_its_ledger_row_falls(ws):
    accounts.update_workspace(ws, name="Acme Analytics", timezone="America/New_York")
    hook = reservations.HOOK
    late_evening = datetime(2026, 3, 10, 3, 59, 59, tzinfo=UTC)  # 23:59:59 on 9 March in New York
    after_midnight = late_evening + timedelta(seconds=2)
    ctx = lambda rid: CallContext(ws.workspace_id, ws.user_id, None, None, "text", (), "openai", GPT, 1, rid, 1)  # noqa: E731
    original = hook.clock
    try:
        hook.clock = lambda: late_evening
        b = budgets.create_budget(ws, name="Daily", scope="workspace", period="daily", limit_usd="5")
        hold = hook.reserve(ctx("late"), Decimal("1"))
        assert stored(b.id).period_start == period_at("daily", "America/New_York", late_evening).start
        hook.clock = lambda: after_midnight
        with db.transaction() as s:
            usage.record(s, workspace_id=ws.workspace_id, provider="openai", model=GPT, cost=Decimal("0.25"),
                         request_id="late", attempt=1, created_at=after_midnight)
            hook.settle(s, hold, Decimal("0.25"))
        counted = stored(b.id)
        assert counted.period_start == period_at("daily", "America/New_York", after_midnight).start
        assert counted.spent == Decimal("0.25")  # in the new day, where the row fell, and only once

        early = hook.reserve(ctx("early"), Decimal("1"))  # a row that still belongs to the day before
        with db.transaction() as s:
            usage.record(s, workspace_id=ws.workspace_id, provider="openai", model=GPT, cost=Decimal("0.5"),
                         request_id="early", attempt=1, created_at=late_evening)
            hook.settle(s, early, Decimal("0.5"))
        assert stored(b.id).spent == Decimal("0.25")
    finally:
        hook.clock = original


def test_each_scope_covers_the_calls_it_names_and_counts_the_same_ledger_rows(ws):
    acme = clients.create_client(ws, "Acme")
    launch = projects.create_project(ws, "Launch", client_id=acme.id)
    other = projects.create_project(ws, "Other")
    key, _ = api_keys.create_api_key(ws, "CI", ["generate"])
    made = {scope: budgets.create_budget(ws, name=scope, scope=scope, target=target, period="total", limit_usd="50").id
            for scope, target in [("workspace", None), ("client", acme.id), ("project", launch.id),
                                  ("provider", "openai"), ("model", GPT), ("user", ws.user_id),
                                  ("api_key", key.id), ("tag", "campaign")]}
    call = CallContext(ws.workspace_id, ws.user_id, key.id, launch.id, "text", ("campaign", "x"), "openai", GPT, 1,
                       "r", 1)
    elsewhere = CallContext(ws.workspace_id, None, None, other.id, "text", ("x",), "anthropic", HAIKU, 2, "r", 1)
    with db.read_session() as s:
        assert set(s.scalars(select(Budget.id).where(COVERING), covering_params(call))) == set(made.values())
        assert set(s.scalars(select(Budget.id).where(COVERING), covering_params(elsewhere))) == {made["workspace"]}
    with db.transaction() as s:
        usage.record(s, workspace_id=ws.workspace_id, user_id=ws.user_id, api_key_id=key.id, project_id=launch.id,
                     tags=["campaign", "x"], provider="openai", model=GPT, cost=Decimal("2"))
        usage.record(s, workspace_id=ws.workspace_id, project_id=other.id, tags=["x", "campaigns"],
                     provider="anthropic", model=HAIKU, cost=Decimal("3"))
    with db.read_session() as s:
        dialect = s.get_bind().dialect.name
        for scope, budget_id in made.items():
            b = s.get(Budget, budget_id)
            total = s.scalar(select(func.sum(LedgerEntry.cost)).where(LedgerEntry.workspace_id == ws.workspace_id,
                                                      ledger_rows(b.scope, b.scope_id, b.scope_value, dialect)))
            assert total == (Decimal("5") if scope == "workspace" else Decimal("2")), scope


def test_budgets_are_validated_and_only_admins_change_them(ws):
    editor = member(ws, "editor@example.com", "editor")
    viewer = member(ws, "viewer@example.com", "viewer")
    project = projects.create_project(ws, "Launch")
    for bad, message in [
        (dict(limit_usd="abc"), "amount in dollars"), (dict(limit_usd="0"), "more than zero"),
        (dict(limit_usd="1e9"), "under one hundred million"), (dict(period="hourly"), "Choose a period"),
        (dict(thresholds="50, lots"), "whole percentages"), (dict(thresholds="0"), "between 1% and 1000%"),
        (dict(scope="project", target=999), "Choose a project from this workspace"),
        (dict(scope="tag", target="  "), "Name the tag"), (dict(action="explode"), "block calls, only warn"),
        (dict(action="downgrade"), "cheaper model to switch to"),
        (dict(action="downgrade", downgrade_to="nowhere/gpt-x"), "no provider connection called 'nowhere'"),
        (dict(owner_ids=[99999]), "members of this workspace"), (dict(name=" "), "cannot be empty"),
        (dict(webhook_url="ftp://example.com/x"), "starts with https://"),
    ]:
        fields = dict(name="Budget", scope="project", target=project.id, period="monthly", limit_usd="10") | bad
        with pytest.raises(InvalidInput, match=message):
            budgets.create_budget(ws, **fields)
    assert budgets.list_budgets(ws) == []

    b = budgets.create_budget(ws, name="Launch", scope="project", target=project.id, period="weekly",
                              limit_usd="$1,250.50", thresholds="90, 50", owner_ids=[ws.user_id, editor.user_id],
                              webhook_url="https://hooks.slack.com/services/T000/B000/secretsecret")
    assert (b.limit_usd, b.thresholds, b.target, b.owner_ids) == (
        Decimal("1250.50"), (50, 90), "Project “Launch”", (ws.user_id, editor.user_id))
    assert b.webhook_hint == "hooks.slack.com/…cret"
    assert "secret" not in repr(budgets.list_budgets(viewer))  # viewers read; the webhook never shows
    with pytest.raises(Conflict, match="already exists"):
        budgets.create_budget(ws, name="launch", scope="workspace", period="daily", limit_usd="1")
    for who in (editor, viewer):
        with pytest.raises(PermissionDenied, match="create or change budgets"):
            budgets.create_budget(who, name="Mine", scope="workspace", period="daily", limit_usd="1")
        with pytest.raises(PermissionDenied):
            budgets.delete_budget(who, b.id)

    kept = budgets.update_budget(ws, b.id, name="Launch", scope="project", target=project.id, period="monthly",
                                 limit_usd="10", action="warn")
    assert kept.webhook_hint == "hooks.slack.com/…cret" and kept.period == "monthly"
    removed = budgets.update_budget(ws, b.id, name="Launch", scope="project", target=project.id, period="monthly",
                                    limit_usd="10", action="warn", webhook_url="")
    assert removed.webhook_hint is None
    budgets.set_enabled(ws, b.id, False)
    assert not budgets.get_budget(ws, b.id).enabled
    budgets.delete_budget(ws, b.id)
    with pytest.raises(NotFound):
        budgets.get_budget(ws, b.id)


def test_a_disabled_budget_covers_nothing(ws):
    b = budgets.create_budget(ws, name="Tight", scope="workspace", period="daily", limit_usd="0.0001")
    with pytest.raises(budgets.BudgetExceeded):
        ask(ws)
    budgets.set_enabled(ws, b.id, False)
    assert ask(ws).text == "ok" and holds() == []


def test_periods_follow_the_local_calendar():
    march_8 = datetime(2026, 3, 8, 15, tzinfo=UTC)  # the US spring-forward day: 23 hours long
    day = period_at("daily", "America/New_York", march_8)
    assert (day.start, day.end - day.start) == (datetime(2026, 3, 8, 5, tzinfo=UTC), timedelta(hours=23))
    week = period_at("weekly", "Europe/Berlin", datetime(2026, 3, 12, 9, tzinfo=UTC))  # a Thursday
    assert (week.start, week.end) == (datetime(2026, 3, 8, 23, tzinfo=UTC), datetime(2026, 3, 15, 23, tzinfo=UTC))
    month = period_at("monthly", "Asia/Tokyo", datetime(2026, 1, 31, 16, tzinfo=UTC))  # already 1 Feb in Tokyo
    assert (month.start, month.end) == (datetime(2026, 1, 31, 15, tzinfo=UTC), datetime(2026, 2, 28, 15, tzinfo=UTC))
    assert period_at("total", "UTC", march_8).start == EPOCH and period_at("total", "UTC", march_8).end is None
