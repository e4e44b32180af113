"""Batch: run the rows of a CSV through one prompt template, with the total estimate before starting.

A batch runs as queued work in the server, so closing the browser does not stop it; the open
batch lives in the URL (``?batch=<id>``) and its progress refreshes itself while it runs.
"""

from __future__ import annotations

import hashlib
import re

import streamlit as st

from engine import batches, projects, routes
from engine.batches import BatchSettings, BatchView, Prepared
from pages import _common as ui

ROUTE = ""  # the model picker's "use the workspace's route"
NO_PROJECT = 0
SOURCES = ("Upload a CSV", "Paste rows")
STATUS_LABELS = {"queued": "Queued", "running": "Running", "paused": "Paused", "cancelled": "Cancelled",
                 "done": "Done", "failed": "Stopped"}
SHOWN_ROWS = 100

actor = ui.actor()
can_run = ui.allowed("generate")


# --- state helpers ------------------------------------------------------------------------


def open_batch(batch_id: int) -> None:
    st.query_params["batch"] = str(batch_id)


def close_batch() -> None:
    st.query_params.pop("batch", None)
    st.session_state.pop("batch_dialog", None)


def opened_id() -> int | None:
    raw = st.query_params.get("batch", "")
    return int(raw) if raw.isdigit() else None


def file_name(name: str, ext: str) -> str:
    return (re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "batch") + f"-results.{ext}"


def status_text(view: BatchView) -> str:
    if view.interrupted:
        return "Interrupted"
    return STATUS_LABELS.get(view.status, view.status)


def progress_text(view: BatchView) -> str:
    c = view.counts
    parts = [f"{view.finished_rows:,} of {view.row_count:,} rows", f"{c['ok']:,} answered"]
    if c["error"]:
        parts.append(f"{c['error']:,} failed")
    if c["cancelled"]:
        parts.append(f"{c['cancelled']:,} cancelled")
    return " · ".join(parts)


def cost_text(view: BatchView) -> str:
    text = ui.usd(view.cost, 4)
    if view.unpriced_rows:
        text += f" + {view.unpriced_rows:,} unpriced"
    return text


# --- a new batch --------------------------------------------------------------------------


def read_rows() -> tuple[batches.Table | None, str, str]:
    """The rows from the upload or the paste box, their name and a digest of them.

    A problem with them is shown right under the field. Parsed rows are kept until the
    source changes, since every click on the page reruns this.
    """
    source = st.segmented_control("Rows from", SOURCES, default=SOURCES[0], required=True, key="batch_source")
    if source == SOURCES[0]:
        upload = st.file_uploader(
            "CSV file", type=["csv", "txt"], key="batch_file", max_upload_size=batches.MAX_FILE_BYTES // 1024 // 1024,
            help=f"UTF-8 CSV, first line: column names. At most {batches.MAX_ROWS:,} rows.",
        )
        if upload is None:
            return None, "", ""
        data, what, name = upload.getvalue(), f"The file “{upload.name}”", upload.name
    else:
        data = st.text_area("Rows", key="batch_paste", height=160, placeholder="city,country\nParis,France\nLima,Peru",
                            help="CSV text: the first line names the columns, then one row per line.")
        if not data.strip():
            return None, "", ""
        what, name = "The pasted rows", "Pasted rows"
    digest = hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest()
    memo = st.session_state.get("batch_table")
    table = memo[1] if memo and memo[0] == digest else ui.attempt(lambda: batches.read_csv(data, what=what))
    st.session_state["batch_table"] = (digest, table) if table is not None else None
    if table is not None:
        st.caption(f"{len(table.rows):,} row{'s' * (len(table.rows) != 1)} · columns: {', '.join(table.columns)}")
        st.dataframe(table.frame(limit=50), hide_index=True, height=180, key="batch_rows_preview")
    return table, name, digest


def settings_form(name: str) -> BatchSettings:
    targets = routes.choices(actor, "text")
    project_names = projects.project_choices(actor)
    with st.container(horizontal=True):
        target = st.selectbox("Model", [ROUTE, *targets], key="batch_target",
                              format_func=lambda t: t or "Workspace route (with its fallbacks)")
        max_tokens = st.number_input("Max tokens per answer", min_value=1, max_value=1_000_000,
                                     value=batches.DEFAULT_MAX_TOKENS, step=64, key="batch_max_tokens",
                                     help="The estimate counts every row at this many output tokens: the worst case.")
        concurrency = st.slider("Rows at a time", 1, batches.MAX_CONCURRENCY, 4, key="batch_concurrency")
    with st.expander("More settings", icon=":material/tune:"):
        system = st.text_area("System prompt", key="batch_system", height=80,
                              placeholder="e.g. Answer in one sentence.")
        with st.container(horizontal=True):
            temperature = st.number_input("Temperature", min_value=0.0, max_value=2.0, value=None, step=0.1,
                                          key="batch_temperature", placeholder="Model default")
            project_id = st.selectbox("Charge to project", [NO_PROJECT, *project_names], key="batch_project",
                                      format_func=lambda p: project_names.get(p, "No project"))
            tags = st.text_input("Tags", key="batch_tags", placeholder="survey, q3",
                                 help="Comma-separated; every row's call carries them in the ledger.")
    template = st.text_area(
        "Prompt template", key="batch_template", height=140,
        placeholder="Write a one-line summary of {{ city }}, {{ country }}.",
        help="Each row fills in {{ column }}. A column whose name has spaces is written {{ row[\"its name\"] }}.",
    )
    return BatchSettings(template=template, name=name, target=target or None, system=system,
                         max_tokens=int(max_tokens), temperature=temperature, concurrency=int(concurrency),
                         project_id=project_id or None, tags=tuple(t for t in tags.split(",") if t.strip()))


