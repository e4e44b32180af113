"""The Budgets & Alerts page, driven through AppTest against a real SQLite database."""

from __future__ import annotations

from decimal import Decimal
from functools import partial

import pytest

from engine import alerts, budgets, db, monitor, projects, usage
from engine.config import get_settings
from tests import pages_helpers
from tests.factories import member, owner
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/budgets.py"
open_page = partial(pages_helpers.open_page, PAGE, title="Budgets & Alerts")
ALERTS_TAB = ":material/notifications: Alerts"


@pytest.fixture
def page_db(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_SECRET_KEY_FILE", str(tmp_path / "secret.key"))
    monkeypatch.delenv("METERBOOK_SECRET_KEY", raising=False)
    monkeypatch.delenv("METERBOOK_SMTP_HOST", raising=False)
    get_settings.cache_clear()
    runs = []
    monkeypatch.setattr(monitor, "schedule", lambda *args: runs.append(args))
    yield runs
    get_settings.cache_clear()


def spend(actor, amount: str, **fields) -> None:
    with db.transaction() as s:
        usage.record(s, workspace_id=actor.workspace_id, provider="openai", model="gpt-4o-mini",
                     cost=Decimal(amount), **fields)


def badge(at) -> str | None:
    links = [e.proto.label for e in at.get("page_link")]
    return links[0] if links else None


def test_empty_state_then_a_budget_is_created_for_a_project(page_db):
    boss = owner()
    launch = projects.create_project(boss, "Launch")
    at = open_page()
    assert any("No budgets yet" in i.value for i in at.info)
    at.text_input(key="new_budget_name").input("Launch monthly")
    at.selectbox(key="new_budget_scope").select("project").run()
    at.selectbox(key="new_budget_target_project").select(launch.id)
    at.text_input(key="new_budget_limit").input("250")
    at.text_input(key="new_budget_thresholds").input("75, 100")
    at.button(key="new_budget_submit").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Budget “Launch monthly” created."]
    [b] = budgets.list_budgets(boss)
    assert (b.scope, b.scope_id, b.limit_usd, b.thresholds, b.owner_ids, b.action) == (
        "project", launch.id, Decimal("250"), (75, 100), (boss.user_id,), "block")
    row = at.dataframe[0].value.iloc[0]
    assert (row["Name"], row["Covers"], row["Limit"], row["Remaining"]) == (
        "Launch monthly", "Project “Launch”", "$250.00", "$250.00")
    assert len(at.get("plotly_chart")) == 2  # the spent/held/remaining bars and the burn-down
    assert page_db[-1] == (boss.workspace_id, [b.id], False)  # opening the page asks for a (throttled) check
    assert any("No forecast yet" in c.value for c in at.caption)


def test_bad_input_is_explained_and_nothing_is_stored(page_db):
    boss = owner()
    at = open_page()
    at.text_input(key="new_budget_name").input("Team")
    at.text_input(key="new_budget_limit").input("lots")
    at.button(key="new_budget_submit").click().run()
    assert errors(at) == ["The limit must be an amount in dollars, like 50 or 12.50."]
    at.text_input(key="new_budget_limit").input("40")
    at.segmented_control(key="new_budget_action").set_value("downgrade").run()
    at.button(key="new_budget_submit").click().run()
    assert errors(at) == ["Choose the cheaper model to switch to, as connection/model (like openai/gpt-4o-mini)."]
    assert budgets.list_budgets(boss) == []
    assert at.text_input(key="new_budget_name").value == "Team"  # what was typed stays, to be corrected


def test_the_detail_shows_spent_held_remaining_and_the_forecast(page_db):
    boss = owner()
    spend(boss, "12.5")
    budgets.create_budget(boss, name="Team", scope="workspace", period="monthly", limit_usd="50")
    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Spent"] == "$12.50" and metrics["Remaining"] == "$37.50"
    assert metrics["Held for calls in progress"] == "$0.00"
    row = at.dataframe[0].value.iloc[0]
    assert row["Used"] == pytest.approx(0.25)


def test_alerts_badge_acknowledge_snooze_and_the_way_back_to_the_budget(page_db):
    boss = owner()
    spend(boss, "9")
    b = budgets.create_budget(boss, name="Ads", scope="workspace", period="monthly", limit_usd="10")  # 50 %, 80 %
    at = open_page()
    assert badge(at) == "2 alerts to review"
    at.session_state["budgets_tab"] = ALERTS_TAB
    at.run()
    no_exceptions(at)
    assert list(at.dataframe[0].value["Alert"]) == ["Ads: 80% of the budget used", "Ads: 50% of the budget used"]
    assert any("has used 80% of its $10.00 monthly limit" in m.value for m in at.markdown)

    at.button(key="alert_ack").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Alert acknowledged."]
    assert list(at.dataframe[0].value["Alert"]) == ["Ads: 50% of the budget used"]
    assert badge(at) == "1 alert to review"

    at.selectbox(key="alert_snooze_for").select("1 day")
    at.button(key="alert_snooze").click().run()
    assert any("No alerts need attention" in i.value for i in at.info) and badge(at) is None
    at.toggle(key="alerts_show_all").set_value(True).run()
    statuses = dict(zip(at.dataframe[0].value["Alert"], at.dataframe[0].value["Status"]))
    assert statuses == {"Ads: 80% of the budget used": "Acknowledged", "Ads: 50% of the budget used": "Snoozed"}
    assert alerts.open_count(boss) == 0

    at.button(key="alert_open_budget").click().run()
    no_exceptions(at)
    assert at.selectbox(key="budget_pick").value == b.id and at.metric


def test_a_viewer_sees_budgets_and_alerts_but_cannot_change_them(page_db):
    boss = owner()
    member(boss, "viewer@example.com", "viewer")
    spend(boss, "6")
    budgets.create_budget(boss, name="Team", scope="workspace", period="monthly", limit_usd="10")
    at = open_page("viewer@example.com")
    assert list(at.dataframe[0].value["Name"]) == ["Team"]
    for key in ("new_budget_name", "new_budget_submit", "budget_edit", "budget_delete", "budget_toggle"):
        with pytest.raises(KeyError):
            at.get_by_key(key)
    at.session_state["budgets_tab"] = ALERTS_TAB
    at.run()
    assert badge(at) == "1 alert to review"
    with pytest.raises(KeyError):
        at.get_by_key("alert_ack")


def test_edit_turn_off_and_delete_after_confirming(page_db):
    boss = owner()
    b = budgets.create_budget(boss, name="Old", scope="workspace", period="monthly", limit_usd="10",
                              webhook_url="https://hooks.slack.com/services/T/B/abcdefgh")
    at = open_page()
    at.button(key="budget_edit").click().run()
    no_exceptions(at)
    assert at.text_input(key="edit_budget_webhook").value == ""  # the saved address is never sent back
    at.text_input(key="edit_budget_name").input("Renamed")
    at.text_input(key="edit_budget_limit").input("25")
    at.button(key="edit_budget_submit").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Budget “Renamed” saved."]
    stored = budgets.get_budget(boss, b.id)
    assert (stored.name, stored.limit_usd, stored.webhook_hint) == ("Renamed", Decimal("25"), "hooks.slack.com/…efgh")

    at.button(key="budget_toggle").click().run()
    assert not budgets.get_budget(boss, b.id).enabled
    assert at.dataframe[0].value.iloc[0]["Status"] == "Off"

    at.button(key="budget_delete").click().run()
    assert any("Delete **Renamed**?" in m.value for m in at.markdown)
    at.button(key="delete_budget_cancel").click().run()
    assert len(budgets.list_budgets(boss)) == 1
    at.button(key="budget_delete").click().run()
    at.button(key="delete_budget_confirm").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Budget “Renamed” deleted."] and budgets.list_budgets(boss) == []
