"""Notebooks: Markdown, SQL and Chart cells over the warehouse. Run them, share them, export them.

The open notebook lives in the URL (``?notebook=<id>``) so a shared notebook can be linked.
"""

from __future__ import annotations

import re

import polars as pl
import streamlit as st

from engine import notebook_runs, notebooks
from engine.notebook_render import CHART_TYPES
from engine.notebooks import CellView, NotebookView
from pages import _common as ui

CHART_LABELS = {"bar": "Bar", "line": "Line", "area": "Area", "scatter": "Scatter", "pie": "Pie"}
ADD_LABELS = {
    "markdown": ":material/notes: Markdown", "sql": ":material/database: SQL", "chart": ":material/bar_chart: Chart",
    "prompt": ":material/chat: Prompt",
}
NO_COLOUR = ""
PREVIEW_ROWS = 1_000  # rows drawn in a cell's table; the stored result may hold more

actor = ui.actor()
can_write = ui.allowed("notebook.write")


# --- state helpers ------------------------------------------------------------------------


def open_notebook(notebook_id: int) -> None:
    st.query_params["notebook"] = str(notebook_id)


def close_notebook() -> None:
    st.query_params.pop("notebook", None)
    close_dialog()


def open_dialog(kind: str, target: int) -> None:
    st.session_state["notebook_dialog"] = (kind, target)


def close_dialog() -> None:
    st.session_state.pop("notebook_dialog", None)


def finish(message: str) -> None:
    close_dialog()
    ui.flash(message)
    st.rerun()


def opened_id() -> int | None:
    raw = st.query_params.get("notebook", "")
    return int(raw) if raw.isdigit() else None


def date_columns(frame: pl.DataFrame) -> dict:
    """Dates shown as dates: the table would otherwise add a midnight time to each."""
    return {name: st.column_config.DateColumn(name, format="YYYY-MM-DD")
            for name, dtype in frame.schema.items() if dtype == pl.Date}


def file_name(title: str) -> str:
    return (re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower() or "notebook") + ".html"


# --- dialogs ------------------------------------------------------------------------------


@st.dialog("Rename notebook", on_dismiss=close_dialog)
def rename_dialog(view: NotebookView) -> None:
    with st.form("rename_notebook", border=False):
        title = st.text_input("Title", value=view.title, key="nb_rename_title")
        saved = st.form_submit_button("Save", type="primary", icon=":material/save:", key="nb_rename_save")
    if saved and ui.attempt(lambda: notebooks.rename_notebook(actor, view.id, title) or True):
        finish(f"Notebook renamed to “{title.strip()}”.")


@st.dialog("Delete notebook", on_dismiss=close_dialog)
def delete_notebook_dialog(view: NotebookView) -> None:
    st.markdown(f"Delete **{view.title}** and its {len(view.cells)} cells? This cannot be undone.")
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="nb_delete_cancel")
        confirm = st.button("Delete notebook", type="primary", icon=":material/delete:", key="nb_delete_confirm")
    if cancel:
        close_dialog()
        st.rerun()
    if confirm and ui.attempt(lambda: notebooks.delete_notebook(actor, view.id) or True):
        close_notebook()
        finish(f"Notebook “{view.title}” deleted.")


@st.dialog("Delete cell", on_dismiss=close_dialog)
def delete_cell_dialog(cell: CellView) -> None:
    st.markdown(f"Delete **cell {cell.number}** ({notebooks.KIND_LABELS[cell.kind]})? This cannot be undone.")
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="cell_delete_cancel")
        confirm = st.button("Delete cell", type="primary", icon=":material/delete:", key="cell_delete_confirm")
    if cancel:
        close_dialog()
        st.rerun()
    if confirm and ui.attempt(lambda: notebooks.delete_cell(actor, cell.id) or True):
        finish(f"Cell {cell.number} deleted.")


# --- the list of notebooks ----------------------------------------------------------------


