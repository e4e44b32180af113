"""Driving the app with Streamlit's AppTest, signed in as a given person."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from engine import accounts
from engine.config import PROJECT_ROOT
from pages._server import route_only_through_navigation

route_only_through_navigation()

APP = str(PROJECT_ROOT / "streamlit_app.py")
TIMEOUT = 30


def app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def signed_in(email: str, password: str, page: str | None = None) -> AppTest:
    """An app whose session already holds a real sign-in token for this user."""
    token, _ = accounts.login(email, password)
    at = app()
    at.session_state["session_token"] = token
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
