"""The Settings page, driven through AppTest against a real SQLite database."""

from decimal import Decimal
from functools import partial

import pytest

from engine import accounts, api_keys, audit, pricing, projects
from engine.config import get_settings
from engine.errors import InvalidCredentials, NotFound, PermissionDenied
from tests import pages_helpers
from tests.factories import PASSWORD, member, owner
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/settings.py"
open_page = partial(pages_helpers.open_page, PAGE, title="Settings")


def table_with(at, column: str):
    """The dataframe that has ``column`` (each tab shows its own table)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, [list(d.value.columns) for d in at.dataframe]
    return found[0]


def absent(at, *keys: str) -> None:
    for key in keys:
        with pytest.raises(KeyError):
            at.get_by_key(key)


def infos(at) -> list[str]:
    return [i.value for i in at.info]


def role_of(boss, email: str) -> str:
    return next(m.role for m in accounts.list_members(boss) if m.email == email)


def everything_shown(at) -> str:
    texts = [e.value for kind in ("code", "markdown", "caption", "success", "warning", "info", "error") for e in getattr(at, kind)]
    return "\n".join(map(str, texts)) + "\n".join(d.value.to_csv() for d in at.dataframe)


# --- workspace ----------------------------------------------------------------------------


def test_owner_renames_workspace_and_changes_its_time_zone(sqlite_database):
    boss = owner()
    at = open_page()
    at.text_input(key="workspace_name").input("Acme Europe")
    at.selectbox(key="workspace_timezone").select("Europe/Berlin")
    at.button(key="workspace_save").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Workspace settings saved."]
    workspace, _ = accounts.get_workspace(boss)
    assert (workspace.name, workspace.timezone) == ("Acme Europe", "Europe/Berlin")
    assert at.session_state["workspace_tz"] == "Europe/Berlin"  # the app now shows times in it

    at.text_input(key="workspace_name").input("   ")
    at.button(key="workspace_save").click().run()
    assert errors(at) == ["Workspace name cannot be empty."]
    assert accounts.get_workspace(boss)[0].name == "Acme Europe"


def test_editor_sees_workspace_settings_read_only(sqlite_database):
    boss = owner()
    editor = member(boss, "editor@example.com", "editor")
    at = open_page("editor@example.com")
    absent(at, "workspace_name", "workspace_save")
    assert at.table[0].value.loc["Name"].iloc[0] == "Acme Analytics"
    assert "Only admins and owners can change workspace settings. Your role is editor." in infos(at)
    with pytest.raises(PermissionDenied):
        accounts.update_workspace(editor, name="Hijacked", timezone="UTC")


# --- members ------------------------------------------------------------------------------


def test_admin_changes_a_members_role(sqlite_database):
    boss = owner()
    member(boss, "admin@example.com", "admin")
    editor = member(boss, "editor@example.com", "editor")
    at = open_page("admin@example.com")
    assert sorted(table_with(at, "Role")["Email"]) == ["admin@example.com", "editor@example.com", "owner@example.com"]
    at.selectbox(key="member_pick").select(editor.user_id).run()
    at.selectbox(key=f"member_role_{editor.user_id}").select("viewer")
    at.button(key="member_change_role").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["editor@example.com is now a viewer."]
    assert role_of(boss, "editor@example.com") == "viewer"
    roles = dict(zip(table_with(at, "Role")["Email"], table_with(at, "Role")["Role"]))
    assert roles["editor@example.com"] == "Viewer"


def test_admin_cannot_demote_the_owner_and_sees_why(sqlite_database):
    boss = owner()
    member(boss, "admin@example.com", "admin")
    at = open_page("admin@example.com")
    at.selectbox(key="member_pick").select(boss.user_id).run()
    at.selectbox(key=f"member_role_{boss.user_id}").select("viewer")
    at.button(key="member_change_role").click().run()
    no_exceptions(at)
    assert errors(at) == ["Only an owner can change or remove an owner, or make someone an owner."]
    assert role_of(boss, "owner@example.com") == "owner"


def test_remove_member_after_confirmation(sqlite_database):
    boss = owner()
    leaver = member(boss, "leaver@example.com", "editor")
    at = open_page()
    at.selectbox(key="member_pick").select(leaver.user_id).run()
    at.button(key="remove_member_open").click().run()
    assert "Remove **leaver@example.com** from this workspace? They lose access at once." in [m.value for m in at.markdown]
    assert role_of(boss, "leaver@example.com") == "editor"  # nothing yet
    at.button(key="confirm_ok").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["leaver@example.com was removed from the workspace."]
    assert [m.email for m in accounts.list_members(boss)] == ["owner@example.com"]


def test_editor_sees_members_but_no_member_controls(sqlite_database):
    boss = owner()
    editor = member(boss, "editor@example.com", "editor")
    at = open_page("editor@example.com")
    assert sorted(table_with(at, "Role")["Email"]) == ["editor@example.com", "owner@example.com"]
    absent(at, "member_pick", "member_change_role", "remove_member_open")
    assert "Only admins and owners can change roles or remove members. Your role is editor." in infos(at)
    for tab in ("invite people", "manage API keys", "read the audit log"):
        assert f"Only admins and owners can {tab}. Your role is editor." in infos(at)
    absent(at, "invite_email", "api_key_name", "price_provider")
    with pytest.raises(PermissionDenied):
        accounts.change_role(editor, boss.user_id, "viewer")


# --- invitations --------------------------------------------------------------------------


def test_invitation_link_is_shown_once_and_can_be_revoked(sqlite_database):
    boss = owner()
    at = open_page()
    at.text_input(key="invite_email").input("New.Person@Example.com")
    at.selectbox(key="invite_role").select("viewer")
    at.button(key="invite_submit").click().run()
    no_exceptions(at)
    links = [c.value for c in at.code]
    assert len(links) == 1 and links[0].startswith(f"{get_settings().base_url.rstrip('/')}/?invite=")
    token = links[0].split("?invite=", 1)[1]
    assert accounts.invitation_email(token) == "new.person@example.com"
    assert any("shown only once and expires in 7 days" in w.value for w in at.warning)
    assert at.text_input(key="invite_email").value == ""
    pending = table_with(at, "Expires")
    assert list(zip(pending["Email"], pending["Role"])) == [("new.person@example.com", "Viewer")]

    at.run()  # any later run: the link is gone for good
    assert token not in everything_shown(at)

    at.button(key="revoke_invitation_open").click().run()
    at.button(key="confirm_ok").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["The invitation for new.person@example.com (viewer) was revoked."]
    assert accounts.list_invitations(boss) == []
    with pytest.raises(NotFound):
        accounts.invitation_email(token)


def test_inviting_an_existing_member_is_explained(sqlite_database):
    owner()
    at = open_page()
    at.text_input(key="invite_email").input("owner@example.com")
    at.button(key="invite_submit").click().run()
    assert errors(at) == ["owner@example.com is already a member of this workspace."]
    assert not at.code


# --- API keys -----------------------------------------------------------------------------


def test_api_key_secret_is_shown_once_listed_by_prefix_and_revocable(sqlite_database):
    boss = owner()
    at = open_page()
    at.text_input(key="api_key_name").input("CI")
    at.button(key="api_key_submit").click().run()
    assert errors(at) == [f"Choose at least one scope from: {', '.join(api_keys.SCOPES)}."]
    assert api_keys.list_api_keys(boss) == []

    at.multiselect(key="api_key_scopes").select("usage:read").select("generate")
    at.button(key="api_key_submit").click().run()
    no_exceptions(at)
    secrets = [c.value for c in at.code]
    assert len(secrets) == 1
    secret = secrets[0]
    assert any("shown only this once" in w.value for w in at.warning)
    (key,) = api_keys.list_api_keys(boss)
    assert api_keys.verify_api_key(secret, "usage:read").id == key.id
    listed = table_with(at, "Prefix")
    assert list(zip(listed["Name"], listed["Prefix"], listed["Scopes"], listed["Status"])) == [
        ("CI", key.prefix, "generate, usage:read", "Active")
    ]
    assert secret not in listed.to_csv()

    at.run()
    assert secret not in everything_shown(at)

    at.button(key="revoke_key_open").click().run()
    assert f"Revoke **CI ({key.prefix})**? Anything using it stops working at once. This cannot be undone." in [
        m.value for m in at.markdown
    ]
    at.button(key="confirm_ok").click().run()
    no_exceptions(at)
    assert list(table_with(at, "Prefix")["Status"]) == ["Revoked"]
    absent(at, "revoke_key_open")  # nothing left to revoke
    with pytest.raises(InvalidCredentials):
        api_keys.verify_api_key(secret, "usage:read")


# --- prices -------------------------------------------------------------------------------


def test_admin_adds_and_deletes_a_price_override(sqlite_database):
    boss = owner()
    at = open_page()
    assert any("No price overrides" in i for i in infos(at))
    at.text_input(key="price_provider").input("openai")
    at.text_input(key="price_model").input("gpt-4o")
    at.text_input(key="price_input").input("abc")
    at.button(key="price_submit").click().run()
    assert errors(at) == ["Input price must be a number of dollars, like 0.15."]
    assert pricing.list_overrides(boss) == []

    at.text_input(key="price_input").input("2.5")
    at.text_input(key="price_output").input("10")
    at.text_input(key="price_cached").input("1.25")
    at.text_input(key="price_note").input("Enterprise deal")
    at.button(key="price_submit").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Price override for openai/gpt-4o added."]
    (o,) = pricing.list_overrides(boss)
    assert (o.provider, o.model, o.input_mtok, o.output_mtok, o.cache_read_mtok, o.note) == (
        "openai", "gpt-4o", Decimal("2.5"), Decimal("10"), Decimal("1.25"), "Enterprise deal"
    )
    row = table_with(at, "Input $/MTok").iloc[0]
    assert (row["Model"], row["Input $/MTok"], row["Output $/MTok"], row["Cached input $/MTok"]) == (
        "gpt-4o", "$2.50", "$10.00", "$1.25"
    )
    assert at.text_input(key="price_model").value == ""

    at.button(key="delete_price_open").click().run()
    at.button(key="confirm_ok").click().run()
    no_exceptions(at)
    assert pricing.list_overrides(boss) == []


def test_viewer_sees_prices_but_cannot_change_them(sqlite_database):
    boss = owner()
    viewer = member(boss, "viewer@example.com", "viewer")
    pricing.set_override(boss, provider="openai", model="gpt-4o", input_mtok="2", output_mtok="8")
    at = open_page("viewer@example.com")
    assert list(table_with(at, "Input $/MTok")["Model"]) == ["gpt-4o"]
    absent(at, "price_provider", "delete_price_open")
    assert "Only admins and owners can change prices." in [c.value for c in at.caption]
    with pytest.raises(PermissionDenied):
        pricing.set_override(viewer, provider="openai", model="gpt-4o", input_mtok="0", output_mtok="0")


# --- audit log ----------------------------------------------------------------------------


def test_audit_log_lists_what_was_done_newest_first_with_pages(sqlite_database):
    boss = owner()
    at = open_page()
    at.text_input(key="invite_email").input("someone@example.com")
    at.button(key="invite_submit").click().run()
    log = table_with(at, "Action")
    assert list(log["Action"]) == ["invitation.created", "workspace.created"]
    assert list(log["Who"]) == ["owner@example.com", "owner@example.com"]
    assert "someone@example.com" in log["Detail"].iloc[0]

    for i in range(50):
        projects.create_project(boss, f"P{i}")
    at.run()
    assert len(table_with(at, "Action")) == 50
    assert "Page 1 of 2 · 52 events, newest first" in [c.value for c in at.caption]
    at.pagination(key="audit_page").set_value(2).run()
    assert list(table_with(at, "Action")["Action"]) == ["invitation.created", "workspace.created"]
    assert audit.list_events(boss)[1] == 52


# --- account ------------------------------------------------------------------------------


def test_password_change(sqlite_database):
    owner()
    at = open_page()
    at.text_input(key="current_password").input("wrong password!")
    at.text_input(key="new_password").input("a brand new phrase")
    at.text_input(key="repeat_password").input("a brand new phrase")
    at.button(key="password_submit").click().run()
    no_exceptions(at)
    assert errors(at) == ["Your current password is incorrect."]

    at.text_input(key="current_password").input(PASSWORD)
    at.text_input(key="new_password").input("a brand new phrase")
    at.text_input(key="repeat_password").input("a different phrase")
    at.button(key="password_submit").click().run()
    assert errors(at) == ["The new passwords do not match; type the same one twice."]
    accounts.authenticate("owner@example.com", PASSWORD)  # still the old one

    at.text_input(key="current_password").input(PASSWORD)
    at.text_input(key="new_password").input("a brand new phrase")
    at.text_input(key="repeat_password").input("a brand new phrase")
    at.button(key="password_submit").click().run()
    assert not errors(at)
    assert [s.value for s in at.success] == ["Your password was changed."]
    accounts.authenticate("owner@example.com", "a brand new phrase")
    with pytest.raises(InvalidCredentials):
        accounts.authenticate("owner@example.com", PASSWORD)