def show_list() -> None:
    st.title("Notebooks")
    st.caption(
        "SQL over your workspace's usage (the `ledger`, `ledger_daily`, `projects`, `clients` and `users` "
        "views), with charts and notes. Private to you until you share one."
    )
    ui.show_flash()
    everything = notebooks.list_notebooks(actor)
    if can_write:
        with st.expander("New notebook", icon=":material/add_notes:", expanded=not everything):
            with st.form("new_notebook", border=False):
                title = st.text_input("Title", placeholder="e.g. Weekly spend check", key="new_notebook_title")
                created = st.form_submit_button(
                    "Create notebook", type="primary", icon=":material/add:", key="new_notebook_submit"
                )
            if created and (view := ui.attempt(lambda: notebooks.create_notebook(actor, title))):
                open_notebook(view.id)
                finish(f"Notebook “{view.title}” created. Add a cell to begin.")
            starters = notebooks.starter_notebooks()
            if st.button(
                "Add starter notebooks", icon=":material/library_add:", key="add_starters",
                help="Adds: " + "; ".join(f"{s.title} ({s.summary})" for s in starters),
            ) and (added := ui.attempt(lambda: notebooks.install_starters(actor))) is not None:
                finish(
                    f"Added {', '.join(added)}." if added else "You already have every starter notebook."
                )

    search = st.text_input(
        "Search", placeholder="Search by title", type="search", icon=":material/search:", key="notebook_search"
    )
    shown = notebooks.list_notebooks(actor, search) if search.strip() else everything
    if not everything:
        st.info(
            "No notebooks yet. A notebook holds SQL queries over your usage, charts of their results and "
            "notes, run and saved together."
            + (" Create one above, or add the starter notebooks to see examples." if can_write
               else " An editor can create one and share it with the workspace."),
            icon=":material/menu_book:",
        )
        return
    if not shown:
        st.info("No notebooks match your search.", icon=":material/search_off:")
        return
    for nb in shown:
        with st.container(border=True, horizontal=True, vertical_alignment="center"):
            with st.container():
                st.markdown(f"**{nb.title}**")
                who = "you" if nb.owner_id == actor.user_id else (nb.owner_name or "a former member")
                st.caption(
                    f"{'Shared' if nb.shared else 'Private'} · by {who} · {nb.cell_count} "
                    f"cell{'' if nb.cell_count == 1 else 's'} · updated {ui.local_time(nb.updated_at)}"
                )
            st.button("Open", icon=":material/open_in_new:", key=f"open_{nb.id}", on_click=open_notebook, args=(nb.id,))


# --- one notebook -------------------------------------------------------------------------


def unsaved_queries(view: NotebookView) -> list[tuple[CellView, str]]:
    edits = []
    for cell in view.cells:
        text = st.session_state.get(f"cell_source_{cell.id}")
        if cell.kind in ("sql", "prompt") and text is not None and text != cell.source:
            edits.append((cell, text))
    return edits


def run_everything(view: NotebookView) -> None:
    for cell, text in unsaved_queries(view):
        if ui.attempt(lambda: notebooks.update_cell(actor, cell.id, source=text)) is None:
            return
    bar = st.progress(0.0, text="Starting…")

    def progress(done: int, total: int, cell: CellView) -> None:
        bar.progress(done / total, text=f"Ran {done} of {total}: {cell.label}")

    ran = ui.attempt(lambda: notebook_runs.run_all(actor, view.id, progress))
    if ran is not None:
        failed = [c.number for c in ran.cells if c.kind != "markdown" and c.error]
        finish(
            f"Ran every cell; cell{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))} "
            "need attention." if failed else "Ran every cell."
        )


