"""Sign in, first-run setup of the owner account, and joining through an invitation link.

Single sign-on: where ``.streamlit/secrets.toml`` has an ``[auth]`` section, the page offers
one "Sign in with …" button per configured provider (the default provider written straight
into ``[auth]``, and each named ``[auth.NAME]``; an optional ``display_name`` key sets the
label). ``st.login`` sends the person to the provider and back; once ``st.user`` is signed
in, the engine maps the identity to a Meterbook user and the page opens the same
server-side session a password sign-in opens, so refresh and sign-out behave alike.

Who may come in that way is decided in ``engine.sso.oidc_user``: an identity seen
before, an existing account with the same (verified) email, or an email with an open
invitation. Anyone else is refused with a message to ask for an invitation, rather than
given an empty account: Meterbook has no self sign-up, and a provider such as Google would
otherwise let anyone with an account there in. A refused identity can sign out of the
provider here and try another account.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from engine import accounts, sso
from engine.errors import MeterbookError
from pages import _common as ui

# Keys that make a table in [auth] a provider's settings rather than, say, client_kwargs.
_PROVIDER_KEYS = ("client_id", "server_metadata_url")


def oidc_providers() -> list[tuple[str | None, str]]:
    """(name for ``st.login``, button label) of each provider in the ``[auth]`` secrets; [] if none."""
    try:
        auth = st.secrets.get("auth")
    except StreamlitSecretNotFoundError:  # no secrets file at all
        return []
    if not isinstance(auth, Mapping):
        return []
    found: list[tuple[str | None, str]] = []
    if any(key in auth for key in _PROVIDER_KEYS):
        found.append((None, str(auth.get("display_name") or "single sign-on")))
    for name, section in auth.items():
        if isinstance(section, Mapping) and any(key in section for key in _PROVIDER_KEYS):
            found.append((name, str(section.get("display_name") or name.replace("-", " ").title())))
    return found


def finish_sign_in(token: str) -> None:
    ui.remember_session(token)
    st.session_state.pop("signed_out", None)
    st.rerun()


def sign_in_with_oidc(claims: Mapping[str, Any]) -> None:
    """``st.login`` has verified the identity; map it to a Meterbook user and open a session."""
    try:
        token, _user = sso.oidc_login(claims)
    except MeterbookError as exc:
        st.error(str(exc), icon=":material/error:")
        if st.button("Sign in with a different account", key="oidc_sign_out", icon=":material/switch_account:"):
            st.logout()
        return
    finish_sign_in(token)


def oidc_buttons(providers: list[tuple[str | None, str]], verb: str = "Sign in") -> None:
    for name, label in providers:
        if st.button(f"{verb} with {label}", key=f"oidc_{name or 'default'}", icon=":material/key:", width="stretch"):
            st.login(name)  # None: the default provider written straight into [auth]


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


def join(token: str, providers: list[tuple[str | None, str]]) -> None:
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
    if providers:
        st.caption(f"Or sign in as {email} with your organisation's account; the invitation is accepted on the way.")
        oidc_buttons(providers, verb="Join")


def sign_in(providers: list[tuple[str | None, str]]) -> None:
    st.title("Sign in to Meterbook")
    if st.session_state.get("signed_out"):
        st.info("You are signed out.")
    identity_known = bool(providers) and bool(st.user.get("is_logged_in"))
    if identity_known:
        sign_in_with_oidc(st.user.to_dict())
    with st.form("sign_in"):
        email = st.text_input("Email", key="login_email")
        password = st.text_input("Password", type="password", key="login_password")
        if st.form_submit_button("Sign in", type="primary"):
            result = ui.attempt(lambda: accounts.login(email, password))
            if result:
                finish_sign_in(result[0])
    if providers and not identity_known:
        st.divider()
        oidc_buttons(providers)


_, middle, _ = st.columns([1, 2, 1])
with middle:
    providers = oidc_providers()
    invite_token = st.query_params.get("invite")
    if invite_token:
        join(invite_token, providers)
    elif accounts.needs_first_run():
        first_run()
    else:
        sign_in(providers)
