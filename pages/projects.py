"""Projects: what AI spend is charged to. Search, filter, create, edit, archive and delete them."""

from __future__ import annotations

import math

import streamlit as st

from engine import clients, projects
from engine.projects import ProjectView
from pages import _common as ui

PAGE_SIZE = 25
NEW_PROJECT_DEFAULTS = {"new_project_name": "", "new_project_description": "", "new_project_budget": ""}
NONE = 0  # "No client" / "All clients" in pickers (ids start at 1; None would mean "nothing picked")
BUDGET_HELP = "In US dollars, like 2500 or 99.50. Leave empty for no budget."

actor = ui.actor()
can_write = ui.allowed("project.write")


# --- state helpers ------------------------------------------------------------------------


def first_page() -> None:
    """A new search or filter starts again from page 1."""
    st.session_state["projects_page"] = 1


def open_dialog(kind: str) -> None:
    """Open a dialog for the project picked right now (a callback sees the latest pick)."""
    st.session_state["project_dialog"] = (kind, st.session_state["project_pick"])


def close_dialog() -> None:
    st.session_state.pop("project_dialog", None)


def finish(message: str) -> None:
    close_dialog()
    ui.flash(message)
    st.rerun()


def client_label(client_id: int, names: dict[int, str]) -> str:
    return "No client" if client_id == NONE else names.get(client_id, "Unknown client")


# --- dialogs ------------------------------------------------------------------------------


@st.dialog("Edit project", on_dismiss=close_dialog)
def edit_dialog(project: ProjectView, client_names: dict[int, str]) -> None:
    names = dict(client_names)
    if project.client_id is not None and project.client_id not in names:
        names[project.client_id] = f"{project.client_name} (archived)"
    options = [NONE, *names]
    with st.form("edit_project", border=False):
        name = st.text_input("Name", value=project.name, key="edit_project_name")
        client_id = st.selectbox(
            "Client", options, index=options.index(project.client_id or NONE),
            format_func=lambda c: client_label(c, names), key="edit_project_client",
        )
        description = st.text_area("Description", value=project.description or "", key="edit_project_description")
        budget = st.text_input(
            "Budget (USD)", value="" if project.budget_usd is None else str(project.budget_usd),
            placeholder="No budget", help=BUDGET_HELP, key="edit_project_budget",
        )
        saved = st.form_submit_button("Save changes", type="primary", icon=":material/save:", key="edit_project_save")
    if saved and ui.attempt(
        lambda: projects.update_project(
            actor, project.id, name=name, client_id=client_id or None, description=description, budget_usd=budget
        ) or True
    ):
        finish(f"Project “{name.strip()}” updated.")


@st.dialog("Delete project", on_dismiss=close_dialog)
def delete_dialog(project: ProjectView) -> None:
    st.markdown(f"Delete **{project.name}**? This cannot be undone.")
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="delete_project_cancel")
        confirm = st.button("Delete project", type="primary", icon=":material/delete:", key="delete_project_confirm")
    if cancel:
        close_dialog()
        st.rerun()
    if confirm and ui.attempt(lambda: projects.delete_project(actor, project.id) or True):
        finish(f"Project “{project.name}” deleted.")


# --- loaders ------------------------------------------------------------------------------

if st.session_state.pop("reset_new_project", False):
    st.session_state.update(NEW_PROJECT_DEFAULTS)

client_names = clients.client_choices(actor)
search = st.session_state.get("project_search", "")
client_filter = st.session_state.get("project_client_filter")
if client_filter not in client_names:  # all clients, or one archived or deleted since it was picked
    client_filter = None
show_archived = st.session_state.get("project_show_archived", False)
filtering = bool(search.strip()) or client_filter is not None


def load(page: int) -> tuple[list[ProjectView], int]:
    return projects.list_projects(
        actor, search=search, client_id=client_filter, include_archived=show_archived, page=page, page_size=PAGE_SIZE
    )


page = st.session_state.get("projects_page", 1)
rows, total = load(page)
page_count = max(1, math.ceil(total / PAGE_SIZE))
if page > page_count:  # the filter shrank the list, or the last project on a page went
    page = page_count
    st.session_state["projects_page"] = page
    rows, total = load(page)
# Only an empty list needs to know whether the workspace has any projects at all.
workspace_total = total or projects.list_projects(actor, include_archived=True, page_size=1)[1]


# --- layout -------------------------------------------------------------------------------