def toolbar(view: NotebookView) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        if view.can_edit:
            if st.button("Run all", type="primary", icon=":material/play_arrow:", key="nb_run_all",
                         disabled=not view.cells,
                         help="Runs every SQL, chart and prompt cell from the top. Prompts are charged."):
                st.session_state["notebook_run_all"] = True
            st.button("Rename", icon=":material/edit:", key="nb_rename", on_click=open_dialog, args=("rename", view.id))
        if can_write and st.button("Duplicate", icon=":material/content_copy:", key="nb_duplicate"):
            if copy := ui.attempt(lambda: notebooks.duplicate_notebook(actor, view.id)):
                open_notebook(copy.id)
                finish(f"Made “{copy.title}”, a private copy you can change freely.")
        st.download_button(
            "Download HTML", data=lambda: notebooks.export_html(actor, view.id), file_name=file_name(view.title),
            mime="text/html", icon=":material/download:", key="nb_download", on_click="ignore",
            help="One standalone page with the last results; opens without a connection.",
        )
        if ui.allowed("report.write"):
            st.page_link("pages/reports.py", label="Schedule as report", icon=":material/schedule_send:",
                         query_params={"notebook": view.id}, help="Email this notebook's results on a schedule.")
        if view.can_manage:
            shared = st.toggle("Shared with the workspace", value=view.shared, key=f"nb_shared_{view.id}",
                               help="Members can read a shared notebook; editors and up can change and run it.")
            if shared != view.shared and ui.attempt(lambda: notebooks.set_shared(actor, view.id, shared) or True):
                finish("Shared with the workspace." if shared else "Now private to its owner.")
            st.button("Delete", icon=":material/delete:", key="nb_delete", on_click=open_dialog,
                      args=("notebook", view.id))


def cell_header(view: NotebookView, cell: CellView) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(cell.label)
        if not view.can_edit:
            return
        st.space("stretch")
        if st.button("", icon=":material/arrow_upward:", key=f"cell_up_{cell.id}", help="Move up",
                     disabled=cell.number == 1, type="tertiary"):
            if ui.attempt(lambda: notebooks.move_cell(actor, cell.id, -1) or True):
                st.rerun()
        if st.button("", icon=":material/arrow_downward:", key=f"cell_down_{cell.id}", help="Move down",
                     disabled=cell.number == len(view.cells), type="tertiary"):
            if ui.attempt(lambda: notebooks.move_cell(actor, cell.id, 1) or True):
                st.rerun()
        st.button("", icon=":material/delete:", key=f"cell_delete_{cell.id}", help="Delete cell", type="tertiary",
                  on_click=open_dialog, args=("cell", cell.id))


def markdown_cell(view: NotebookView, cell: CellView) -> None:
    if cell.source.strip():
        st.markdown(cell.source)
    elif not view.can_edit:
        st.caption("An empty note.")
    if view.can_edit:
        with st.expander("Edit note", icon=":material/edit:", expanded=not cell.source.strip()):
            text = st.text_area("Markdown", value=cell.source, key=f"cell_source_{cell.id}", height=150)
            if st.button("Save note", icon=":material/save:", key=f"cell_save_{cell.id}"):
                if ui.attempt(lambda: notebooks.update_cell(actor, cell.id, source=text)):
                    st.rerun()


def sql_cell(view: NotebookView, cell: CellView) -> None:
    if view.can_edit:
        text = st.text_area(
            "SQL", value=cell.source, key=f"cell_source_{cell.id}", height=160, label_visibility="collapsed",
            placeholder="SELECT provider, round(sum(cost), 2) AS spend_usd FROM ledger GROUP BY 1 ORDER BY 2 DESC",
        )
        if st.button("Run", icon=":material/play_arrow:", key=f"cell_run_{cell.id}"):
            if text != cell.source and ui.attempt(lambda: notebooks.update_cell(actor, cell.id, source=text)) is None:
                return
            with st.spinner("Running the query…"):
                ran = ui.attempt(lambda: notebook_runs.run_cell(actor, cell.id))
            if ran:
                st.rerun()
    else:
        st.code(cell.source or "-- no query yet", language="sql")
    if cell.error:
        st.error(cell.error, icon=":material/error:")
    elif cell.frame is not None:
        facts = [f"{cell.row_count:,} row{'' if cell.row_count == 1 else 's'}", f"{cell.elapsed_ms:,} ms",
                 f"ran {ui.local_time(cell.ran_at)}"]
        if cell.truncated:
            facts.append(f"only the first {cell.row_count:,} rows are kept")
        st.caption(" · ".join(facts))
        st.dataframe(cell.frame.head(PREVIEW_ROWS), hide_index=True, width="stretch",
                     column_config=date_columns(cell.frame),
                     key=f"cell_table_{cell.id}", alt=f"Result of cell {cell.number}")
        if cell.frame.height > PREVIEW_ROWS:
            st.caption(f"Showing the first {PREVIEW_ROWS:,} rows; the export and charts use all {cell.row_count:,}.")
    elif cell.source.strip():
        st.caption("Not run yet.")


