"""The Projects page, driven through AppTest against a real SQLite database."""

from decimal import Decimal
from functools import partial

import pytest

from engine import clients, db, projects, usage
from engine.errors import PermissionDenied
from tests import pages_helpers
from tests.factories import member, owner
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/projects.py"
open_page = partial(pages_helpers.open_page, PAGE, title="Projects")


def table_names(at) -> list[str]:
    return list(at.dataframe[0].value["Name"]) if at.dataframe else []


def create(at, name, *, budget="", client=None):
    at.text_input(key="new_project_name").input(name)
    at.text_input(key="new_project_budget").input(budget)
    if client is not None:
        at.selectbox(key="new_project_client").select(client)
    at.button(key="new_project_submit").click().run()
    no_exceptions(at)
    return at


def test_empty_state_then_create_shows_it_in_the_list_and_stores_it(sqlite_database):
    boss = owner()
    acme = clients.create_client(boss, "Acme Corp")
    at = open_page()
    assert any("No projects yet" in i.value for i in at.info)
    assert not at.dataframe

    create(at, "Support bot", budget="$2,500", client=acme.id)

    assert [s.value for s in at.success] == ["Project “Support bot” created."]
    assert table_names(at) == ["Support bot"]
    row = at.dataframe[0].value.iloc[0]
    assert (row["Client"], row["Budget"], row["Spent"], row["Status"]) == ("Acme Corp", "$2,500.00", "$0.00", "Active")
    stored, total = projects.list_projects(boss)
    assert total == 1
    assert (stored[0].name, stored[0].client_id, stored[0].budget_usd) == ("Support bot", acme.id, Decimal("2500.00"))
    # The form is emptied for the next project.
    assert at.text_input(key="new_project_name").value == ""


def test_duplicate_name_shows_the_conflict_and_stores_nothing_new(sqlite_database):
    boss = owner()
    projects.create_project(boss, "Research")
    at = open_page()
    create(at, "research")
    assert errors(at) == ["A project named “research” already exists."]
    assert not at.success
    assert [p.name for p in projects.list_projects(boss)[0]] == ["Research"]
    # What was typed stays, so it can be corrected.
    assert at.text_input(key="new_project_name").value == "research"


def test_invalid_budget_is_explained(sqlite_database):
    boss = owner()
    at = open_page()
    create(at, "Budgeted", budget="abc")
    assert errors(at) == ["Budget must be an amount in dollars, like 2500 or 99.50."]
    assert projects.list_projects(boss)[1] == 0


def test_viewer_sees_no_controls_and_the_engine_refuses_anyway(sqlite_database):
    boss = owner()
    viewer = member(boss, "viewer@example.com", "viewer")
    projects.create_project(boss, "Visible")
    at = open_page("viewer@example.com")
    assert table_names(at) == ["Visible"]
    for key in ("new_project_name", "new_project_submit", "project_pick", "project_edit", "project_delete"):
        with pytest.raises(KeyError):
            at.get_by_key(key)
    with pytest.raises(PermissionDenied, match="viewer"):
        projects.create_project(viewer, "Sneaky")
    assert projects.list_projects(boss)[1] == 1


def test_delete_asks_for_confirmation_first(sqlite_database):
    boss = owner()
    projects.create_project(boss, "Alpha")
    doomed = projects.create_project(boss, "Doomed")
    at = open_page()
    at.selectbox(key="project_pick").select(doomed.id)
    at.button(key="project_delete").click().run()
    no_exceptions(at)
    assert "Delete **Doomed**? This cannot be undone." in [m.value for m in at.markdown]
    assert projects.list_projects(boss)[1] == 2  # nothing happens before confirming

    at.button(key="delete_project_cancel").click().run()
    with pytest.raises(KeyError):
        at.get_by_key("delete_project_confirm")
    assert projects.list_projects(boss)[1] == 2

    at.selectbox(key="project_pick").select(doomed.id)
    at.button(key="project_delete").click().run()
    at.button(key="delete_project_confirm").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Project “Doomed” deleted."]
    assert table_names(at) == ["Alpha"]
    assert [p.name for p in projects.list_projects(boss)[0]] == ["Alpha"]