def prepared_for(table: batches.Table, digest: str, settings: BatchSettings) -> Prepared | None:
    """Prepare once per change: filling in and counting thousands of rows is not free on every rerun."""
    key = (digest, settings, actor)
    memo = st.session_state.get("batch_prepared")
    if memo and memo[0] == key:
        return memo[1]
    prepared = ui.attempt(lambda: batches.prepare(actor, table, settings))
    st.session_state["batch_prepared"] = (key, prepared) if prepared else None
    return prepared


def show_estimate(prepared: Prepared) -> None:
    est = prepared.estimate
    with st.expander(f"Preview: the first {len(prepared.preview)} prompt{'s' * (len(prepared.preview) != 1)}",
                     icon=":material/visibility:", expanded=True):
        for number, prompt in enumerate(prepared.preview, 1):
            st.caption(f"Row {number}")
            st.text(prompt if len(prompt) <= 2000 else prompt[:2000] + " …")
    with st.container(horizontal=True):
        st.metric("Estimated total (worst case)", ui.usd(est.cost, 4) if est.cost is not None else "Unknown",
                  border=True)
        st.metric("Rows", f"{est.rows:,}", border=True)
        st.metric("Prompt tokens", f"{est.input_tokens:,}", border=True)
    st.caption(f"On {est.target}, with every answer at its {est.max_output_tokens:,}-token maximum. "
               + ("Prompt tokens are counted with OpenAI's tokenizer, so for this model the figure is approximate."
                  if est.approximate else "Prompt tokens are counted exactly."))
    if est.cost is None:
        st.warning(f"No price is known for {est.target}, so this batch cannot be estimated and its calls will be "
                   "recorded as unpriced. Add a price under Settings → Prices first if you want it counted.",
                   icon=":material/warning:")


def new_batch() -> None:
    st.subheader("New batch")
    if not can_run:
        st.info(f"Your role ({ui.role()}) can follow batches and download their results, but not start them: "
                "batches spend money. Ask an editor or admin.", icon=":material/lock:")
        return
    if not routes.choices(actor, "text"):
        st.info("No model is set up for text in this workspace yet, so there is nothing to run a batch on. "
                "Add a provider and a model under Workspace → Providers, then come back.", icon=":material/key:")
        return
    table, name, digest = read_rows()
    settings = settings_form(name)
    if table is None:
        st.caption("Add rows and a template to see the first prompts and the total estimate.")
        return
    if not settings.template.strip():
        st.caption(f"Write the template; the columns you can use are "
                   f"{', '.join(f'`{{{{ {c} }}}}`' for c in table.columns)}.")
        return
    prepared = prepared_for(table, digest, settings)
    if prepared is None:
        return
    show_estimate(prepared)
    if st.button(f"Start batch of {prepared.estimate.rows:,} rows", type="primary", icon=":material/play_arrow:",
                 key="batch_start"):
        started = ui.attempt(lambda: batches.start_batch(actor, prepared))
        if started is not None:
            st.session_state.pop("batch_prepared", None)
            open_batch(started.id)
            ui.flash(f"Batch “{started.name}” started. It keeps running if you close this page.")
            st.rerun()


# --- the list -----------------------------------------------------------------------------


def batch_list() -> None:
    st.subheader("Batches")
    listed = batches.list_batches(actor)
    if not listed:
        st.info("No batches yet. A batch runs one prompt template over every row of a CSV"
                + (" — start one above." if can_run else "."), icon=":material/table_rows:")
        return
    for view in listed:
        with st.container(border=True, horizontal=True, vertical_alignment="center"):
            with st.container():
                st.markdown(f"**{view.name}**")
                st.caption(f"{status_text(view)} · {progress_text(view)} · cost {cost_text(view)} · "
                           f"started {ui.local_time(view.created_at)} by {view.created_by or 'a former member'}")
            st.button("Open", icon=":material/open_in_new:", key=f"open_batch_{view.id}", on_click=open_batch,
                      args=(view.id,))


# --- one batch ----------------------------------------------------------------------------


