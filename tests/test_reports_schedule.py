"""A report's schedule is a row of engine.schedules: made, changed, paused and deleted with the report. Both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.config import get_settings
from engine.errors import InvalidInput
from engine.reports import deliveries, schedule_link, store
from engine.schedules import store as schedules
from tests.factories import owner
from tests.pages_helpers import no_exceptions, signed_in
from tests.factories import PASSWORD


@pytest.fixture
def ws(database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield owner()
    get_settings.cache_clear()


def report_schedules(actor):
    return schedules.list_schedules(actor, kind="report")


def test_a_report_made_with_a_cron_has_one_schedule_that_follows_it(ws):
    r = store.create(ws, name="Weekly", source="dashboard", view={"period": "7d"}, cron="0 9 * * 1",
                     timezone="Europe/Paris")
    [s] = report_schedules(ws)
    assert (s.kind, s.target_id, s.cron, s.timezone, s.no_overlap, s.paused) == (
        "report", r.id, "0 9 * * 1", "Europe/Paris", True, False)
    assert store.get(ws, r.id).schedule.id == s.id
    assert [x.schedule.id for x in store.list_reports(ws)] == [s.id]

    store.update(ws, r.id, cron="30 8 * * 1-5", name="Weekdays")
    [s] = report_schedules(ws)
    assert (s.cron, s.timezone, s.name) == ("30 8 * * 1-5", "Europe/Paris", "Weekdays")
    store.pause(ws, r.id)
    assert report_schedules(ws)[0].paused and store.get(ws, r.id).paused
    store.resume(ws, r.id)
    assert not report_schedules(ws)[0].paused
    store.update(ws, r.id, cron="")
    assert report_schedules(ws) == [] and store.get(ws, r.id).schedule is None
    store.update(ws, r.id, cron="0 7 * * *", timezone="UTC")
    assert len(report_schedules(ws)) == 1
    store.delete(ws, r.id)
    assert report_schedules(ws) == []


def test_a_bad_cron_or_timezone_stores_nothing(ws):
    for cron, tz in (("every monday", "UTC"), ("0 9 * * 1", "Mars/Olympus"), ("0 9 * * 1", None)):
        with pytest.raises(InvalidInput):
            store.create(ws, name="Bad", source="dashboard", cron=cron, timezone=tz)
    assert store.list_reports(ws) == [] and report_schedules(ws) == []
    r = store.create(ws, name="Good", source="dashboard", cron="0 9 * * 1", timezone="UTC")
    with pytest.raises(InvalidInput):
        store.update(ws, r.id, cron="61 * * * *")
    assert report_schedules(ws)[0].cron == "0 9 * * 1"


def test_next_fire_times_follow_the_timezone(ws):
    times = schedule_link.next_times("0 9 * * 1", "Europe/Paris", 3, after=datetime(2026, 3, 20, tzinfo=UTC))
    assert [t.astimezone(UTC).hour for t in times] == [8, 7, 7]  # 9:00 Paris, before and after summer time


def test_a_scheduled_firing_enqueues_one_delivery(ws):
    r = store.create(ws, name="Weekly", source="dashboard", cron="0 9 * * 1", timezone="UTC")
    fire = datetime(2026, 12, 7, 9, tzinfo=UTC)
    assert deliveries.enqueue_scheduled(r.id, fire) == deliveries.enqueue_scheduled(r.id, fire)


def test_the_editor_shows_the_next_three_sends(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    boss = owner()
    at = signed_in("owner@example.com", PASSWORD, page="pages/reports.py")
    at.button(key="report_new").click().run()
    at.text_input(key="report_new_name").input("Scheduled")
    at.radio(key="report_new_source").set_value("dashboard").run()
    at.toggle(key="report_new_scheduled").set_value(True).run()
    at.text_input(key="report_new_cron").input("0 9 * * 1").run()
    [caption] = [c.value for c in at.caption if c.value.startswith("Next sends: ")]
    assert caption.count("Mon") == 3
    at.text_input(key="report_new_cron").input("not a cron").run()
    assert at.error and not [c for c in at.caption if c.value.startswith("Next sends: ")]
    at.text_input(key="report_new_cron").input("0 9 * * 1")
    at.button(key="report_save").click().run()
    no_exceptions(at)
    [r] = store.list_reports(boss)
    assert r.schedule.cron == "0 9 * * 1"
    get_settings.cache_clear()
