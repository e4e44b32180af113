"""Forecasts (weekday-aware, with a band and an exhaustion time), the burn-down, forecast alerts and spend spikes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from engine import accounts, alerts, anomalies, budgets, db, forecast, monitor, projects, reservations, usage
from tests.factories import member, owner

BERLIN = ZoneInfo("Europe/Berlin")
FRIDAY_NOON = datetime(2026, 3, 13, 12, tzinfo=BERLIN).astimezone(UTC)


def working_hours(days: int, *, weekday: str = "10", weekend: str = "1", before: datetime = FRIDAY_NOON,
                  tz: ZoneInfo = BERLIN) -> dict[datetime, Decimal]:
    """Hourly spend: weekdays spread evenly over 9:00–17:00 local, weekends over 10:00–12:00."""
    hours: dict[datetime, Decimal] = {}
    today = before.astimezone(tz).date()
    for back in range(days, -1, -1):
        day = today - timedelta(days=back)
        span, total = ((range(9, 17), Decimal(weekday)) if day.weekday() < 5 else (range(10, 12), Decimal(weekend)))
        for hour in span:
            at = datetime(day.year, day.month, day.day, hour, tzinfo=tz).astimezone(UTC)
            if at < before:
                hours[at] = total / len(span)
    return hours


def test_a_weekly_forecast_knows_weekends_are_quiet():
    history = working_hours(28)
    spent = Decimal("43.75")  # Monday to Thursday, and Friday's working hours until noon
    end = datetime(2026, 3, 16, tzinfo=BERLIN).astimezone(UTC)  # next Monday: the week's end
    f = forecast.project(history, tz="Europe/Berlin", now=FRIDAY_NOON, end=end, spent=spent, limit=Decimal("60"))
    assert f.weekday_aware and f.history_days == 28
    # The rest of Friday (5 of its 8 working hours: $6.25) and two quiet weekend days, not 2.5 more weekdays.
    assert f.expected == Decimal("52")
    assert f.low == f.high == f.expected  # every past week was the same: no spread
    assert f.exhausted_at is None and f.path[-1].at == end


def test_a_daily_forecast_follows_the_working_day_not_a_straight_line():
    history = working_hours(21)
    end = datetime(2026, 3, 14, tzinfo=BERLIN).astimezone(UTC)
    f = forecast.project(history, tz="Europe/Berlin", now=FRIDAY_NOON, end=end, spent=Decimal("3.75"),
                         limit=Decimal("8"))
    assert f.expected == Decimal("10")
    steps = {p.at.astimezone(BERLIN).hour: p.expected for p in f.path}
    assert steps[13] - steps[12] == Decimal("1.25")  # each working hour adds its share…
    assert steps[17] == Decimal("10") and steps[0] == Decimal("10")  # …and nothing is spent after 17:00
    # The $8 limit is reached during the 15:00 hour: 3.75 + 1.25 × 3.4 hours.
    assert f.exhausted_at.astimezone(BERLIN).replace(second=0, microsecond=0) == datetime(
        2026, 3, 13, 15, 24, tzinfo=BERLIN)


def test_todays_own_pace_counts_for_more_as_the_day_goes_on():
    history = working_hours(21)
    end = datetime(2026, 3, 14, tzinfo=BERLIN).astimezone(UTC)
    busy = dict(history)
    for at in [h for h in busy if h.astimezone(BERLIN).date() == date(2026, 3, 13)]:
        busy[at] *= 3  # today runs at three times the usual pace
    calm = forecast.project(history, tz="Europe/Berlin", now=FRIDAY_NOON, end=end, spent=Decimal("3.75"),
                            limit=Decimal("100"))
    hot = forecast.project(busy, tz="Europe/Berlin", now=FRIDAY_NOON, end=end, spent=Decimal("11.25"),
                           limit=Decimal("100"))
    assert hot.expected - Decimal("11.25") > calm.expected - Decimal("3.75")


def test_noisy_history_gives_a_band_and_no_history_gives_no_forecast():
    history = working_hours(28)
    for at in list(history)[::7]:
        history[at] *= 4
    end = datetime(2026, 3, 16, tzinfo=BERLIN).astimezone(UTC)
    f = forecast.project(history, tz="Europe/Berlin", now=FRIDAY_NOON, end=end, spent=Decimal("43.75"),
                         limit=Decimal("50"))
    assert f.low < f.expected < f.high and f.low >= Decimal("43.75")
    assert f.exhausted_at is not None and FRIDAY_NOON < f.exhausted_at < end
    assert forecast.project({}, tz="UTC", now=FRIDAY_NOON, end=end, spent=Decimal(0), limit=Decimal(1)) is None


# --- against the ledger ---------------------------------------------------------------------


@pytest.fixture
def team(database, monkeypatch):
    runs = []
    monkeypatch.setattr(monitor, "schedule", lambda *args: runs.append(args))
    boss = owner()
    accounts.update_workspace(boss, name="Acme Analytics", timezone="Europe/Berlin")
    return boss


def record(actor, hours: dict[datetime, Decimal], *, model: str = "gpt-4o-mini", **fields) -> None:
    with db.transaction() as s:
        for at, cost in hours.items():
            usage.record(s, workspace_id=actor.workspace_id, provider="openai", model=model, cost=cost, created_at=at,
                         **fields)


def test_the_burndown_and_the_forecast_alert_of_a_budget(team, monkeypatch):
    record(team, working_hours(28))
    monkeypatch.setattr(reservations.HOOK, "clock", lambda: FRIDAY_NOON)
    weekly = budgets.create_budget(team, name="Week", scope="workspace", period="weekly", limit_usd="49",
                                   thresholds="100")
    view = budgets.get_budget(team, weekly.id)
    assert view.spent == Decimal("43.75")

    chart = budgets.burndown(team, weekly.id)
    assert chart.actual[0] == (view.period_start, Decimal(0)) and chart.actual[-1] == (FRIDAY_NOON, Decimal("43.75"))
    assert [c for _, c in chart.actual] == sorted(c for _, c in chart.actual)
    assert chart.forecast.expected == Decimal("52") and chart.forecast.path[-1].at == view.period_end

    assert monitor.run(team.workspace_id, spikes=False, now=FRIDAY_NOON) == 1  # delivered (in the app only)
    [alert] = alerts.list_alerts(team)
    assert (alert.kind, alert.title) == ("forecast", "Week: forecast to pass its limit")
    assert "about $52.00 by the end of the period" in alert.message
    assert "run out around Fri 13 Mar 22:04" in alert.message
    monitor.run(team.workspace_id, spikes=False, now=FRIDAY_NOON + timedelta(hours=1))
    assert len(alerts.list_alerts(team)) == 1  # once per period


def test_a_spike_is_flagged_once_with_its_causes(team):
    analyst = member(team, "analyst@example.com", "editor")
    launch = projects.create_project(team, "Launch")
    steady = projects.create_project(team, "Steady")
    now = datetime(2026, 3, 13, 15, tzinfo=BERLIN).astimezone(UTC)
    normal = {at: Decimal("0.25") for at in working_hours(20, before=now.replace(hour=0))}
    record(team, normal, project_id=launch.id, user_id=team.user_id)
    record(team, normal, project_id=steady.id, user_id=team.user_id)
    today = datetime(2026, 3, 13, 10, tzinfo=BERLIN).astimezone(UTC)
    record(team, {today: Decimal("30")}, project_id=launch.id, user_id=analyst.user_id, model="gpt-4o",
           workflow_run_id=7)
    record(team, {today: Decimal("2")}, project_id=steady.id, user_id=team.user_id)

    assert anomalies.scan(team.workspace_id, now) == 2  # the project, and the model it ran on
    by_title = {a.title: a for a in alerts.list_alerts(team)}
    assert set(by_title) == {"Spend spike on project “Launch”", "Spend spike on model gpt-4o"}
    spike = by_title["Spend spike on project “Launch”"]
    assert spike.kind == "spike" and spike.detail["spend"] == "30.0000000000"
    assert spike.detail["median"] == "2.0000000000" and spike.detail["threshold"] == "4.0000000000"
    causes = spike.detail["causes"]
    assert causes["model"][0] == {"label": "gpt-4o", "today": "30.0000000000", "typical": "0.0000"}
    assert causes["user"][0]["label"] == "analyst@example.com"
    assert causes["workflow"][0]["label"] == "workflow run #7"
    assert "Most of it: model gpt-4o $30.00 (typical $0.00); person analyst@example.com" in spike.message
    assert anomalies.scan(team.workspace_id, now) == 0  # once per series and day


def test_no_spike_without_a_week_of_history(team):
    now = datetime(2026, 3, 13, 15, tzinfo=BERLIN).astimezone(UTC)
    record(team, {now - timedelta(days=d): Decimal("5") for d in range(1, 4)})
    record(team, {now - timedelta(hours=1): Decimal("40")})
    assert anomalies.scan(team.workspace_id, now) == 0  # three days are no baseline


def test_normal_variation_is_not_a_spike_and_the_line_is_robust(team):
    now = datetime(2026, 3, 13, 15, tzinfo=BERLIN).astimezone(UTC)
    record(team, {now - timedelta(days=d): Decimal(5 + d % 3) for d in range(1, 20)})  # $5, $6 or $7 a day
    record(team, {now - timedelta(days=9): Decimal("500")})  # one wild day moves neither median nor MAD
    record(team, {now - timedelta(hours=2): Decimal("11")})
    assert anomalies.scan(team.workspace_id, now) == 0  # $11 is under the line: 6 + max(5.19 × 1, 6, 1) = $12
    record(team, {now - timedelta(hours=1): Decimal("2")})
    assert anomalies.scan(team.workspace_id, now) == 2  # $13: the model's series and the no-project series
    assert anomalies.baseline([Decimal(v) for v in (5, 6, 7, 5, 6, 7, 505)]) == anomalies.Baseline(6, 1)