with st.container():  # one block whether or not a message shows, so the widgets below keep their state
    st.title("Projects")
    st.caption("What AI spend is charged to. Give a project a budget to see how much of it is used.")
    ui.show_flash()

if can_write:
    with st.expander("New project", icon=":material/create_new_folder:", expanded=workspace_total == 0):
        with st.form("new_project", border=False):
            name = st.text_input("Name", placeholder="e.g. Support bot", key="new_project_name")
            client_id = st.selectbox(
                "Client", [NONE, *client_names], format_func=lambda c: client_label(c, client_names),
                key="new_project_client",
            )
            description = st.text_area("Description", placeholder="Optional", key="new_project_description")
            budget = st.text_input("Budget (USD)", placeholder="Optional", help=BUDGET_HELP, key="new_project_budget")
            submitted = st.form_submit_button(
                "Create project", type="primary", icon=":material/add:", key="new_project_submit"
            )
        if submitted:
            created = ui.attempt(
                lambda: projects.create_project(
                    actor, name, client_id=client_id or None, description=description, budget_usd=budget
                )
            )
            if created:
                st.session_state["reset_new_project"] = True
                finish(f"Project “{created.name}” created.")

with st.container(horizontal=True, vertical_alignment="bottom"):
    st.text_input(
        "Search", placeholder="Search by name", type="search", icon=":material/search:",
        key="project_search", on_change=first_page,
    )
    st.selectbox(
        "Client", [NONE, *client_names],
        format_func=lambda c: client_names.get(c, "All clients"),
        key="project_client_filter", on_change=first_page,
    )
    st.toggle("Show archived", key="project_show_archived", on_change=first_page)

if not rows:
    if workspace_total == 0:
        st.info(
            "No projects yet. A project is what AI spend is charged to, optionally for a client and "
            "with a budget." + (" Create the first one above." if can_write else " An editor or admin can create one."),
            icon=":material/folder_open:",
        )
    elif filtering:
        st.info("No projects match your search or client filter.", icon=":material/search_off:")
    else:
        st.info("Every project is archived. Turn on “Show archived” to see them.", icon=":material/inventory_2:")
else:
    st.dataframe(
        [
            {
                "Name": p.name,
                "Client": p.client_name or "—",
                "Budget": ui.usd(p.budget_usd),
                "Spent": ui.usd(p.spent_usd),
                "Budget used": p.budget_used,
                "Created": ui.local_time(p.created_at, "%Y-%m-%d"),
                "Status": "Archived" if p.archived_at else "Active",
            }
            for p in rows
        ],
        column_config={
            "Budget used": st.column_config.ProgressColumn(
                "Budget used", min_value=0, max_value=1, format="percent", help="Spent so far as a share of the budget."
            ),
        },
        hide_index=True,
        width="stretch",
        alt="Projects with their client, budget and spend",
    )
    with st.container(horizontal=True, vertical_alignment="center"):
        if page_count > 1:
            st.pagination(page_count, key="projects_page")
        st.caption(f"Page {page} of {page_count} · {total} project{'s' if total != 1 else ''}")

    if can_write:
        st.subheader("Manage a project")
        by_id = {p.id: p for p in rows}
        with st.container(horizontal=True, vertical_alignment="bottom"):
            chosen = by_id[
                st.selectbox("Project", list(by_id), format_func=lambda i: by_id[i].name, key="project_pick")
            ]
            st.button("Edit", icon=":material/edit:", key="project_edit", on_click=open_dialog, args=("edit",))
            if chosen.archived_at:
                toggle_archive = st.button("Restore", icon=":material/unarchive:", key="project_archive")
            else:
                toggle_archive = st.button("Archive", icon=":material/archive:", key="project_archive")
            st.button(
                "Delete", icon=":material/delete:", key="project_delete", on_click=open_dialog, args=("delete",)
            )
        if toggle_archive and ui.attempt(
            lambda: projects.set_archived(actor, chosen.id, not chosen.archived_at) or True
        ):
            finish(f"Project “{chosen.name}” {'restored' if chosen.archived_at else 'archived'}.")
    else:
        st.caption("Only editors, admins and owners can create or change projects.")


if dialog := st.session_state.get("project_dialog"):
    kind, project_id = dialog
    target = ui.attempt(lambda: projects.get_project(actor, project_id))
    if target is None:
        close_dialog()
    elif kind == "edit":
        edit_dialog(target, client_names)
    else:
        delete_dialog(target)
