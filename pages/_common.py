"""What every page shares: the signed-in actor, the session cookie, and turning engine errors into messages.

Not a page itself: ``st.navigation`` routes only the pages that streamlit_app.py names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import NoReturn, TypeVar
from zoneinfo import ZoneInfo

import streamlit as st

from engine import accounts
from engine.billing.limits import PlanLimitReached
from engine.errors import MeterbookError
from engine.models import User
from engine.permissions import Actor, can

SESSION_COOKIE = "meterbook_session"
T = TypeVar("T")


# --- who is signed in ---------------------------------------------------------------------


def session_token() -> str | None:
    """The token of this browser: from this tab's state, else from the cookie a refresh sends."""
    token = st.session_state.get("session_token")
    if token:
        return token
    return _cookie()


def _cookie() -> str | None:
    try:
        value = st.context.cookies.get(SESSION_COOKIE)
    except Exception:  # no browser context (bare script runs)
        return None
    return value if isinstance(value, str) else None


def signed_in_user() -> User | None:
    token = session_token()
    user = accounts.session_user(token)
    if user is None:
        st.session_state.pop("session_token", None)
        return None
    st.session_state["session_token"] = token
    return user


def remember_session(token: str) -> None:
    st.session_state["session_token"] = token


def write_session_cookie() -> None:
    """Keep the session token in a cookie so a browser refresh stays signed in.

    Streamlit cannot set cookies from Python, so a small script sets it; the server only
    ever trusts the token after looking up its hash in the sessions table.
    """
    token = st.session_state.get("session_token")
    if token and _cookie() != token:
        _cookie_script(f"{SESSION_COOKIE}={token}; path=/; max-age={14 * 86400}; SameSite=Strict")


def clear_session_cookie() -> None:
    if _cookie():
        _cookie_script(f"{SESSION_COOKIE}=; path=/; max-age=0; SameSite=Strict")


def _cookie_script(cookie: str) -> None:
    st.html(f"<script>document.cookie = {json.dumps(cookie)};</script>", unsafe_allow_javascript=True, width=1)


def sign_out() -> NoReturn:
    """End the Meterbook session and start the run afresh on the sign-in page.

    Someone who came through ``st.login`` is signed out of Streamlit's identity cookie too
    (``st.logout`` redirects through /auth/logout), or the sign-in page would map the same
    identity straight back to a new session.
    """
    accounts.end_session(st.session_state.get("session_token") or session_token())
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state["signed_out"] = True
    if st.user.get("is_logged_in"):
        st.logout()
        st.stop()  # not st.rerun(): a new run could drop the redirect before it reaches the browser
    st.rerun()


def actor() -> Actor:
    """The signed-in actor; a page reached without going through the sign-in gate shows nothing."""
    if "actor" not in st.session_state:
        st.info("Please sign in first.")
        st.stop()
    return st.session_state["actor"]


def role() -> str:
    return st.session_state["role"]


def allowed(action: str) -> bool:
    """For hiding buttons; the engine enforces the same rule regardless."""
    return can(role(), action)


# --- turning engine results into messages -------------------------------------------------


def attempt(action: Callable[[], T], success: str | None = None) -> T | None:
    """Run an engine call; show its own message on a deliberate error, and never a traceback."""
    try:
        result = action()
    except MeterbookError as exc:
        st.error(str(exc), icon=":material/error:")
        if isinstance(exc, PlanLimitReached) and exc.upgrade_to:
            st.page_link("pages/billing.py", label="See plans and upgrade", icon=":material/upgrade:")
        return None
    if success:
        st.toast(success, icon=":material/check_circle:")
    return result


def flash(message: str) -> None:
    """A success message that survives the rerun that follows a change."""
    st.session_state["_flash"] = message


def show_flash() -> None:
    message = st.session_state.pop("_flash", None)
    if message:
        st.success(message, icon=":material/check_circle:")


# --- formatting ---------------------------------------------------------------------------


def usd(value: Decimal | None, places: int = 2) -> str:
    if value is None:
        return "—"
    if value and abs(value) < Decimal("0.01") and places == 2:
        return f"${value:,.4f}"
    return f"${value:,.{places}f}"


def local_time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "—"
    tz = st.session_state.get("workspace_tz", "UTC")
    return value.astimezone(ZoneInfo(tz)).strftime(fmt)


def pct_change(now: Decimal | int, before: Decimal | int) -> str | None:
    if not before:
        return None
    return f"{(Decimal(now) - Decimal(before)) / Decimal(before) * 100:+.0f}% vs last month"
