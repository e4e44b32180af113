"""Assets: every generated image, sound, video and text, with previews, filters, search and bulk actions.

The grid loads a page at a time ("Load more"); a picture opens large in a lightbox. Selection
is per card, and bulk actions (tag, archive, delete, download as a zip) act on what is selected.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import streamlit as st

from engine import asset_library, projects
from engine.asset_library import KIND_LABELS, AssetFilter, AssetView
from engine.errors import MeterbookError
from engine.permissions import Actor
from pages import _common as ui

PAGE_SIZE = asset_library.PAGE_SIZE
COLUMNS = 4
ALL = ""
NO_PROJECT = 0
TEXT_PREVIEW = 200
SELECT = "asset_sel_"

actor = ui.actor()
can_write = ui.allowed("asset.write")


# --- state helpers ------------------------------------------------------------------------


def first_page() -> None:
    """A new search or filter starts from the top again."""
    st.session_state["assets_pages"] = 1


def open_dialog(kind: str, target) -> None:
    st.session_state["assets_dialog"] = (kind, target)


def close_dialog() -> None:
    st.session_state.pop("assets_dialog", None)
    st.session_state.pop("asset_confirm_delete", None)


def finish(message: str, *, clear_selection: bool = False) -> None:
    close_dialog()
    if clear_selection:
        st.session_state["assets_clear_selection"] = True
    ui.flash(message)
    st.rerun()


def selected() -> list[int]:
    return [int(k.removeprefix(SELECT)) for k, v in st.session_state.items()
            if isinstance(k, str) and k.startswith(SELECT) and v]


def clear_selection_if_asked() -> None:
    """Untick every card; only possible before the checkboxes are drawn in this run."""
    if st.session_state.pop("assets_clear_selection", False):
        for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(SELECT)]:
            st.session_state[key] = False


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, ZoneInfo(st.session_state.get("workspace_tz", "UTC")))


# --- previews -----------------------------------------------------------------------------


@st.cache_data(ttl=600, max_entries=2_000, show_spinner=False)
def picture(who: Actor, asset_id: int, longest_side: int) -> bytes | None:
    """Scaled previews are kept a while: files never change, and a grid redraws on every click."""
    return asset_library.picture(who, asset_id, longest_side=longest_side)


def preview(view: AssetView, *, large: bool = False) -> None:
    try:
        if view.mime.startswith("image/"):
            shown = picture(actor, view.id, asset_library.LIGHTBOX if large else asset_library.THUMBNAIL)
            if shown is None:
                st.caption("This file is not a picture that can be shown; download it to look inside.")
            else:
                st.image(shown, width="stretch", alt=view.label)
            return
        data = asset_library.read_content(actor, view.id)
    except MeterbookError as exc:
        st.caption(str(exc))
        return
    if view.mime.startswith("audio/"):
        st.audio(data, format=view.mime)
    elif view.mime.startswith("video/"):
        st.video(data, format=view.mime)
    else:
        text = data.decode("utf-8", errors="replace")
        st.text(text if large or len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW] + " …")


# --- dialogs ------------------------------------------------------------------------------


@st.dialog("Asset", width="large", on_dismiss=close_dialog)
def asset_dialog(asset_id: int) -> None:
    view = ui.attempt(lambda: asset_library.get_asset(actor, asset_id))
    if view is None:
        return
    st.subheader(view.label)
    preview(view, large=True)
    facts = [KIND_LABELS.get(view.kind, view.kind), f"{view.provider}/{view.model}", ui.local_time(view.created_at),
             f"{view.size_bytes / 1024:,.0f} KB", f"by {view.created_by or 'a former member'}"]
    if view.project:
        facts.append(f"project {view.project}")
    if view.call_cost is not None:
        facts.append(f"the call cost {ui.usd(view.call_cost, 4)}")
    st.caption(" · ".join(facts))
    if view.prompt:
        st.markdown("**Prompt**")
        st.text(view.prompt)
    if view.description and not can_write:
        st.markdown(view.description)
    st.download_button("Download", data=lambda: asset_library.read_content(actor, view.id), file_name=view.file_name,
                       mime=view.mime, icon=":material/download:", key="asset_download_one", on_click="ignore")
    if not can_write:
        return
    with st.form("asset_edit", border=False):
        title = st.text_input("Title", value=view.title or "", key="asset_title", placeholder=view.label)
        description = st.text_area("Description", value=view.description or "", key="asset_description")
        tags = st.text_input("Tags", value=", ".join(view.tags), key="asset_tags", help="Comma-separated.")
        saved = st.form_submit_button("Save", type="primary", icon=":material/save:", key="asset_save")
    if saved and ui.attempt(lambda: asset_library.edit_asset(actor, view.id, title=title, description=description,
                                                             tags=tags.split(","))):
        finish("Asset saved.")
    with st.container(horizontal=True):
        if st.button("Unfavourite" if view.favourite else "Favourite", key="asset_favourite",
                     icon=":material/star:" if not view.favourite else ":material/star_border:"):
            if ui.attempt(lambda: asset_library.set_favourite(actor, view.id, not view.favourite) or True):
                st.rerun(scope="fragment")
        archived = view.archived_at is not None
        if st.button("Restore" if archived else "Archive", key="asset_archive",
                     icon=":material/unarchive:" if archived else ":material/archive:"):
            if ui.attempt(lambda: asset_library.set_archived(actor, [view.id], not archived) is not None):
                finish("Restored to the library." if archived else "Archived: find it again under “Show archive”.")
        if st.button("Delete", key="asset_delete", icon=":material/delete:"):
            st.session_state["asset_confirm_delete"] = view.id
    if st.session_state.get("asset_confirm_delete") == view.id:
        st.warning("Delete this asset and its file for good? This cannot be undone.", icon=":material/warning:")
        with st.container(horizontal=True, horizontal_alignment="right"):
            if st.button("Keep it", key="asset_delete_cancel"):
                st.session_state.pop("asset_confirm_delete", None)
                st.rerun(scope="fragment")
            if st.button("Delete for good", type="primary", icon=":material/delete_forever:",
                         key="asset_delete_confirm") and ui.attempt(
                    lambda: asset_library.delete_assets(actor, [view.id])):
                finish(f"Deleted “{view.label}”.")


@st.dialog("Delete assets", on_dismiss=close_dialog)
def bulk_delete_dialog(ids: list[int]) -> None:
    st.markdown(f"Delete **{len(ids)} asset{'s' * (len(ids) != 1)}** and their files for good? "
                "This cannot be undone. (Archive keeps them, out of sight.)")
    with st.container(horizontal=True, horizontal_alignment="right"):
        if st.button("Cancel", key="assets_delete_cancel"):
            close_dialog()
            st.rerun()
        if st.button("Delete", type="primary", icon=":material/delete_forever:", key="assets_delete_confirm") and (
                n := ui.attempt(lambda: asset_library.delete_assets(actor, ids))):
            finish(f"Deleted {n} asset{'s' * (n != 1)}.", clear_selection=True)


# --- filters and bulk actions -------------------------------------------------------------


def filters() -> AssetFilter:
    project_names = projects.project_choices(actor)
    tags = asset_library.tags_in_use(actor)
    search = st.text_input("Search", key="assets_search", type="search", icon=":material/search:",
                           placeholder="Title, description or prompt", on_change=first_page)
    with st.container(horizontal=True, vertical_alignment="bottom"):
        kind = st.selectbox("Kind", [ALL, *KIND_LABELS], key="assets_kind", on_change=first_page,
                            format_func=lambda k: KIND_LABELS.get(k, "All kinds"))
        project_id = st.selectbox("Project", [NO_PROJECT, *project_names], key="assets_project", on_change=first_page,
                                  format_func=lambda p: project_names.get(p, "All projects"))
        tag = st.selectbox("Tag", [ALL, *tags], key="assets_tag", on_change=first_page,
                           format_func=lambda t: t or "All tags")
        days = st.date_input("Created between", value=[], key="assets_dates", on_change=first_page,
                             format="YYYY-MM-DD")
    with st.container(horizontal=True):
        favourites = st.toggle("Favourites only", key="assets_favourites", on_change=first_page)
        archived = st.toggle("Show archive", key="assets_archived", on_change=first_page)
    days = list(days) if isinstance(days, tuple | list) else [days]
    since = day_start(days[0]) if days else None
    until = day_start(days[-1] + timedelta(days=1)) if days else None
    return AssetFilter(kind=kind or None, project_id=project_id or None, tag=tag or None, favourites=favourites,
                       since=since, until=until, search=search, archived=archived)


def bulk_bar(archived: bool) -> None:
    ids = selected()
    if not ids:
        st.caption("Tick assets to tag, archive, delete or download several at once.")
        return
    with st.container(border=True, horizontal=True, vertical_alignment="bottom"):
        st.markdown(f"**{len(ids)} selected**")
        if can_write:
            tag = st.text_input("Tag", key="assets_bulk_tag", placeholder="e.g. campaign-q3",
                                label_visibility="collapsed")
            if st.button("Add tag", icon=":material/sell:", key="assets_bulk_tag_add"):
                if (n := ui.attempt(lambda: asset_library.tag_assets(actor, ids, tag))) is not None:
                    finish(f"Tagged {n} asset{'s' * (n != 1)} “{tag.strip()}”.", clear_selection=True)
            if st.button("Restore" if archived else "Archive", key="assets_bulk_archive",
                         icon=":material/unarchive:" if archived else ":material/archive:"):
                if (n := ui.attempt(lambda: asset_library.set_archived(actor, ids, not archived))) is not None:
                    finish(f"{'Restored' if archived else 'Archived'} {n} asset{'s' * (n != 1)}.",
                           clear_selection=True)
            st.button("Delete…", icon=":material/delete:", key="assets_bulk_delete", on_click=open_dialog,
                      args=("delete", tuple(ids)))
        st.download_button("Download zip", data=lambda: asset_library.zip_assets(actor, ids),
                           file_name="meterbook-assets.zip", mime="application/zip", icon=":material/folder_zip:",
                           key="assets_bulk_zip", on_click="ignore")
        if st.button("Clear selection", key="assets_clear", type="tertiary"):
            st.session_state["assets_clear_selection"] = True
            st.rerun()


# --- the grid -----------------------------------------------------------------------------


def card(view: AssetView) -> None:
    with st.container(border=True):
        preview(view)
        star = ":material/star: " if view.favourite else ""
        st.markdown(f"{star}**{view.label}**")
        facts = [KIND_LABELS.get(view.kind, view.kind), view.model, ui.local_time(view.created_at)]
        st.caption(" · ".join(facts))
        if view.tags:
            st.caption(" ".join(f"`{t}`" for t in view.tags))
        with st.container(horizontal=True, vertical_alignment="center"):
            st.checkbox("Select", key=f"{SELECT}{view.id}")
            st.button("Open", icon=":material/open_in_full:", key=f"asset_open_{view.id}", type="tertiary",
                      on_click=open_dialog, args=("asset", view.id))


def grid(f: AssetFilter) -> None:
    pages = st.session_state.setdefault("assets_pages", 1)
    page = ui.attempt(lambda: asset_library.list_assets(actor, f, offset=0, limit=PAGE_SIZE))
    if page is None:
        return
    if page.total == 0:
        unfiltered = f == AssetFilter(archived=f.archived)
        if f.archived and unfiltered:
            st.info("The archive is empty.", icon=":material/archive:")
        elif unfiltered:
            st.info("No assets yet. Images, audio, video and long texts you make on the Generate page are kept "
                    "here, with what they cost.", icon=":material/photo_library:")
        else:
            st.info("No assets match these filters.", icon=":material/search_off:")
        return
    items = list(page.items)
    for number in range(1, pages):  # the pages already loaded, a page at a time
        more = asset_library.list_assets(actor, f, offset=number * PAGE_SIZE, limit=PAGE_SIZE)
        items.extend(more.items)
    st.caption(f"Showing {len(items):,} of {page.total:,} asset{'s' * (page.total != 1)}.")
    for start in range(0, len(items), COLUMNS):
        for column, view in zip(st.columns(COLUMNS), items[start:start + COLUMNS], strict=False):
            with column:
                card(view)
    if len(items) < page.total:
        if st.button(f"Load {min(PAGE_SIZE, page.total - len(items))} more", icon=":material/expand_more:",
                     key="assets_more"):
            st.session_state["assets_pages"] = pages + 1
            st.rerun()


# --- the page -----------------------------------------------------------------------------

st.title("Assets")
st.caption("Everything generated in this workspace: pictures, audio, video and long texts, with the call that made them.")
ui.show_flash()
clear_selection_if_asked()
chosen = filters()
bulk_bar(chosen.archived)
grid(chosen)

match st.session_state.get("assets_dialog"):
    case ("asset", int(asset_id)):
        asset_dialog(asset_id)
    case ("delete", tuple(ids)) if can_write:
        bulk_delete_dialog(list(ids))