def chart_controls(view: NotebookView, cell: CellView) -> None:
    sources = view.chart_sources(cell)
    if not sources:
        st.info("A chart draws the result of a SQL cell above it. Add a SQL cell first, then move this one below.",
                icon=":material/info:")
        return
    by_id = {c.id: c for c in sources}
    current = cell.options.get("source")
    with st.container(horizontal=True, vertical_alignment="bottom"):
        kind = st.selectbox("Chart", CHART_TYPES, index=CHART_TYPES.index(cell.options.get("type", "bar")),
                            format_func=CHART_LABELS.get, key=f"chart_type_{cell.id}")
        source_id = st.selectbox("Data from", list(by_id), index=list(by_id).index(current) if current in by_id else 0,
                                 format_func=lambda i: f"Cell {by_id[i].number}", key=f"chart_source_{cell.id}")
        columns = by_id[source_id].frame.columns if by_id[source_id].frame is not None else []
        if columns:
            x = st.selectbox("Labels" if kind == "pie" else "X", columns, key=f"chart_x_{cell.id}",
                             index=columns.index(cell.options["x"]) if cell.options.get("x") in columns else 0)
            y = st.selectbox("Values" if kind == "pie" else "Y", columns, key=f"chart_y_{cell.id}",
                             index=columns.index(cell.options["y"]) if cell.options.get("y") in columns
                             else min(1, len(columns) - 1))
            colours = [NO_COLOUR, *columns]
            stored = cell.options.get("color") or NO_COLOUR
            colour = NO_COLOUR if kind == "pie" else st.selectbox(
                "Colour", colours, index=colours.index(stored) if stored in colours else 0,
                format_func=lambda c: c or "None", key=f"chart_colour_{cell.id}",
            )
    if not columns:
        st.caption(f"Run cell {by_id[source_id].number} to pick its columns.")
    options = {"type": kind, "source": source_id, "title": cell.options.get("title")}
    if columns:
        options.update(x=x, y=y, color=colour or None)
    if st.button("Draw", icon=":material/insert_chart:", key=f"chart_save_{cell.id}"):
        if ui.attempt(lambda: notebooks.update_cell(actor, cell.id, options=options)):
            st.rerun()


def chart_cell(view: NotebookView, cell: CellView) -> None:
    if view.can_edit:
        chart_controls(view, cell)
    if cell.error:
        st.info(cell.error, icon=":material/bar_chart:")
        return
    figure = ui.attempt(lambda: notebooks.chart_figure(view, cell))
    if figure is not None:
        st.plotly_chart(figure, key=f"cell_chart_{cell.id}", width="stretch", alt=f"Chart of cell {cell.number}")


