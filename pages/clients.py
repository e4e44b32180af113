"""Clients: the organisations a workspace does work for. Search, create, edit, archive and delete them."""

from __future__ import annotations

import math

import streamlit as st

from engine import clients
from engine.clients import ClientView
from pages import _common as ui

PAGE_SIZE = 25
NEW_CLIENT_DEFAULTS = {"new_client_name": "", "new_client_email": "", "new_client_notes": ""}

actor = ui.actor()
can_write = ui.allowed("client.write")


# --- state helpers ------------------------------------------------------------------------


def first_page() -> None:
    """A new search starts again from page 1."""
    st.session_state["clients_page"] = 1


def open_dialog(kind: str) -> None:
    """Open a dialog for the client picked right now (a callback sees the latest pick)."""
    st.session_state["client_dialog"] = (kind, st.session_state["client_pick"])


def close_dialog() -> None:
    st.session_state.pop("client_dialog", None)


def finish(message: str) -> None:
    close_dialog()
    ui.flash(message)
    st.rerun()


# --- dialogs ------------------------------------------------------------------------------


@st.dialog("Edit client", on_dismiss=close_dialog)
def edit_dialog(client: ClientView) -> None:
    with st.form("edit_client", border=False):
        name = st.text_input("Name", value=client.name, key="edit_client_name")
        email = st.text_input("Contact email", value=client.contact_email or "", key="edit_client_email")
        notes = st.text_area("Notes", value=client.notes or "", key="edit_client_notes")
        saved = st.form_submit_button("Save changes", type="primary", icon=":material/save:", key="edit_client_save")
    if saved and ui.attempt(
        lambda: clients.update_client(actor, client.id, name=name, contact_email=email, notes=notes) or True
    ):
        finish(f"Client “{name.strip()}” updated.")


@st.dialog("Delete client", on_dismiss=close_dialog)
def delete_dialog(client: ClientView) -> None:
    st.markdown(f"Delete **{client.name}**? This cannot be undone.")
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="delete_client_cancel")
        confirm = st.button("Delete client", type="primary", icon=":material/delete:", key="delete_client_confirm")
    if cancel:
        close_dialog()
        st.rerun()
    if confirm and ui.attempt(lambda: clients.delete_client(actor, client.id) or True):
        finish(f"Client “{client.name}” deleted.")


# --- loaders ------------------------------------------------------------------------------

if st.session_state.pop("reset_new_client", False):
    st.session_state.update(NEW_CLIENT_DEFAULTS)

search = st.session_state.get("client_search", "")
show_archived = st.session_state.get("client_show_archived", False)


def load(page: int) -> tuple[list[ClientView], int]:
    return clients.list_clients(actor, search=search, include_archived=show_archived, page=page, page_size=PAGE_SIZE)


page = st.session_state.get("clients_page", 1)
rows, total = load(page)
page_count = max(1, math.ceil(total / PAGE_SIZE))
if page > page_count:  # the search shrank the list, or the last client on a page went
    page = page_count
    st.session_state["clients_page"] = page
    rows, total = load(page)
# Only an empty list needs to know whether the workspace has any clients at all.
workspace_total = total or clients.list_clients(actor, include_archived=True, page_size=1)[1]


# --- layout -------------------------------------------------------------------------------

with st.container():  # one block whether or not a message shows, so the widgets below keep their state
    st.title("Clients")
    st.caption("The organisations you do work for. Group projects under a client to see spend per client.")
    ui.show_flash()

if can_write:
    with st.expander("New client", icon=":material/add_business:", expanded=workspace_total == 0):
        with st.form("new_client", border=False):
            name = st.text_input("Name", placeholder="e.g. Northwind Traders", key="new_client_name")
            email = st.text_input("Contact email", placeholder="Optional", key="new_client_email")
            notes = st.text_area("Notes", placeholder="Optional", key="new_client_notes")
            submitted = st.form_submit_button("Create client", type="primary", icon=":material/add:", key="new_client_submit")
        if submitted:
            created = ui.attempt(lambda: clients.create_client(actor, name, email, notes))
            if created:
                st.session_state["reset_new_client"] = True
                finish(f"Client “{created.name}” created.")

with st.container(horizontal=True, vertical_alignment="bottom"):
    st.text_input(
        "Search", placeholder="Search by name", type="search", icon=":material/search:",
        key="client_search", on_change=first_page,
    )
    st.toggle("Show archived", key="client_show_archived", on_change=first_page)

if not rows:
    if workspace_total == 0:
        st.info(
            "No clients yet. Add the organisations you do work for, then pick one when you create a project."
            + ("" if can_write else " An editor or admin can add them."),
            icon=":material/business:",
        )
    elif search.strip():
        st.info("No clients match your search.", icon=":material/search_off:")
    else:
        st.info("Every client is archived. Turn on “Show archived” to see them.", icon=":material/inventory_2:")
else:
    st.dataframe(
        [
            {
                "Name": c.name,
                "Contact email": c.contact_email or "—",
                "Projects": c.project_count,
                "Notes": c.notes or "",
                "Created": ui.local_time(c.created_at, "%Y-%m-%d"),
                "Status": "Archived" if c.archived_at else "Active",
            }
            for c in rows
        ],
        hide_index=True,
        width="stretch",
        alt="Clients with their contact and number of projects",
    )
    with st.container(horizontal=True, vertical_alignment="center"):
        if page_count > 1:
            st.pagination(page_count, key="clients_page")
        st.caption(f"Page {page} of {page_count} · {total} client{'s' if total != 1 else ''}")

    if can_write:
        st.subheader("Manage a client")
        by_id = {c.id: c for c in rows}
        with st.container(horizontal=True, vertical_alignment="bottom"):
            chosen = by_id[st.selectbox("Client", list(by_id), format_func=lambda i: by_id[i].name, key="client_pick")]
            st.button("Edit", icon=":material/edit:", key="client_edit", on_click=open_dialog, args=("edit",))
            if chosen.archived_at:
                toggle_archive = st.button("Restore", icon=":material/unarchive:", key="client_archive")
            else:
                toggle_archive = st.button("Archive", icon=":material/archive:", key="client_archive")
            st.button("Delete", icon=":material/delete:", key="client_delete", on_click=open_dialog, args=("delete",))
        if toggle_archive and ui.attempt(lambda: clients.set_archived(actor, chosen.id, not chosen.archived_at) or True):
            finish(f"Client “{chosen.name}” {'restored' if chosen.archived_at else 'archived'}.")
    else:
        st.caption("Only editors, admins and owners can create or change clients.")

if dialog := st.session_state.get("client_dialog"):
    kind, client_id = dialog
    target = next((c for c in rows if c.id == client_id), None)
    if target is None:  # gone from this page since the dialog was opened
        close_dialog()
    elif kind == "edit":
        edit_dialog(target)
    else:
        delete_dialog(target)
