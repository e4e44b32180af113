"""The Settings page's Email tab: the workspace's own mail server for reports, and "Send test email".

Not a page itself (``st.navigation`` routes only the pages streamlit_app.py names). The password
field is write-only: it starts empty, an empty field keeps the stored password, and only its
masked hint is ever shown.
"""

from __future__ import annotations

import streamlit as st

from engine.reports import smtp_settings
from engine.reports.models import SECURITY
from engine.permissions import Actor
from pages import _common as ui

SECURITY_LABELS = {"starttls": "STARTTLS (port 587)", "tls": "TLS / SMTPS (port 465)",
                   "none": "None (trusted network only)"}


def section(actor: Actor) -> None:
    current = smtp_settings.get(actor)
    fallback = smtp_settings.environment_server()
    if current is None:
        st.caption(f"Reports go out through the server set for the whole installation ({fallback})." if fallback
                   else "No mail server is set up: reports cannot be emailed until one is.")
    else:
        tested = ("" if current.last_test_at is None else
                  f" Last test {ui.local_time(current.last_test_at)}: "
                  f"{'it worked.' if current.last_test_ok else current.last_test_error}")
        st.caption(f"Reports go out through {current.host}:{current.port} as {current.from_address}.{tested}")
    if not ui.allowed("workspace.settings"):
        st.info(f"Only admins and owners can change the mail server. Your role is {ui.role()}.", icon=":material/lock:")
        return
    with st.form("smtp_form"):
        cols = st.columns([3, 1, 2])
        host = cols[0].text_input("Mail server", value=current.host if current else "", key="smtp_host",
                                  placeholder="smtp.example.com")
        port = cols[1].text_input("Port", value=str(current.port) if current else "587", key="smtp_port")
        security = cols[2].selectbox("Security", list(SECURITY), format_func=SECURITY_LABELS.get, key="smtp_security",
                                     index=list(SECURITY).index(current.security) if current else 0)
        cols = st.columns(3)
        username = cols[0].text_input("User name", value=current.username or "" if current else "", key="smtp_user")
        hint = current.password_hint if current else None
        password = cols[1].text_input("Password", type="password", value="", key="smtp_password",
                                      placeholder=f"stored: {hint}" if hint else "",
                                      help="Leave empty to keep the stored password.")
        sender = cols[2].text_input("From address", value=current.from_address if current else "", key="smtp_from",
                                    placeholder="reports@example.com")
        remove_password = bool(hint) and st.checkbox("Remove the stored password", key="smtp_remove_password")
        saved = st.form_submit_button("Save mail server", type="primary", icon=":material/save:", key="smtp_save")
    if saved:
        secret = None if remove_password else (password or smtp_settings.KEEP)
        if ui.attempt(lambda: smtp_settings.save(actor, host=host, port=port, security=security, username=username,
                                                 password=secret, from_address=sender)):
            ui.flash("Mail server saved. Send a test email to check it.")
            st.session_state.pop("smtp_password", None)
            st.rerun()
    with st.container(horizontal=True):
        if st.button("Send test email", icon=":material/outgoing_mail:", key="smtp_test",
                     disabled=current is None and fallback is None):
            sent_to = ui.attempt(lambda: smtp_settings.send_test(actor))
            if sent_to:
                ui.flash(f"Sent a test email to {sent_to}.")
                st.rerun()
        if current is not None and st.button("Use the installation's server", icon=":material/restart_alt:",
                                             key="smtp_clear"):
            if ui.attempt(lambda: smtp_settings.clear(actor)):
                ui.flash("This workspace now sends through the installation's mail server.")
                st.rerun()