def test_project_with_usage_is_not_deleted_and_the_page_says_archive_instead(sqlite_database):
    boss = owner()
    charged = projects.create_project(boss, "Charged", budget_usd="10")
    with db.transaction() as s:
        usage.record(s, workspace_id=boss.workspace_id, project_id=charged.id, provider="openai", model="gpt-4o",
                     input_tokens=10, output_tokens=5, cost=Decimal("2.5"))
    at = open_page()
    row = at.dataframe[0].value.iloc[0]
    assert (row["Spent"], row["Budget used"]) == ("$2.50", pytest.approx(0.25))
    at.button(key="project_delete").click().run()
    at.button(key="delete_project_confirm").click().run()
    no_exceptions(at)
    assert errors(at) == ["“Charged” has recorded usage, which must stay in the ledger. Archive the project instead."]
    assert projects.list_projects(boss)[1] == 1


def test_edit_archive_and_restore(sqlite_database):
    boss = owner()
    acme = clients.create_client(boss, "Acme")
    p = projects.create_project(boss, "Old name")
    at = open_page()
    at.button(key="project_edit").click().run()
    at.text_input(key="edit_project_name").input("New name")
    at.selectbox(key="edit_project_client").select(acme.id)
    at.text_input(key="edit_project_budget").input("not money")
    at.button(key="edit_project_save").click().run()
    assert errors(at) == ["Budget must be an amount in dollars, like 2500 or 99.50."]
    assert projects.get_project(boss, p.id).name == "Old name"

    at.text_input(key="edit_project_budget").input("99.50")
    at.button(key="edit_project_save").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Project “New name” updated."]
    stored = projects.get_project(boss, p.id)
    assert (stored.name, stored.client_id, stored.budget_usd) == ("New name", acme.id, Decimal("99.50"))

    at.button(key="project_archive").click().run()
    assert projects.get_project(boss, p.id).archived_at is not None
    assert any("Every project is archived" in i.value for i in at.info)
    at.toggle(key="project_show_archived").set_value(True).run()
    assert at.dataframe[0].value.iloc[0]["Status"] == "Archived"
    assert at.button(key="project_archive").label == "Restore"
    at.button(key="project_archive").click().run()
    assert projects.get_project(boss, p.id).archived_at is None


def test_search_client_filter_and_pagination(sqlite_database):
    boss = owner()
    acme = clients.create_client(boss, "Acme")
    for i in range(30):
        projects.create_project(boss, f"Project {i:02d}", client_id=acme.id if i < 3 else None)
    at = open_page()
    assert len(table_names(at)) == 25
    assert "Page 1 of 2 · 30 projects" in [c.value for c in at.caption]
    at.pagination(key="projects_page").set_value(2).run()
    assert table_names(at) == [f"Project {i}" for i in range(25, 30)]
    assert "Page 2 of 2 · 30 projects" in [c.value for c in at.caption]

    at.text_input(key="project_search").input("proj").run()  # a new search starts from page 1
    assert table_names(at)[0] == "Project 00"
    assert "Page 1 of 2 · 30 projects" in [c.value for c in at.caption]
    at.text_input(key="project_search").input("project 1").run()
    assert table_names(at) == [f"Project {i}" for i in range(10, 20)]
    at.text_input(key="project_search").input("").run()
    at.selectbox(key="project_client_filter").select(acme.id).run()
    assert table_names(at) == ["Project 00", "Project 01", "Project 02"]
    at.text_input(key="project_search").input("nothing like this").run()
    assert any("No projects match" in i.value for i in at.info)


def test_a_page_that_empties_falls_back_to_the_last_page(sqlite_database):
    boss = owner()
    made = [projects.create_project(boss, f"Project {i:02d}") for i in range(27)]
    at = open_page()
    at.pagination(key="projects_page").set_value(2).run()
    assert table_names(at) == ["Project 25", "Project 26"]
    for p in made[25:]:
        projects.delete_project(boss, p.id)
    at.run()
    assert len(table_names(at)) == 25
    assert "Page 1 of 1 · 25 projects" in [c.value for c in at.caption]


def test_a_budget_too_large_to_store_is_refused_with_a_message(sqlite_database):
    boss = owner()
    at = open_page()
    create(at, "Huge", budget="999999999")
    assert errors(at) == ["Budget must be under one hundred million dollars."]
    assert projects.list_projects(boss)[1] == 0
