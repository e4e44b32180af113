"""The Clients page, driven through AppTest against a real SQLite database."""

from functools import partial

import pytest

from engine import clients, projects
from engine.errors import PermissionDenied
from tests import pages_helpers
from tests.factories import member, owner
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/clients.py"
open_page = partial(pages_helpers.open_page, PAGE, title="Clients")


def table(at):
    return at.dataframe[0].value if at.dataframe else None


def names(boss) -> list[str]:
    return [c.name for c in clients.list_clients(boss, include_archived=True)[0]]


def test_create_client_appears_with_its_project_count(sqlite_database):
    boss = owner()
    at = open_page()
    assert any("No clients yet" in i.value for i in at.info)
    at.text_input(key="new_client_name").input("Acme Corp")
    at.text_input(key="new_client_email").input("Ops@Acme.example")
    at.text_area(key="new_client_notes").input("Pays on time")
    at.button(key="new_client_submit").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Client “Acme Corp” created."]
    stored = clients.list_clients(boss)[0]
    assert [(c.name, c.contact_email, c.notes) for c in stored] == [("Acme Corp", "ops@acme.example", "Pays on time")]
    assert at.text_input(key="new_client_name").value == ""

    projects.create_project(boss, "Support bot", client_id=stored[0].id)
    at.run()
    row = table(at).iloc[0]
    assert (row["Name"], row["Contact email"], row["Projects"], row["Status"]) == ("Acme Corp", "ops@acme.example", 1, "Active")


def test_bad_email_and_duplicate_name_are_explained(sqlite_database):
    boss = owner()
    clients.create_client(boss, "Acme")
    at = open_page()
    at.text_input(key="new_client_name").input("Globex")
    at.text_input(key="new_client_email").input("not-an-email")
    at.button(key="new_client_submit").click().run()
    assert errors(at) == ["“not-an-email” is not an email address."]
    at.text_input(key="new_client_name").input("ACME")
    at.text_input(key="new_client_email").input("")
    at.button(key="new_client_submit").click().run()
    assert errors(at) == ["A client named “ACME” already exists."]
    assert names(boss) == ["Acme"]


def test_client_with_projects_cannot_be_deleted_and_the_page_says_why(sqlite_database):
    boss = owner()
    acme = clients.create_client(boss, "Acme")
    projects.create_project(boss, "A", client_id=acme.id)
    at = open_page()
    at.button(key="client_delete").click().run()
    assert "Delete **Acme**? This cannot be undone." in [m.value for m in at.markdown]
    at.button(key="delete_client_confirm").click().run()
    no_exceptions(at)
    assert errors(at) == [
        "“Acme” still has 1 project(s). Move them to another client or delete them first — "
        "or archive the client to hide it and keep its history."
    ]
    assert names(boss) == ["Acme"]


def test_delete_empty_client_after_confirmation(sqlite_database):
    boss = owner()
    clients.create_client(boss, "Acme")
    empty = clients.create_client(boss, "Empty")
    at = open_page()
    at.selectbox(key="client_pick").select(empty.id)
    at.button(key="client_delete").click().run()
    assert names(boss) == ["Acme", "Empty"]  # not before confirming
    at.button(key="delete_client_confirm").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Client “Empty” deleted."]
    assert names(boss) == ["Acme"]
    assert list(table(at)["Name"]) == ["Acme"]


def test_edit_archive_restore_and_search(sqlite_database):
    boss = owner()
    acme = clients.create_client(boss, "Acme")
    clients.create_client(boss, "Globex")
    at = open_page()
    at.button(key="client_edit").click().run()
    at.text_input(key="edit_client_name").input("Acme Industries")
    at.text_input(key="edit_client_email").input("hello@acme.example")
    at.button(key="edit_client_save").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Client “Acme Industries” updated."]
    stored = {c.id: c for c in clients.list_clients(boss)[0]}[acme.id]
    assert (stored.name, stored.contact_email) == ("Acme Industries", "hello@acme.example")

    at.selectbox(key="client_pick").select(acme.id)
    at.button(key="client_archive").click().run()
    assert list(table(at)["Name"]) == ["Globex"]
    at.toggle(key="client_show_archived").set_value(True).run()
    assert list(table(at)["Status"]) == ["Archived", "Active"]
    at.selectbox(key="client_pick").select(acme.id)
    at.button(key="client_archive").click().run()
    assert clients.list_clients(boss)[1] == 2

    at.text_input(key="client_search").input("glob").run()
    assert list(table(at)["Name"]) == ["Globex"]
    at.text_input(key="client_search").input("zzz").run()
    assert any("No clients match" in i.value for i in at.info)


def test_editor_can_write_but_viewer_sees_read_only_list(sqlite_database):
    boss = owner()
    viewer = member(boss, "viewer@example.com", "viewer")
    clients.create_client(boss, "Acme")
    at = open_page("viewer@example.com")
    assert list(table(at)["Name"]) == ["Acme"]
    for key in ("new_client_name", "client_pick", "client_delete"):
        with pytest.raises(KeyError):
            at.get_by_key(key)
    with pytest.raises(PermissionDenied):
        clients.create_client(viewer, "Sneaky")

    member(boss, "editor@example.com", "editor")
    at = open_page("editor@example.com")
    at.text_input(key="new_client_name").input("Globex")
    at.button(key="new_client_submit").click().run()
    assert names(boss) == ["Acme", "Globex"]


def test_pagination_and_a_new_search_starts_on_page_one(sqlite_database):
    boss = owner()
    for i in range(27):
        clients.create_client(boss, f"Client {i:02d}")
    at = open_page()
    assert len(table(at)) == 25
    assert "Page 1 of 2 · 27 clients" in [c.value for c in at.caption]
    at.pagination(key="clients_page").set_value(2).run()
    assert list(table(at)["Name"]) == ["Client 25", "Client 26"]
    at.text_input(key="client_search").input("client").run()
    assert table(at)["Name"].iloc[0] == "Client 00"
    assert "Page 1 of 2 · 27 clients" in [c.value for c in at.caption]
