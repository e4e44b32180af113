from engine import accounts
from tests.factories import PASSWORD, owner
from tests.pages_helpers import app, errors, no_exceptions, signed_in


def test_first_run_creates_the_owner_and_signs_in(sqlite_database):
    at = app().run()
    no_exceptions(at)
    assert at.title[0].value == "Welcome to Meterbook"
    at.text_input[0].input("Olivia Owner")
    at.text_input[1].input("olivia@example.com")
    at.text_input[2].input(PASSWORD)
    at.text_input[3].input("Northwind")
    at.button[0].click().run()
    no_exceptions(at)
    assert at.title[0].value == "Overview"
    assert [a.workspace.name for a in accounts.workspaces_for(accounts.authenticate("olivia@example.com", PASSWORD).id)] == ["Northwind"]


def test_first_run_with_weak_password_says_why_and_stores_nothing(sqlite_database):
    at = app().run()
    for field, value in zip(at.text_input, ["Olivia", "olivia@example.com", "short", "Northwind"]):
        field.input(value)
    at.button[0].click().run()
    assert any("at least 10 characters" in e for e in errors(at))
    assert accounts.needs_first_run()


def test_sign_in_with_wrong_then_right_password(sqlite_database):
    owner()
    at = app().run()
    assert at.title[0].value == "Sign in to Meterbook"
    at.text_input(key="login_email").input("owner@example.com")
    at.text_input(key="login_password").input("not the password")
    at.button[0].click().run()
    assert errors(at) == ["Email or password is incorrect."]
    at.text_input(key="login_password").input(PASSWORD)
    at.button[0].click().run()
    no_exceptions(at)
    assert at.title[0].value == "Overview"


def test_sign_out_revokes_the_session(sqlite_database):
    owner()
    at = signed_in("owner@example.com", PASSWORD)
    token = at.session_state["session_token"]
    at.button(key="sign_out").click().run()
    assert at.title[0].value == "Sign in to Meterbook"
    assert accounts.session_user(token) is None


def test_invitation_link_joins_the_workspace(sqlite_database):
    boss = owner()
    token = accounts.invite(boss, "new@example.com", "editor")
    at = app()
    at.query_params["invite"] = token
    at.run()
    no_exceptions(at)
    assert "new@example.com" in at.markdown[0].value
    at.text_input[0].input("New Person")
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    no_exceptions(at)
    assert at.title[0].value == "Overview"


def test_overview_empty_state(sqlite_database):
    owner()
    at = signed_in("owner@example.com", PASSWORD)
    no_exceptions(at)
    assert at.metric[0].value == "$0.00"
    assert any("No AI usage recorded yet" in i.value for i in at.info)
