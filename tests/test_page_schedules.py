"""The Schedules page through AppTest: the empty state and the sidecar warning, a new workflow schedule
with its preview and a refused bad expression, the list with missed firings, pause/resume, one
schedule's firings, delete with confirmation, and a viewer who may only look."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest
from sqlalchemy import func, select

from engine import db
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.schedules import store
from engine.schedules.models import Schedule, ScheduleFire, SidecarLease
from engine.workflows import store as workflows
from tests import pages_helpers
from tests.factories import member, owner
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/schedules.py"
open_page = partial(pages_helpers.open_page, PAGE)
FLOW = "name: Nightly digest\nnodes:\n  - {id: hello, type: transform, params: {value: hi}}\n"


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    actor = owner()
    yield actor, workflows.create(actor, FLOW)
    get_settings.cache_clear()


def text(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [w.value for w in at.warning]
                     + [i.value for i in at.info])


def count() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(Schedule))


def test_empty_state_says_no_sidecar_runs_and_a_schedule_is_created_from_the_form(boss):
    actor, wf = boss
    at = open_page()
    assert at.title[0].value == "Schedules"
    assert "No sidecar has run yet" in text(at) and "No schedules yet" in text(at)
    at.text_input(key="sch_form_new_cron").set_value("every morning").run()
    assert "is not a cron expression" in text(at)
    at.button(key="sch_form_new_save").click().run()
    assert "is not a cron expression" in "\n".join(errors(at)) and count() == 0
    at.text_input(key="sch_form_new_cron").set_value("30 7 * * 1-5").run()
    at.text_input(key="sch_form_new_tz").set_value("Europe/Paris").run()
    assert "Next:" in text(at)
    at.button(key="sch_form_new_save").click().run()
    no_exceptions(at)
    [made] = store.list_schedules(actor)
    assert (made.cron, made.timezone, made.name, made.kind) == ("30 7 * * 1-5", "Europe/Paris", "Nightly digest",
                                                                "workflow")
    assert at.query_params["schedule"] in (str(made.id), [str(made.id)])


def test_the_list_shows_missed_firings_and_pause_resume_work(boss):
    actor, wf = boss
    made = store.create(actor, kind="workflow", target_id=wf.id, cron="* * * * *", timezone="UTC")
    now = utcnow().replace(second=0, microsecond=0)
    with db.transaction() as s:
        s.add(ScheduleFire(schedule_id=made.id, workspace_id=actor.workspace_id, fire_time=now - timedelta(minutes=5),
                           status="missed", detail="no sidecar was running"))
        s.add(SidecarLease(name="scheduler", holder="sidecar-1", expires_at=now - timedelta(minutes=1),
                           renewed_at=now - timedelta(minutes=2)))
    at = open_page()
    assert "stopped renewing its lease" in text(at)
    assert "1 missed" in text(at)
    at.button(key=f"sch_pause_{made.id}").click().run()
    assert store.get(actor, made.id).paused
    at.button(key=f"sch_resume_{made.id}").click().run()
    assert not store.get(actor, made.id).paused
    at.button(key=f"sch_open_{made.id}").click().run()
    no_exceptions(at)
    assert "no sidecar was running" in at.dataframe[0].value.to_string()


def test_one_schedule_is_edited_and_deleted_only_after_confirming(boss):
    actor, wf = boss
    made = store.create(actor, kind="workflow", target_id=wf.id, cron="@daily", timezone="UTC")
    at = open_page(query={"schedule": str(made.id)})
    assert "No firings yet" in text(at)
    key = f"sch_form_{made.id}"
    at.text_area(key=f"{key}_inputs").set_value("{not json").run()
    at.button(key=f"{key}_save").click().run()
    assert "not JSON" in "\n".join(errors(at)) and store.get(actor, made.id).version == 1
    at.text_input(key=f"{key}_cron").set_value("0 6 * * *").run()
    at.text_area(key=f"{key}_inputs").set_value("{}").run()
    at.button(key=f"{key}_save").click().run()
    assert store.get(actor, made.id).cron == "0 6 * * *"
    assert not [b for b in at.button if b.key == "sch_delete"]  # hidden until confirmed
    at.checkbox(key="sch_delete_confirm").check().run()
    at.button(key="sch_delete").click().run()
    no_exceptions(at)
    assert count() == 0


def test_a_viewer_sees_schedules_but_no_form_or_buttons(boss):
    actor, wf = boss
    made = store.create(actor, kind="workflow", target_id=wf.id, cron="@daily", timezone="UTC")
    member(actor, "vera@example.com", "viewer")
    at = open_page("vera@example.com")
    assert not [b for b in at.button if b.key in (f"sch_pause_{made.id}", "sch_form_new_save")]
    assert at.dataframe[0].value["schedule"].tolist() == ["Nightly digest"]
