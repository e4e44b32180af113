"""Schedules: every schedule in the workspace (workflows and reports) with its next and last firing,
the last result, missed firings, pause/resume; new and edited workflow schedules; one schedule's
firing history. Report schedules are edited with their report, on the Reports page.

``?schedule=<id>`` opens one; ``?workflow=<id>`` opens the form for a new schedule of that workflow.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import streamlit as st

from engine.errors import MeterbookError
from engine.schedules import store
from engine.workflows import store as workflows
from pages import _common as ui

actor = ui.actor()
can_edit = ui.allowed("workflow.write")
tz = st.session_state.get("workspace_tz", "UTC")

RESULT_ICONS = {"succeeded": ":green[succeeded]", "sent": ":green[sent]", "failed": ":red[failed]",
                "cancelled": ":orange[cancelled]", "skipped": ":gray[skipped]"}
STATUS_WORDS = {"fired": "fired", "missed": ":orange[missed]", "skipped": ":gray[skipped (still running)]",
                "failed": ":red[could not start]", "firing": "starting"}


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    delta = (value - datetime.now(UTC)).total_seconds()
    if 0 < delta < 3600:
        return f"{ui.local_time(value)} (in {max(1, round(delta / 60))} min)"
    return ui.local_time(value)


def sidecar_banner() -> None:
    status = store.scheduler_status()
    if status.running:
        seen = ui.local_time(status.renewed_at, "%H:%M:%S")
        st.caption(f":material/check_circle: The sidecar is scheduling (last seen {seen}).")
    elif status.holder is None:
        st.warning("No sidecar has run yet, so nothing fires. `python -m engine up` starts one beside the app; "
                   "`python -m engine sidecar` runs one on its own.", icon=":material/schedule:")
    else:
        seen = ui.local_time(status.renewed_at, "%Y-%m-%d %H:%M:%S")
        st.warning(f"The sidecar stopped renewing its lease at {seen}: "
                   "schedules are not firing. Start `python -m engine sidecar` (or `engine up`); firings missed "
                   "meanwhile run once late inside each schedule's grace window, or are listed as missed.",
                   icon=":material/warning:")


# --- the list -------------------------------------------------------------------------------


def schedule_list(items: list[store.ScheduleView]) -> None:
    c1, c2, c3 = st.columns([1, 1, 2])
    kind = c1.selectbox("Kind", [None, "workflow", "report"], key="sch_f_kind",
                        format_func=lambda k: {None: "All", "workflow": "Workflows", "report": "Reports"}[k])
    state = c2.selectbox("State", [None, "active", "paused"], key="sch_f_state",
                         format_func=lambda s: {None: "All", "active": "Active", "paused": "Paused"}[s])
    search = c3.text_input("Search", key="sch_f_search", placeholder="name")
    shown = [v for v in items if (kind is None or v.kind == kind)
             and (state is None or (state == "paused") == v.paused)
             and search.strip().lower() in v.name.lower()]
    if not shown:
        st.info("No schedule matches these filters.", icon=":material/filter_alt_off:")
        return
    st.dataframe([{"schedule": v.name, "kind": v.kind, "cron": f"{v.cron} ({v.timezone})",
                   "next": "paused" if v.paused else when(v.next_fire_time),
                   "last": ui.local_time(v.last_fire_time), "last result": v.last_result or v.last_status or "—",
                   "missed (30 d)": v.missed} for v in shown], width="stretch", hide_index=True)
    st.markdown("**Open**")
    for v in shown:
        with st.container(horizontal=True, vertical_alignment="center"):
            missed = f" · :orange[{v.missed} missed]" if v.missed else ""
            st.markdown(f"**{v.name}** · {v.kind}{missed}")
            if st.button("Open", key=f"sch_open_{v.id}", icon=":material/visibility:"):
                st.query_params.clear()
                st.query_params["schedule"] = str(v.id)
                st.rerun()
            pause_resume(v)


def pause_resume(v: store.ScheduleView) -> None:
    if not editable(v):
        return
    if v.paused:
        if st.button("Resume", key=f"sch_resume_{v.id}", icon=":material/play_arrow:"):
            if ui.attempt(lambda: store.resume(actor, v.id)):
                ui.flash(f"{v.name} is running again; firings while it was paused are not made up.")
                st.rerun()
    elif st.button("Pause", key=f"sch_pause_{v.id}", icon=":material/pause:"):
        if ui.attempt(lambda: store.pause(actor, v.id)):
            ui.flash(f"{v.name} is paused.")
            st.rerun()


def editable(v: store.ScheduleView) -> bool:
    return ui.allowed("workflow.write" if v.kind == "workflow" else "report.write")


# --- one schedule ---------------------------------------------------------------------------


def one_schedule(schedule_id: int) -> None:
    v = ui.attempt(lambda: store.get(actor, schedule_id))
    if st.button("All schedules", icon=":material/arrow_back:", key="sch_back"):
        st.query_params.clear()
        st.rerun()
    if v is None:
        return
    st.subheader(v.name)
    state = ":orange[paused]" if v.paused else f"next {when(v.next_fire_time)}"
    misfires = f"one late run within {v.grace_s} s" if v.misfire == "coalesce" else "skipped and recorded"
    st.markdown(f"{v.kind.title()} · `{v.cron}` in {v.timezone} · {state} · missed firings: {misfires}"
                f"{' · no overlap' if v.no_overlap else ''}")
    with st.container(horizontal=True):
        pause_resume(v)
        if v.kind == "report":
            st.page_link("pages/reports.py", label="Edit on the Reports page", icon=":material/edit:")
    history = ui.attempt(lambda: store.fires(actor, v.id, limit=200)) or []
    st.markdown("**Firings**")
    if not history:
        st.caption("No firings yet. The first is due " + when(v.next_fire_time) + "." if v.next_fire_time else
                   "No firings yet.")
    else:
        st.dataframe([{"fire time": ui.local_time(f.fire_time, "%Y-%m-%d %H:%M:%S"),
                       "status": f.status, "late": f"{f.late_ms / 1000:.1f} s",
                       "stands for": f.coalesced, "run": f.run_id, "delivery": f.delivery_id,
                       "result": f.result or "—", "detail": f.detail or ""} for f in history],
                     width="stretch", hide_index=True)
        runs = [f.run_id for f in history if f.run_id]
        if runs:
            chosen = st.selectbox("Open a run", runs, key="sch_run_pick", format_func=lambda r: f"run #{r}")
            if st.button("Open run", key="sch_run_open", icon=":material/history:"):
                st.switch_page("pages/runs.py", query_params={"run": str(chosen)})
    if v.kind == "workflow" and editable(v):
        with st.expander("Edit", icon=":material/edit:"):
            schedule_form(v.target_id, v)
        with st.expander("Delete", icon=":material/delete:"):
            st.write(f"Delete **{v.name}** and its history of {len(history)} firings? Runs it started stay.")
            if st.checkbox("Yes, delete this schedule", key="sch_delete_confirm"):
                if st.button("Delete schedule", type="primary", key="sch_delete"):
                    if ui.attempt(lambda: store.delete(actor, v.id) or True):
                        ui.flash(f"Deleted {v.name}.")
                        st.query_params.clear()
                        st.rerun()


# --- new and edited workflow schedules -------------------------------------------------------


def schedule_form(workflow_id: int | None, current: store.ScheduleView | None = None) -> None:
    flows = ui.attempt(lambda: workflows.list_workflows(actor)) or []
    if not flows:
        st.info("There is no workflow to schedule yet: create one on the Workflows page.")
        return
    names = {w.id: w.name for w in flows}
    key = f"sch_form_{current.id if current else 'new'}"
    ids = list(names)
    target = st.selectbox("Workflow", ids, format_func=names.get, key=f"{key}_wf",
                          index=ids.index(workflow_id) if workflow_id in names else 0, disabled=current is not None)
    c1, c2 = st.columns(2)
    expression = c1.text_input("Cron", value=current.cron if current else "0 9 * * 1-5", key=f"{key}_cron",
                               help="minute hour day month weekday (0 or 7 is Sunday), or six fields with seconds "
                                    "first; @hourly, @daily, @weekly, @monthly.")
    zone = c2.text_input("Timezone", value=current.timezone if current else tz, key=f"{key}_tz",
                         help="An IANA name such as Europe/Paris; daylight saving is followed.")
    upcoming = None
    try:
        upcoming = store.preview(expression, zone, 3)
    except MeterbookError as exc:  # shown in place of the preview; saving refuses it again
        st.caption(f":red[{exc}]")
    if upcoming:
        st.caption("Next: " + " · ".join(ui.local_time(t, "%a %Y-%m-%d %H:%M:%S") for t in upcoming)
                   + f" ({tz})")
    name = st.text_input("Name (optional)", value=current.name if current else "", key=f"{key}_name")
    inputs_text = st.text_area("Inputs (JSON)", value=json.dumps(current.inputs or {}) if current else "{}",
                               key=f"{key}_inputs", height=80)
    c3, c4, c5 = st.columns(3)
    misfire = c3.selectbox("If a firing is missed", ["coalesce", "skip"], key=f"{key}_misfire",
                           index=0 if not current or current.misfire == "coalesce" else 1,
                           format_func=lambda m: {"coalesce": "Run once, late", "skip": "Skip and record"}[m])
    grace = c4.number_input("Grace window (s)", min_value=0, max_value=7 * 86400, step=60, key=f"{key}_grace",
                            value=current.grace_s if current else 300)
    no_overlap = c5.checkbox("No overlap", value=current.no_overlap if current else False, key=f"{key}_overlap",
                             help="Skip a firing while the previous run is still going.")
    if st.button("Save schedule" if current else "Create schedule", type="primary", key=f"{key}_save",
                 icon=":material/save:"):
        try:
            inputs = json.loads(inputs_text or "{}")
        except json.JSONDecodeError as exc:
            st.error(f"The inputs are not JSON: {exc.msg} (line {exc.lineno}). Nothing was saved.")
            return
        fields = dict(cron=expression, timezone=zone, name=name, inputs=inputs, misfire=misfire, grace_s=int(grace),
                      no_overlap=no_overlap)
        saved = ui.attempt(lambda: store.update(actor, current.id, **fields) if current else
                           store.create(actor, kind="workflow", target_id=target, **fields))
        if saved:
            ui.flash(f"Saved {saved.name}; next firing {when(saved.next_fire_time)}.")
            st.query_params.clear()
            st.query_params["schedule"] = str(saved.id)
            st.rerun()


# --- the page -------------------------------------------------------------------------------

st.title("Schedules")
ui.show_flash()
sidecar_banner()

raw = st.query_params.get("schedule", "")
if raw.isdigit():
    one_schedule(int(raw))
    st.stop()

items = ui.attempt(lambda: store.list_schedules(actor)) or []
wanted = st.query_params.get("workflow", "")
if can_edit:
    with st.expander("New workflow schedule", icon=":material/add_alarm:", expanded=wanted.isdigit() or not items):
        schedule_form(int(wanted) if wanted.isdigit() else None)
if not items:
    st.info("No schedules yet. Schedule a workflow above, or a report on the Reports page.",
            icon=":material/schedule:")
else:
    schedule_list(items)
