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


# --- single sign-on ------------------------------------------------------------------------

AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "a-test-cookie-secret-of-some-length",
    "client_kwargs": {"prompt": "login"},
    "acme": {"client_id": "meterbook", "client_secret": "s3cret", "display_name": "Acme ID",
             "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"},
    "okta": {"client_id": "meterbook", "client_secret": "s3cret",
             "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"},
}
IDENTITY = {"is_logged_in": True, "provider": "acme", "iss": "http://127.0.0.1:9", "sub": "acme-42",
            "email": "owner@example.com", "email_verified": True, "name": "Olivia Owner"}


def _sso_app(user: dict | None = None):
    at = app()
    at.secrets["auth"] = AUTH
    if user is not None:
        at.user = user
    return at


def _labels(at) -> list[str]:
    return [b.label for b in at.button]


def test_no_single_sign_on_without_auth_secrets(sqlite_database):
    owner()
    at = app().run()
    no_exceptions(at)
    assert not [label for label in _labels(at) if label.startswith("Sign in with")]


def test_a_button_for_each_configured_provider(sqlite_database):
    owner()
    at = _sso_app().run()
    no_exceptions(at)
    assert [label for label in _labels(at) if label.startswith("Sign in with")] == ["Sign in with Acme ID", "Sign in with Okta"]
    assert at.button(key="oidc_acme") and at.button(key="oidc_okta")


def test_the_default_provider_written_into_auth_gets_a_button(sqlite_database):
    owner()
    at = app()
    at.secrets["auth"] = {"redirect_uri": AUTH["redirect_uri"], "cookie_secret": AUTH["cookie_secret"],
                          "client_id": "meterbook", "client_secret": "s3cret",
                          "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}
    at.run()
    assert [label for label in _labels(at) if label.startswith("Sign in with")] == ["Sign in with single sign-on"]


def test_an_invitation_offers_joining_through_the_provider(sqlite_database):
    boss = owner()
    at = _sso_app()
    at.query_params["invite"] = accounts.invite(boss, "new@example.com", "editor")
    at.run()
    no_exceptions(at)
    assert "Join with Acme ID" in _labels(at)


def test_a_signed_in_identity_opens_a_meterbook_session(sqlite_database):
    boss = owner()
    at = _sso_app(IDENTITY).run()
    no_exceptions(at)
    assert at.title[0].value == "Overview"
    user = accounts.session_user(at.session_state["session_token"])
    assert user.id == boss.user_id and user.oidc_subject == "http://127.0.0.1:9|acme-42"


def test_an_uninvited_identity_is_refused_and_can_switch_account(sqlite_database):
    owner()
    at = _sso_app({**IDENTITY, "email": "stranger@example.com"}).run()
    no_exceptions(at)
    assert at.title[0].value == "Sign in to Meterbook"
    assert errors(at) == ["There is no Meterbook account for stranger@example.com. Ask a workspace admin to "
                          "invite stranger@example.com, then sign in again."]
    assert "session_token" not in at.session_state
    at.button(key="oidc_sign_out").click().run()
    assert at.user["is_logged_in"] is False


def test_sign_out_ends_the_session_and_the_identity(sqlite_database):
    owner()
    at = _sso_app(IDENTITY).run()
    token = at.session_state["session_token"]
    at.button(key="sign_out").click().run()
    no_exceptions(at)
    assert accounts.session_user(token) is None
    assert at.user["is_logged_in"] is False
