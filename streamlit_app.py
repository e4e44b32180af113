"""Meterbook's entry: the sign-in gate, the workspace switcher and the navigation over pages/."""

from __future__ import annotations

import streamlit as st

from engine import accounts, alerts
from engine.permissions import Actor
from pages import _common as ui

st.set_page_config(page_title="Meterbook", page_icon=":material/receipt_long:", layout="wide")

user = ui.signed_in_user()

if user is None:
    ui.clear_session_cookie()
    st.navigation([st.Page("pages/login.py", title="Sign in", icon=":material/login:")], position="hidden").run()
    st.stop()

ui.write_session_cookie()
access = accounts.workspaces_for(user.id)

with st.sidebar:
    st.markdown("### :material/receipt_long: Meterbook")
    if access:
        by_id = {a.workspace.id: a for a in access}
        chosen = st.session_state.get("workspace_id")
        if chosen not in by_id:
            chosen = access[0].workspace.id
        workspace_id = st.selectbox(
            "Workspace",
            list(by_id),
            index=list(by_id).index(chosen),
            format_func=lambda wid: by_id[wid].workspace.name,
            key="workspace_picker",
        )
        current = by_id[workspace_id]
        st.session_state.update(
            workspace_id=workspace_id,
            actor=Actor(user.id, workspace_id),
            role=current.role,
            workspace_tz=current.workspace.timezone,
        )
    st.caption(f"{user.name} · {user.email}")

if not access:
    def no_workspace() -> None:
        st.title("No workspace yet")
        st.info("You are not a member of any workspace. Ask an admin for an invitation, or create your own.")
        with st.form("new_workspace"):
            name = st.text_input("Workspace name")
            if st.form_submit_button("Create workspace", type="primary"):
                if ui.attempt(lambda: accounts.create_workspace(user.id, name)):
                    st.rerun()

    pages = [st.Page(no_workspace, title="Welcome", icon=":material/waving_hand:")]
else:
    pages = {
        "": [st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True)],
        "Generate": [
            st.Page("pages/generate.py", title="Generate", icon=":material/auto_awesome:"),
            st.Page("pages/chat.py", title="Chat", icon=":material/forum:"),
            st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
            st.Page("pages/batch.py", title="Batch", icon=":material/table_rows:"),
            st.Page("pages/assets.py", title="Assets", icon=":material/photo_library:"),
        ],
        "Automate": [
            st.Page("pages/workflows.py", title="Workflows", icon=":material/account_tree:"),
            st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
            st.Page("pages/schedules.py", title="Schedules", icon=":material/schedule:"),
            st.Page("pages/connectors.py", title="Connectors", icon=":material/extension:"),
        ],
        "Analytics": [
            st.Page("pages/cost_usage.py", title="Cost & Usage", icon=":material/monitoring:"),
            st.Page("pages/notebooks.py", title="Notebooks", icon=":material/menu_book:"),
            st.Page("pages/reports.py", title="Reports", icon=":material/schedule_send:"),
        ],
        "Spend control": [
            st.Page("pages/budgets.py", title="Budgets & Alerts", icon=":material/savings:"),
        ],
        "Workspace": [
            st.Page("pages/projects.py", title="Projects", icon=":material/folder:"),
            st.Page("pages/clients.py", title="Clients", icon=":material/business:"),
            st.Page("pages/providers.py", title="Providers", icon=":material/hub:"),
            st.Page("pages/settings.py", title="Settings", icon=":material/settings:"),
            st.Page("pages/billing.py", title="Billing", icon=":material/credit_card:"),
        ],
    }

page = st.navigation(pages, expanded=True)  # every page in view: folding the last ones away hid Settings and Billing


@st.fragment(run_every=60)
def alert_badge(actor: Actor) -> None:
    """The alerts that want attention, kept fresh every minute, as a link to the page that lists them."""
    count = alerts.open_count(actor)
    if count:
        st.page_link("pages/budgets.py", label=f"{count} alert{'s' if count != 1 else ''} to review",
                     icon=":material/notifications_active:")


with st.sidebar:
    if access:
        alert_badge(st.session_state["actor"])
    if st.button("Sign out", icon=":material/logout:", key="sign_out"):
        ui.sign_out()

page.run()