@st.dialog("Cancel batch", on_dismiss=lambda: st.session_state.pop("batch_dialog", None))
def cancel_dialog(view: BatchView) -> None:
    left = view.row_count - view.finished_rows
    st.markdown(f"Cancel **{view.name}**? The {left:,} row{'s' * (left != 1)} not yet answered will not run. "
                "Rows already sent finish, and are charged. This cannot be undone.")
    with st.container(horizontal=True, horizontal_alignment="right"):
        keep = st.button("Keep running", key="batch_cancel_keep")
        confirm = st.button("Cancel batch", type="primary", icon=":material/cancel:", key="batch_cancel_confirm")
    if keep:
        st.session_state.pop("batch_dialog", None)
        st.rerun()
    if confirm and ui.attempt(lambda: batches.cancel_batch(actor, view.id)):
        st.session_state.pop("batch_dialog", None)
        ui.flash("Batch cancelled.")
        st.rerun()


def controls(view: BatchView) -> None:
    with st.container(horizontal=True):
        if can_run and view.can_pause and st.button("Pause", icon=":material/pause:", key="batch_pause"):
            if ui.attempt(lambda: batches.pause_batch(actor, view.id)):
                ui.flash("Paused: rows already sent finish, nothing new starts. Resume whenever you like.")
                st.rerun()
        if can_run and view.can_resume and st.button("Resume", type="primary", icon=":material/play_arrow:",
                                                     key="batch_resume"):
            if ui.attempt(lambda: batches.resume_batch(actor, view.id)):
                ui.flash("Resumed.")
                st.rerun()
        if can_run and view.can_cancel and st.button("Cancel", icon=":material/cancel:", key="batch_cancel"):
            st.session_state["batch_dialog"] = view.id
        st.download_button("Download CSV", data=lambda: batches.results_csv(actor, view.id),
                           file_name=file_name(view.name, "csv"), mime="text/csv", icon=":material/download:",
                           key="batch_download_csv", on_click="ignore")
        st.download_button("Download Parquet", data=lambda: batches.results_parquet(actor, view.id),
                           file_name=file_name(view.name, "parquet"), mime="application/vnd.apache.parquet",
                           icon=":material/download:", key="batch_download_parquet", on_click="ignore")


def live(batch_id: int, was_active: bool) -> None:
    """Progress, cost and the first rows; refreshed every second while the batch runs."""
    view = ui.attempt(lambda: batches.get_batch(actor, batch_id))
    if view is None:
        return
    if was_active and view.status not in batches.ACTIVE:
        st.rerun(scope="app")  # it just ended: redraw the buttons around it too
    st.progress(view.progress, text=progress_text(view))
    with st.container(horizontal=True):
        st.metric("Cost so far", cost_text(view), border=True)
        st.metric("Estimated (worst case)", ui.usd(view.estimated_cost, 4) if view.estimated_cost is not None
                  else "Unknown", border=True)
        st.metric("Status", status_text(view), border=True)
    rows = batches.batch_rows(actor, batch_id, limit=SHOWN_ROWS)
    st.dataframe(
        [{"row": r.position, "status": r.status, "answer or error": r.output or r.error or "",
          "cost": ui.usd(r.cost, 6) if r.status == "ok" else "",
          "tokens": None if r.input_tokens is None else r.input_tokens + (r.output_tokens or 0)} for r in rows],
        hide_index=True, width="stretch", key="batch_results",
        column_config={"answer or error": st.column_config.TextColumn(width="large")},
    )
    if view.row_count > SHOWN_ROWS:
        st.caption(f"Showing the first {SHOWN_ROWS} rows; the downloads have all {view.row_count:,}.")


def show_batch(batch_id: int) -> None:
    view = ui.attempt(lambda: batches.get_batch(actor, batch_id))
    st.button("All batches", icon=":material/arrow_back:", key="batch_back", on_click=close_batch)
    if view is None:
        return
    st.header(view.name)
    facts = [f"{view.row_count:,} rows", view.target or "workspace route", f"{view.concurrency} at a time",
             f"up to {view.max_tokens:,} tokens each", f"started by {view.created_by or 'a former member'}"]
    st.caption(" · ".join(facts))
    ui.show_flash()
    if view.interrupted:
        st.warning("No worker has been heard from for a while: the server probably restarted while this batch ran. "
                   "Resume it to carry on with the rows not yet answered; rows that were already sent are not "
                   "charged again.", icon=":material/sync_problem:")
    elif view.error:
        (st.warning if view.status == "paused" else st.error)(view.error, icon=":material/error:")
    controls(view)
    if st.session_state.get("batch_dialog") == view.id:
        cancel_dialog(view)
    active = view.status in batches.ACTIVE and not view.interrupted
    st.fragment(live, run_every=1.0 if active else None)(batch_id, active)
    with st.expander("Template", icon=":material/description:"):
        st.code(view.template, language=None)
        if view.system:
            st.caption("System prompt")
            st.code(view.system, language=None)


# --- the page -----------------------------------------------------------------------------

st.title("Batch")
if (batch_id := opened_id()) is not None:
    show_batch(batch_id)
else:
    st.caption("One prompt template over every row of a CSV: see the first prompts and the total cost before "
               "anything runs. Batches run in the server, so you can close this page while they work.")
    ui.show_flash()
    new_batch()
    st.divider()
    batch_list()
