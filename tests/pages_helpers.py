"""Driving the app with Streamlit's AppTest, signed in as a given person."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamlit.testing.v1 import AppTest

from engine import accounts
from engine.config import PROJECT_ROOT
from pages._server import route_only_through_navigation
from tests.factories import PASSWORD

route_only_through_navigation()

APP = str(PROJECT_ROOT / "streamlit_app.py")
TIMEOUT = 30


def app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def signed_in(email: str, password: str, page: str | None = None, *,
              query: Mapping[str, str] | None = None, state: Mapping[str, Any] | None = None) -> AppTest:
    """An app whose session already holds a real sign-in token for this user, on ``page`` if given.

    ``query`` and ``state`` are in place before the page's first run, as when a shared link opens
    it (the URL is there before its widgets exist) or an earlier visit left a widget's value.
    """
    token, _ = accounts.login(email, password)
    at = app()
    at.session_state["session_token"] = token
    at.run()
    if page or query or state:
        if page:
            at.switch_page(page)
        for key, value in (state or {}).items():
            at.session_state[key] = value
        at.query_params.update(query or {})
        at.run()
    return at


def open_page(page: str, email: str = "owner@example.com", *, password: str = PASSWORD,
              title: str | None = None, query: Mapping[str, str] | None = None,
              state: Mapping[str, Any] | None = None) -> AppTest:
    """``page`` as this user sees it: drawn without an exception and, given ``title``, under that title.

    A page's tests bind their page (and title) once: ``open_page = partial(pages_helpers.open_page,
    PAGE, title="Reports")``.
    """
    at = signed_in(email, password, page, query=query, state=state)
    no_exceptions(at)
    if title is not None:
        assert [t.value for t in at.title][:1] == [title]
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
