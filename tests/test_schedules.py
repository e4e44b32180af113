"""Schedules as stored: cron as cron means it (weekdays, the nights the clocks change), and the store's
rules (validation that stores nothing, permissions, versions the sidecar reconciles by, what a list shows)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from engine import accounts, db
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, NotFound, PermissionDenied
from engine.permissions import Actor
from engine.schedules import cron, store
from engine.schedules.models import Schedule, ScheduleFire
from engine.workflows import store as workflows
from tests.factories import member, owner

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
FLOW = "name: nightly\nnodes:\n  - {id: hello, type: transform, params: {value: hi}}\n"


def local(times, tz=PARIS):
    return [t.astimezone(tz).strftime("%a %d %H:%M%z") for t in times]


# --- cron -------------------------------------------------------------------------------------


def test_weekday_numbers_are_cron_s_not_apscheduler_s():
    monday = datetime(2026, 11, 29, 12, tzinfo=UTC)  # a Sunday
    assert local(cron.next_times("0 9 * * 1", "UTC", monday, 2), UTC) == ["Mon 30 09:00+0000", "Mon 07 09:00+0000"]
    assert local(cron.next_times("0 9 * * 0", "UTC", monday, 1), UTC) == ["Sun 06 09:00+0000"]
    assert cron.next_times("0 9 * * 7", "UTC", monday, 3) == cron.next_times("0 9 * * sun", "UTC", monday, 3)
    assert [t.strftime("%a") for t in cron.next_times("0 9 * * 1-5", "UTC", monday, 5)] == \
        ["Mon", "Tue", "Wed", "Thu", "Fri"]
    assert [t.strftime("%a") for t in cron.next_times("0 9 * * 5-7", "UTC", monday, 3)] == ["Fri", "Sat", "Sun"]


def test_six_fields_start_with_seconds_and_macros_expand():
    start = datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC)
    assert [t.second for t in cron.next_times("*/20 * * * * *", "UTC", start, 3)] == [20, 40, 0]
    assert cron.next_times("@daily", "UTC", start, 1) == [datetime(2026, 12, 2, tzinfo=UTC)]
    assert cron.next_times("@hourly", "UTC", start, 1) == [datetime(2026, 12, 1, 1, tzinfo=UTC)]


@pytest.mark.parametrize("expression", ["", "* * *", "61 * * * *", "0 9 * * 8", "0 9 * * mon-xyz", "0 25 * * *"])
def test_bad_expressions_are_refused_in_plain_words(expression):
    with pytest.raises(InvalidInput):
        cron.parse(expression, "UTC")


def test_a_day_of_month_and_a_weekday_together_are_refused():
    with pytest.raises(InvalidInput, match="not both"):
        cron.parse("0 9 1 * 1", "UTC")


def test_an_unknown_timezone_is_refused():
    with pytest.raises(InvalidInput, match="IANA"):
        cron.parse("@daily", "Mars/Olympus_Mons")


def test_a_fixed_time_fires_once_on_the_night_the_clocks_go_back():
    night = datetime(2026, 10, 24, 12, tzinfo=UTC)
    assert local(cron.next_times("30 2 * * *", "Europe/Paris", night, 2)) == ["Sun 25 02:30+0200", "Mon 26 02:30+0100"]


def test_an_hourly_schedule_runs_in_both_of_the_repeated_hours():
    night = datetime(2026, 10, 24, 23, 30, tzinfo=UTC)
    assert local(cron.next_times("0 * * * *", "Europe/Paris", night, 5)) == [
        "Sun 25 02:00+0200", "Sun 25 02:00+0100", "Sun 25 03:00+0100", "Sun 25 04:00+0100", "Sun 25 05:00+0100"]
    quarter = cron.next_times("*/15 * * * *", "Europe/Paris", night, 12)
    assert len(set(quarter)) == 12 and quarter == sorted(quarter)
    assert all(b - a == timedelta(minutes=15) for a, b in zip(quarter, quarter[1:]))


def test_a_time_in_the_skipped_hour_fires_once_when_the_clocks_go_forward():
    night = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert local(cron.next_times("30 2 * * *", "Europe/Paris", night, 2)) == ["Sun 29 03:30+0200", "Mon 30 02:30+0200"]
    hourly = cron.next_times("0 * * * *", "Europe/Paris", datetime(2026, 3, 28, 23, 30, tzinfo=UTC), 3)
    assert local(hourly) == ["Sun 29 01:00+0100", "Sun 29 03:00+0200", "Sun 29 04:00+0200"]


def test_times_between_is_bounded_and_in_order():
    trigger = cron.parse("* * * * *", "UTC")
    start = datetime(2026, 12, 1, tzinfo=UTC)
    times = cron.times_between(trigger, start, start + timedelta(hours=1), limit=10)
    assert len(times) == 10 and times[0] == start + timedelta(minutes=1)
    assert cron.times_between(trigger, start, start + timedelta(minutes=3), limit=100) == [
        start + timedelta(minutes=m) for m in (1, 2, 3)]


# --- the store --------------------------------------------------------------------------------


@pytest.fixture
def ws(database):
    actor = owner()
    return actor, workflows.create(actor, FLOW)


def count(model=Schedule) -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_create_lists_with_the_next_fire_time_and_edits_bump_the_version(ws):
    actor, wf = ws
    made = store.create(actor, kind="workflow", target_id=wf.id, cron="0 9 * * 1-5", timezone="Europe/Paris")
    assert made.name == "nightly" and made.version == 1 and not made.paused
    assert made.next_fire_time is not None and made.next_fire_time > utcnow()
    assert made.next_fire_time.astimezone(PARIS).hour == 9
    edited = store.update(actor, made.id, cron="0 18 * * 1-5", name="evening")
    assert edited.version == 2 and edited.name == "evening"
    assert store.update(actor, made.id, cron="0 18 * * 1-5").version == 2  # nothing changed: no new version
    assert [v.id for v in store.list_schedules(actor)] == [made.id]
    assert [v.id for v in store.for_target(actor, "workflow", wf.id)] == [made.id]


def test_bad_input_stores_nothing_and_leaves_the_row_as_it_was(ws):
    actor, wf = ws
    for bad in ({"cron": "every day"}, {"timezone": "Nowhere/Land"}, {"misfire": "later"}, {"grace_s": -1},
                {"grace_s": "soon"}, {"inputs": ["x"]}):
        with pytest.raises(InvalidInput):
            store.create(actor, kind="workflow", target_id=wf.id, **{"cron": "@daily", "timezone": "UTC", **bad})
    with pytest.raises(InvalidInput):
        store.create(actor, kind="batch", target_id=wf.id, cron="@daily", timezone="UTC")
    with pytest.raises(NotFound):
        store.create(actor, kind="workflow", target_id=wf.id + 999, cron="@daily", timezone="UTC")
    assert count() == 0
    made = store.create(actor, kind="workflow", target_id=wf.id, cron="@daily", timezone="UTC")
    for bad in ({"cron": "0 99 * * *"}, {"timezone": ""}, {"colour": "red"}):
        with pytest.raises(InvalidInput):
            store.update(actor, made.id, **bad)
    after = store.get(actor, made.id)
    assert (after.cron, after.timezone, after.version) == ("@daily", "UTC", 1)


def test_pause_resume_and_what_paused_time_means(ws):
    actor, wf = ws
    made = store.create(actor, kind="workflow", target_id=wf.id, cron="* * * * *", timezone="UTC")
    paused = store.pause(actor, made.id)
    assert paused.paused and paused.next_fire_time is None and paused.version == 2
    with db.read_session() as s:
        before = s.get(Schedule, made.id).resumed_at
    resumed = store.resume(actor, made.id)
    assert not resumed.paused and resumed.version == 3
    with db.read_session() as s:
        assert s.get(Schedule, made.id).resumed_at > before  # firings while paused are not "missed"


def test_viewers_read_and_editors_write_and_other_workspaces_see_nothing(ws):
    actor, wf = ws
    made = store.create(actor, kind="workflow", target_id=wf.id, cron="@daily", timezone="UTC")
    viewer = member(actor, "vera@example.com", "viewer")
    assert [v.id for v in store.list_schedules(viewer)] == [made.id]
    with pytest.raises(PermissionDenied):
        store.pause(viewer, made.id)
    with pytest.raises(PermissionDenied):
        store.create(viewer, kind="workflow", target_id=wf.id, cron="@daily", timezone="UTC")
    stranger = Actor(actor.user_id, accounts.create_workspace(actor.user_id, "Elsewhere").id)
    assert store.list_schedules(stranger) == []
    with pytest.raises(NotFound):
        store.delete(stranger, made.id)
    with pytest.raises(NotFound):  # another workspace's workflow cannot be scheduled from here
        store.create(stranger, kind="workflow", target_id=wf.id, cron="@daily", timezone="UTC")


def test_firings_and_misses_show_in_the_list_and_deleting_the_workflow_deletes_its_schedules(ws):
    actor, wf = ws
    made = store.create(actor, kind="workflow", target_id=wf.id, cron="* * * * *", timezone="UTC")
    now = utcnow().replace(second=0, microsecond=0)
    with db.transaction() as s:
        for minutes, status in ((3, "missed"), (2, "missed"), (1, "fired")):
            s.add(ScheduleFire(schedule_id=made.id, workspace_id=actor.workspace_id,
                               fire_time=now - timedelta(minutes=minutes), status=status, detail="sidecar down"))
    view = store.get(actor, made.id)
    assert (view.last_status, view.missed) == ("fired", 2)
    assert [f.status for f in store.fires(actor, made.id)] == ["fired", "missed", "missed"]
    with db.transaction() as s:  # the unique key: one row per (schedule, fire time), ever
        s.add(ScheduleFire(schedule_id=made.id, workspace_id=actor.workspace_id, fire_time=now - timedelta(minutes=1)))
        with pytest.raises(Exception):
            s.flush()
        s.rollback()
    workflows.delete(actor, wf.id)
    assert count() == 0 and count(ScheduleFire) == 0


def test_a_schedule_can_be_deleted(ws):
    actor, wf = ws
    made = store.create(actor, kind="workflow", target_id=wf.id, cron="@daily", timezone="UTC")
    store.delete(actor, made.id)
    assert count() == 0
    with pytest.raises(NotFound):
        store.get(actor, made.id)


def test_preview_shows_the_next_times_of_an_unsaved_expression():
    after = datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert store.preview("0 9 * * *", "Europe/Paris", 2, after) == [datetime(2026, 12, 2, 8, tzinfo=UTC),
                                                                     datetime(2026, 12, 3, 8, tzinfo=UTC)]
