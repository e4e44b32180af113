"""Sign in, first-run setup of the owner account, and joining through an invitation link."""

from __future__ import annotations

import streamlit as st

from engine import accounts
from engine.errors import MeterbookError
from pages import _common as ui


def oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def finish_sign_in(token: str) -> None:
    ui.remember_session(token)
    st.session_state.pop("signed_out", None)
    st.rerun()


def sign_in_with_oidc() -> None:
    """``st.login`` has verified the identity; map it to a Meterbook user and open a session."""
    info = st.user.to_dict()
    if not info.get("email"):
        st.error("Your identity provider did not share an email address, which Meterbook needs to match your account.")
        return
    try:
        user = accounts.oidc_user(str(info.get("iss", "oidc")), str(info.get("sub", info["email"])), info["email"], info.get("name"))
    except MeterbookError as exc:
        st.error(str(exc))
        return
    finish_sign_in(accounts.start_session(user.id))


def first_run() -> None:
    st.title("Welcome to Meterbook")
    st.write("Create the owner account and your first workspace. You can invite your team afterwards.")
    with st.form("first_run"):
        name = st.text_input("Your name")
        email = st.text_input("Email")
        password = st.text_input("Password", type="password", help="At least 10 characters; a phrase works well.")
        workspace = st.text_input("Workspace name", placeholder="e.g. Northwind Analytics")
        if st.form_submit_button("Create account", type="primary"):
            created = ui.attempt(lambda: accounts.create_first_owner(email, name, password, workspace))
            if created:
                finish_sign_in(accounts.start_session(created[0].id))


def join(token: str) -> None:
    try:
        email = accounts.invitation_email(token)
    except MeterbookError as exc:
        st.error(str(exc))
        return
    st.title("Join your team on Meterbook")
    st.write(f"This invitation is for **{email}**. Choose a name and password, or enter your password if you already have an account.")
    with st.form("join"):
        name = st.text_input("Your name")
        password = st.text_input("Password", type="password")
        if st.form_submit_button("Join workspace", type="primary"):
            user = ui.attempt(lambda: accounts.accept_invitation(token, name=name or email.split("@")[0], password=password))
            if user:
                st.query_params.clear()
                finish_sign_in(accounts.start_session(user.id))


def sign_in() -> None:
    st.title("Sign in to Meterbook")
    if st.session_state.get("signed_out"):
        st.info("You are signed out.")
    with st.form("sign_in"):
        email = st.text_input("Email", key="login_email")
        password = st.text_input("Password", type="password", key="login_password")
        if st.form_submit_button("Sign in", type="primary"):
            result = ui.attempt(lambda: accounts.login(email, password))
            if result:
                finish_sign_in(result[0])
    if oidc_configured():
        st.divider()
        if st.user.get("is_logged_in"):
            sign_in_with_oidc()
        elif st.button("Sign in with single sign-on", icon=":material/key:"):
            st.login()


_, middle, _ = st.columns([1, 2, 1])
with middle:
    invite_token = st.query_params.get("invite")
    if invite_token:
        join(invite_token)
    elif accounts.needs_first_run():
        first_run()
    else:
        sign_in()
