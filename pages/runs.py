"""Runs: history with filters, a live view of one run, cancel, retry from the failed node,
approvals waiting for a decision, and dead letters with replay.

The open run lives in the URL (``?run=<id>``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time as dtime, timedelta

import streamlit as st

from engine.workflows import graph, runs, spec as specs, store
from engine.workflows.models import FINISHED, RUN_STATUSES
from engine.workflows.runs import TRIGGERS
from pages import _common as ui

LIVE_EVERY_S = 2

actor = ui.actor()
can_run = ui.allowed("workflow.run")


def open_run(run_id: int) -> None:
    st.query_params["run"] = str(run_id)


def duration(run: runs.RunView) -> str:
    if run.started_at is None:
        return "—"
    end = run.finished_at or datetime.now(UTC)
    seconds = (end - run.started_at).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# --- approvals and dead letters ------------------------------------------------------------


def approvals_section() -> None:
    pending = ui.attempt(lambda: runs.pending_approvals(actor)) or []
    if not pending:
        return
    st.subheader(f"Waiting for approval ({len(pending)})")
    for a in pending:
        with st.container(border=True):
            st.markdown(f"**{a.workflow_name}** · run #{a.run_id} · step `{a.node_id}`")
            if a.message:
                st.markdown(a.message)
            comment = st.text_input("Comment (optional)", key=f"run_appr_comment_{a.id}")
            if ui.allowed("workflow.approve"):
                with st.container(horizontal=True):
                    if st.button("Approve", type="primary", key=f"run_approve_{a.id}", icon=":material/check:"):
                        if ui.attempt(lambda: runs.decide(actor, a.id, True, comment) or True):
                            ui.flash(f"Approved; run #{a.run_id} carries on.")
                            st.rerun()
                    if st.button("Reject", key=f"run_reject_{a.id}", icon=":material/close:"):
                        if ui.attempt(lambda: runs.decide(actor, a.id, False, comment) or True):
                            ui.flash(f"Rejected; run #{a.run_id} fails at that step.")
                            st.rerun()


def dead_letters_section() -> None:
    letters = ui.attempt(lambda: runs.dead_letters(actor)) or []
    with st.expander(f"Dead letters ({len(letters)})", icon=":material/report:", expanded=bool(letters)):
        if not letters:
            st.caption("No failed runs are waiting. A run that fails after its retries is listed here.")
        for d in letters:
            with st.container(horizontal=True):
                st.markdown(f"**{d.workflow_name}** · run #{d.run_id} · {ui.local_time(d.created_at)}  \n"
                            f":red[{d.error[:300]}]")
                if st.button("Open", key=f"run_dl_open_{d.id}"):
                    open_run(d.run_id)
                    st.rerun()
                if can_run and st.button("Replay", key=f"run_dl_replay_{d.id}", icon=":material/replay:"):
                    new = ui.attempt(lambda: runs.replay(actor, d.id))
                    if new:
                        ui.flash(f"Replayed as run #{new.id}.")
                        open_run(new.id)
                        st.rerun()
                if can_run and st.button("Dismiss", key=f"run_dl_dismiss_{d.id}"):
                    if ui.attempt(lambda: runs.dismiss(actor, d.id) or True):
                        st.rerun()


# --- history ------------------------------------------------------------------------------


def history() -> None:
    workflows = ui.attempt(lambda: store.list_workflows(actor)) or []
    names = {w.id: w.name for w in workflows}
    c1, c2, c3, c4 = st.columns(4)
    wf = c1.selectbox("Workflow", [None, *names], format_func=lambda i: "All" if i is None else names[i],
                      key="runs_f_wf")
    status = c2.selectbox("Status", [None, *RUN_STATUSES], format_func=lambda s: s or "All", key="runs_f_status")
    trigger = c3.selectbox("Trigger", [None, *TRIGGERS], format_func=lambda s: s or "All", key="runs_f_trigger")
    today = datetime.now(UTC).date()
    days = c4.date_input("Dates", value=(today - timedelta(days=30), today), key="runs_f_dates")
    since = until = None
    if isinstance(days, tuple) and len(days) == 2:
        since = datetime.combine(days[0], dtime.min, tzinfo=UTC)
        until = datetime.combine(days[1] + timedelta(days=1), dtime.min, tzinfo=UTC)
    items = ui.attempt(lambda: runs.list_runs(actor, workflow_id=wf, status=status, trigger=trigger, since=since,
                                              until=until)) or []
    if not items:
        st.info("No runs match these filters. Run a workflow from the Workflows page.", icon=":material/history:")
        return
    st.dataframe([{"run": r.id, "workflow": r.workflow_name, "version": r.version, "status": r.status,
                   "trigger": r.trigger, "started": ui.local_time(r.created_at, "%Y-%m-%d %H:%M:%S"),
                   "duration": duration(r), "cost": ui.usd(r.cost, 4)} for r in items],
                 width="stretch", hide_index=True)
    chosen = st.selectbox("Open run", [r.id for r in items], key="runs_pick",
                          format_func=lambda i: next(f"#{r.id} · {r.workflow_name} · {r.status}" for r in items
                                                     if r.id == i))
    if st.button("Open", key="runs_open", icon=":material/visibility:"):
        open_run(chosen)
        st.rerun()


# --- one run, live ------------------------------------------------------------------------


def run_body(run_id: int, live: bool = False) -> None:
    run = ui.attempt(lambda: runs.get_run(actor, run_id))
    if run is None:
        return
    if live and run.status in FINISHED:
        st.rerun()  # the whole page again, without the refresh timer
    steps = ui.attempt(lambda: runs.steps(actor, run_id)) or []
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Status", run.status)
    m2.metric("Cost", ui.usd(run.cost, 4))
    m3.metric("Duration", duration(run))
    m4.metric("Steps done", f"{sum(s.status in ('succeeded', 'skipped') for s in steps)}")
    if run.error:
        st.error(run.error, icon=":material/error:")
    if run.cancel_requested and run.status == "running":
        st.warning("Cancelling: the worker stops the run at its next check.", icon=":material/hourglass_top:")
    with st.container(horizontal=True):
        if can_run and run.status not in FINISHED and st.button("Cancel run", key="run_cancel", icon=":material/stop:"):
            if ui.attempt(lambda: runs.cancel(actor, run_id)):
                ui.flash(f"Run #{run_id} is being cancelled.")
                st.rerun()
        if can_run and run.status in ("failed", "cancelled") and st.button(
                "Retry from the failed step", key="run_retry", icon=":material/replay:",
                help="Steps that succeeded are kept (and not paid for again); the rest run again."):
            if ui.attempt(lambda: runs.retry(actor, run_id)):
                ui.flash(f"Run #{run_id} is queued again from {run.failed_node or 'where it stopped'}.")
                st.rerun()
    statuses = {s.node_id: s.status for s in steps}
    try:
        spec = specs.from_stored(store_spec(run))
        st.graphviz_chart(graph.to_dot(spec, statuses), width="stretch")
    except Exception:  # an old version that no longer parses: the table below still shows everything
        pass
    st.dataframe([{"step": s.node_id, "type": s.node_type, "status": s.status, "attempt": s.attempt,
                   "cost": ui.usd(s.cost, 4), "error": s.error or ""} for s in steps], width="stretch",
                 hide_index=True)
    for s in steps:
        with st.expander(f"{s.node_id} · {s.status}", icon=":material/data_object:"):
            if s.logs:
                st.code(s.logs, language="text")
            st.caption("Input")
            st.code(json.dumps(s.input, indent=2, default=str)[:20_000], language="json")
            st.caption("Output")
            st.code(json.dumps(s.output, indent=2, default=str)[:20_000], language="json")
    if run.outputs is not None:
        st.subheader("Outputs")
        st.json(run.outputs)


def store_spec(run: runs.RunView) -> dict:
    return runs.version_spec(actor, run.id)


def run_view(run_id: int) -> None:
    st.button("All runs", icon=":material/arrow_back:", key="run_back",
              on_click=lambda: st.query_params.pop("run", None))
    st.title(f"Run #{run_id}")
    ui.show_flash()
    run = ui.attempt(lambda: runs.get_run(actor, run_id))
    if run is None:
        return
    st.caption(f"{run.workflow_name} · version {run.version} · {run.trigger} · {ui.local_time(run.created_at)}")
    live = run.status not in FINISHED
    st.fragment(run_every=LIVE_EVERY_S if live else None)(run_body)(run_id, live)


opened = st.query_params.get("run", "")
if opened.isdigit():
    run_view(int(opened))
else:
    st.title("Runs")
    ui.show_flash()
    approvals_section()
    history()
    dead_letters_section()
