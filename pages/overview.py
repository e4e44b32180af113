"""Overview: this month's spend, calls and tokens, top projects and recent activity."""

from __future__ import annotations

import streamlit as st

from engine import connections, usage
from pages import _common as ui

actor = ui.actor()
summary = usage.overview(actor)

st.title("Overview")
st.caption(f"This month so far, since {ui.local_time(summary.month_start, '%d %B %Y')}")

this, before = summary.this_month, summary.last_month_same_days
spend, calls, tokens, errors = st.columns(4)
spend.metric("Spend", ui.usd(this.spend), ui.pct_change(this.spend, before.spend), delta_color="inverse")
calls.metric("Calls", f"{this.calls:,}", ui.pct_change(this.calls, before.calls), delta_color="off")
tokens.metric("Tokens", f"{this.tokens:,}", ui.pct_change(this.tokens, before.tokens), delta_color="off")
errors.metric("Failed calls", f"{this.errors:,}", help="Calls that reached a provider and failed.")

if not summary.has_usage:
    st.info(
        "No AI usage recorded yet. Every priced call appears here as soon as it is made. "
        "Start by creating a project to charge work to.",
        icon=":material/info:",
    )

if not connections.list_connections(actor):
    st.info("No AI provider is connected yet, so nothing can be generated. Add a key (or a local server) first.",
            icon=":material/key_off:")
    st.page_link("pages/providers.py", label="Add a provider key", icon=":material/hub:")

quick = st.columns(3)
if ui.allowed("project.write"):
    quick[0].page_link("pages/projects.py", label="New project", icon=":material/create_new_folder:")
    quick[1].page_link("pages/clients.py", label="New client", icon=":material/business:")
if ui.allowed("invitation.manage"):
    quick[2].page_link("pages/settings.py", label="Invite a teammate", icon=":material/person_add:")

left, right = st.columns([2, 3])
with left:
    st.subheader("Top projects this month")
    if summary.top_projects:
        for p in summary.top_projects:
            label = f"**{p.project}** — {ui.usd(p.spend)}"
            if p.budget:
                label += f" of {ui.usd(p.budget)} budget"
                st.progress(min(float(p.spend / p.budget), 1.0), text=label)
            else:
                st.markdown(label)
    else:
        st.caption("Nothing charged to a project this month.")
with right:
    st.subheader("Recent activity")
    if summary.recent:
        st.dataframe(
            [
                {
                    "When": ui.local_time(r.created_at),
                    "Who": r.user or "API",
                    "Project": r.project or "—",
                    "Model": f"{r.provider}/{r.model}",
                    "Tokens": r.tokens,
                    "Cost": ui.usd(r.cost, 4),
                    "Status": r.status,
                }
                for r in summary.recent
            ],
            hide_index=True,
            width="stretch",
        )
    else:
        st.caption("No calls yet.")
