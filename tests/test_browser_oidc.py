"""Single sign-on in a real headless Chromium: ``st.login`` against a local OpenID Connect provider.

The app runs as ``python -m engine up`` starts it, with a temporary secrets file (found
through ``STREAMLIT_SECRETS_FILES``, Streamlit's ``secrets.files`` option) that points
``[auth.acme]`` at ``tests/fakes/oidc_provider.py``. Streamlit's own routes and Authlib do
the whole exchange: discovery, the redirect with PKCE and nonce, the code for tokens, and
the RS256 signature checked against the provider's JWKS.
"""

from __future__ import annotations

import secrets

import pytest

from engine import demo
from tests.browser import free_port, launch, require_chromium, serve_app, settle
from tests.fakes.oidc_provider import FakeOidcProvider

pytestmark = pytest.mark.browser

PERSON = {"sub": "acme-7f3a", "email": demo.DEMO_EMAIL.upper(), "email_verified": True, "name": "Alex M."}


@pytest.fixture(scope="module")
def app_with_sso(tmp_path_factory):
    require_chromium()
    tmp = tmp_path_factory.mktemp("sso")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client_secret = secrets.token_urlsafe(16)
    with FakeOidcProvider("meterbook-test", client_secret, f"{url}/oauth2callback", person=dict(PERSON)) as idp:
        (tmp / "secrets.toml").write_text(
            "[auth]\n"
            f'redirect_uri = "{url}/oauth2callback"\n'
            f'cookie_secret = "{secrets.token_urlsafe(32)}"\n'
            "[auth.acme]\n"
            'display_name = "Acme ID"\n'
            'client_id = "meterbook-test"\n'
            f'client_secret = "{client_secret}"\n'
            f'server_metadata_url = "{idp.metadata_url}"\n'
        )
        env = {"METERBOOK_DEMO_ROWS": "500", "STREAMLIT_SECRETS_FILES": str(tmp / "secrets.toml")}
        with serve_app(tmp, demo=True, port=port, env=env) as app:
            yield app, idp, tmp


def test_sign_in_with_the_identity_provider(app_with_sso):
    from playwright.sync_api import expect, sync_playwright

    app, idp, tmp = app_with_sso
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        page.goto(app.url)
        settle(page)
        expect(page.get_by_role("heading", name="Sign in to Meterbook")).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Sign in with Acme ID").click()

        # Out to the provider and back; the identity maps to the demo owner by email.
        expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=30_000)
        expect(page.get_by_text(f"Alex Morgan · {demo.DEMO_EMAIL}")).to_be_visible(timeout=30_000)
        assert len(idp.issued) == 1 and idp.issued[0]["sub"] == PERSON["sub"]
        page.wait_for_function("document.cookie.includes('meterbook_session=')", timeout=30_000)
        page.screenshot(path=str(tmp / "sso-overview.png"), full_page=True)

        # A refresh keeps the Meterbook session, without another round trip to the provider.
        page.reload()
        settle(page)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=30_000)
        assert len(idp.issued) == 1

        # Signing out ends both sessions: the sign-in page does not map the identity straight back.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in with Acme ID")).to_be_visible(timeout=30_000)
        settle(page)
        expect(page.get_by_role("heading", name="Sign in to Meterbook")).to_be_visible()
        page.screenshot(path=str(tmp / "sso-signed-out.png"), full_page=True)
        names = {c["name"] for c in page.context.cookies()}
        assert "_streamlit_user" not in names
        browser.close()

    _check_database(app.database_url, idp.issuer)


def _check_database(database_url: str, issuer: str) -> None:
    from sqlalchemy import select

    from engine import db
    from engine.models import AuthSession, User

    db.use_engine(db.make_engine(database_url))
    try:
        with db.read_session() as s:
            user = s.scalar(select(User).where(User.email == demo.DEMO_EMAIL))
            sessions = s.scalars(select(AuthSession).where(AuthSession.user_id == user.id)).all()
    finally:
        db.use_engine(None)
    assert user.oidc_subject == f"{issuer}|{PERSON['sub']}"
    assert len(sessions) == 1 and sessions[0].revoked_at is not None