def prompt_cell(view: NotebookView, cell: CellView) -> None:
    earlier = [f"`{{{{ cell_{c.number} }}}}`" for c in view.cells[: cell.number - 1] if c.kind in ("sql", "prompt")]
    if view.can_edit:
        text = st.text_area(
            "Prompt", value=cell.source, key=f"cell_source_{cell.id}", height=120, label_visibility="collapsed",
            placeholder="Summarise this month's spend in three bullet points:\n\n{{ cell_1 }}",
        )
        st.caption(
            f"Put earlier results in with {', '.join(earlier)} (a query's rows as CSV, at most "
            f"{notebooks.PROMPT_ROWS}; a prompt's answer)." if earlier
            else "A prompt can use the results of cells above it, like {{ cell_1 }}."
        )
        with st.container(horizontal=True, vertical_alignment="bottom"):
            target = st.text_input(
                "Model", value=cell.options.get("target", ""), placeholder="Workspace default route",
                key=f"prompt_target_{cell.id}", help="As connection/model, like openai/gpt-4o-mini.",
            )
            ask = st.button("Ask", icon=":material/send:", key=f"cell_run_{cell.id}",
                            help="Goes through your providers and is charged like any other call.")
        if ask:
            options = {**cell.options, "target": target}
            if ui.attempt(lambda: notebooks.update_cell(actor, cell.id, source=text, options=options)) is None:
                return
            with st.spinner("Asking the model…"):
                ran = ui.attempt(lambda: notebook_runs.run_cell(actor, cell.id))
            if ran:
                st.rerun()
    else:
        st.code(cell.source or "(no prompt yet)", language=None)
    if cell.error:
        st.error(cell.error, icon=":material/error:")
    elif cell.answer is not None:
        row = cell.frame.row(0, named=True)
        st.caption(
            f"{row['model']} · {ui.usd(row['cost_usd']) if row['cost_usd'] is not None else 'unpriced'} · "
            f"{row['input_tokens']:,} tokens in, {row['output_tokens']:,} out · {cell.elapsed_ms:,} ms · "
            f"ran {ui.local_time(cell.ran_at)}"
        )
        with st.container(border=True):
            st.markdown(cell.answer)


RENDERERS = {"markdown": markdown_cell, "sql": sql_cell, "chart": chart_cell, "prompt": prompt_cell}


def show_notebook(notebook_id: int) -> None:
    st.button("All notebooks", icon=":material/arrow_back:", key="nb_back", on_click=close_notebook, type="tertiary")
    view = ui.attempt(lambda: notebooks.get_notebook(actor, notebook_id))
    if view is None:
        close_notebook()
        return
    st.title(view.title)
    owner = "you" if view.owner_id == actor.user_id else (view.owner_name or "a former member")
    st.caption(
        f"{'Shared with the workspace' if view.shared else 'Private'} · by {owner} · "
        f"updated {ui.local_time(view.updated_at)}"
        + ("" if view.can_edit else " · read only: editors and up can change and run it")
    )
    ui.show_flash()
    toolbar(view)
    if st.session_state.pop("notebook_run_all", False):
        run_everything(view)

    if not view.cells:
        st.info("This notebook is empty. Add a SQL cell to query your usage, a chart to draw a result, or a note."
                if view.can_edit else "This notebook has no cells yet.", icon=":material/menu_book:")
    for cell in view.cells:
        with st.container(border=True, key=f"cell_box_{cell.id}"):
            cell_header(view, cell)
            RENDERERS[cell.kind](view, cell)

    if view.can_edit:
        st.caption("Add a cell")
        with st.container(horizontal=True):
            for kind, label in ADD_LABELS.items():
                if st.button(label, key=f"add_{kind}"):
                    add(view, kind)

    if dialog := st.session_state.get("notebook_dialog"):
        kind, target = dialog
        if kind == "rename":
            rename_dialog(view)
        elif kind == "notebook":
            delete_notebook_dialog(view)
        elif kind == "cell" and any(c.id == target for c in view.cells):
            delete_cell_dialog(view.cell(target))
        else:
            close_dialog()


def add(view: NotebookView, kind: str) -> None:
    options = None
    if kind == "chart":  # start from the nearest query above, its first two columns
        sql = [c for c in view.cells if c.kind == "sql"]
        if sql:
            last = sql[-1]
            options = {"type": "bar", "source": last.id}
            if last.frame is not None and last.frame.width:
                options.update(x=last.frame.columns[0], y=last.frame.columns[min(1, last.frame.width - 1)])
    if ui.attempt(lambda: notebooks.add_cell(actor, view.id, kind, options=options)):
        st.rerun()


# --- layout -------------------------------------------------------------------------------

if (notebook_id := opened_id()) is not None:
    show_notebook(notebook_id)
else:
    show_list()
