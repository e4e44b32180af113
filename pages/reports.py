"""Reports: notebooks and Cost & Usage views emailed on a schedule. List, editor with the email's preview, history.

The open report lives in the URL (``?report=<id>``, or ``?report=new``); ``?notebook=<id>`` opens a
new report of that notebook (the Notebooks page's "Schedule as report"). Sends are queued here and
made by the sidecar's workers; the history shows each one as it really went.
"""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import available_timezones

import streamlit as st

from engine import accounts, dashboards, notebooks
from engine.reports import deliveries, schedule_link, smtp_settings, store
from engine.schedules import store as schedules
from engine.reports.models import FORMATS
from pages import _common as ui

FORMAT_LABELS = {"csv": "CSV", "xlsx": "Excel", "pdf": "PDF"}
SOURCE_LABELS = {"notebook": "A notebook", "dashboard": "A Cost & Usage view"}
STATUS_ICONS = {"queued": "⏳ queued", "sending": "📤 sending", "sent": "✅ sent", "failed": "❌ failed",
                "skipped": "⏭️ skipped"}
KIND_LABELS = {"scheduled": "Scheduled", "now": "Send now", "test": "Test", "resend": "Resend"}
VIEW_FILTERS = (("client_id", "Client", "clients"), ("project_id", "Project", "projects"),
                ("provider", "Provider", "providers"), ("model", "Model", "models"), ("user_id", "Person", "users"))
CRON_EXAMPLE = "0 9 * * 1"
TIMEZONES = sorted(available_timezones())

actor = ui.actor()
can_write = ui.allowed("report.write")
workspace_tz = st.session_state.get("workspace_tz", "UTC")


# --- state --------------------------------------------------------------------------------


def open_report(report_id: int | str) -> None:
    st.query_params["report"] = str(report_id)
    st.query_params.pop("notebook", None)


def close_report() -> None:
    st.query_params.pop("report", None)
    st.query_params.pop("notebook", None)
    st.session_state.pop("reports_dialog", None)


def opened() -> int | str | None:
    raw = st.query_params.get("report", "")
    if raw == "new" or "notebook" in st.query_params:
        return "new"
    return int(raw) if raw.isdigit() else None


def finish(message: str) -> None:
    st.session_state.pop("reports_dialog", None)
    ui.flash(message)
    st.rerun()


@st.dialog("Delete report", on_dismiss=lambda: st.session_state.pop("reports_dialog", None))
def delete_dialog(report: store.ReportView) -> None:
    st.markdown(f"Delete **{report.name}**, its schedule and its delivery history? This cannot be undone.")
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="report_delete_cancel")
        confirm = st.button("Delete report", type="primary", key="report_delete_confirm")
    if cancel:
        st.session_state.pop("reports_dialog", None)
        st.rerun()
    if confirm and ui.attempt(lambda: store.delete(actor, report.id)):
        close_report()
        finish(f"Deleted the report “{report.name}”.")


# --- the list -----------------------------------------------------------------------------


def schedule_text(r: store.ReportView) -> str:
    s = r.schedule
    if s is None:
        return "Not scheduled"
    text = f"{s.cron} ({s.timezone})"
    return f"{text} · paused" if r.paused or s.paused else text


def show_list(reports: list[store.ReportView]) -> None:
    if not reports:
        st.info("No reports yet. A report emails a notebook or a Cost & Usage view to people on a schedule.",
                icon=":material/schedule_send:")
        return
    st.dataframe(
        [{"Name": r.name, "Source": r.source_label, "Schedule": schedule_text(r),
          "Next send": "—" if r.schedule is None or r.paused or r.schedule.next_fire_time is None
          else ui.local_time(r.schedule.next_fire_time),
          "Recipients": ", ".join(r.recipient_emails),
          "Last delivery": (f"{STATUS_ICONS[r.last_delivery.status]} · {ui.local_time(r.last_delivery.at)}"
                            if r.last_delivery else "—")} for r in reports],
        hide_index=True, width="stretch", key="reports_table", alt="Reports, their schedules and last deliveries",
    )


# --- the editor ---------------------------------------------------------------------------


def view_controls(current: dict, key: str) -> dict:
    """A Cost & Usage view: the period and filters, as ``dashboards.View`` fields."""
    with dashboards.open_dashboard(actor) as board:
        options = board.options()
    periods = list(dashboards.PERIODS)
    view: dict = {}
    cols = st.columns([2, 1, 1])
    view["period"] = cols[0].selectbox("Period", periods, format_func=dashboards.PERIODS.get,
                                       index=periods.index(current.get("period", "7d")), key=f"{key}_period",
                                       help="Counted back from each send, in the workspace's time zone.")
    if view["period"] == "custom":
        today = date.today()
        first = date.fromisoformat(current["first"]) if current.get("first") else today - timedelta(days=29)
        last = date.fromisoformat(current["last"]) if current.get("last") else today
        view["first"] = cols[1].date_input("From", value=first, key=f"{key}_first").isoformat()
        view["last"] = cols[2].date_input("To", value=last, key=f"{key}_last").isoformat()
    cols = st.columns(len(VIEW_FILTERS))
    for col, (name, label, attr) in zip(cols, VIEW_FILTERS):
        values = getattr(options, attr)
        labels = values if isinstance(values, dict) else {v: v for v in values}
        choices = [None, *labels]
        now = current.get(name)
        view[name] = col.selectbox(label, choices, index=choices.index(now) if now in choices else 0,
                                   format_func=lambda v, labels=labels: "All" if v is None else labels[v],
                                   key=f"{key}_{name}")
    return {k: v for k, v in view.items() if v is not None}


def schedule_controls(report: store.ReportView | None, key: str) -> tuple[str, str]:
    s = report.schedule if report else None
    on = st.toggle("Send on a schedule", value=s is not None, key=f"{key}_scheduled")
    if not on:
        return "", workspace_tz
    cols = st.columns([1, 1])
    cron = cols[0].text_input("Cron", value=s.cron if s else CRON_EXAMPLE, key=f"{key}_cron",
                              help="Minute, hour, day of month, month, day of week: 0 9 * * 1 is Mondays at 9:00.")
    tz_value = s.timezone if s else workspace_tz
    timezone = cols[1].selectbox("Time zone", TIMEZONES, index=TIMEZONES.index(tz_value) if tz_value in TIMEZONES
                                 else None, key=f"{key}_tz", help="Daylight saving is followed.")
    times = ui.attempt(lambda: schedule_link.next_times(cron, timezone or "", 3))
    if times:
        st.caption("Next sends: " + " · ".join(ui.local_time(t, "%a %d %b %Y %H:%M") for t in times)
                   + f" ({workspace_tz})")
    return cron, timezone


def editor(report: store.ReportView | None, members: dict[int, str], notebook_list) -> dict | None:
    """The report's fields as the form stands; None while a notebook report has no notebook to pick."""
    key = f"report_{report.id if report else 'new'}"
    preset_nb = st.query_params.get("notebook")
    fields: dict = {"name": st.text_input("Name", value=report.name if report else "", key=f"{key}_name")}
    sources = list(SOURCE_LABELS)
    source_now = report.source if report else "notebook" if preset_nb or notebook_list else "dashboard"
    fields["source"] = st.radio("Sends", sources, index=sources.index(source_now), format_func=SOURCE_LABELS.get,
                                horizontal=True, key=f"{key}_source")
    if fields["source"] == "notebook":
        ids = [n.id for n in notebook_list]
        titles = {n.id: n.title for n in notebook_list}
        now = report.notebook_id if report else int(preset_nb) if preset_nb and preset_nb.isdigit() else None
        if not ids:
            st.info("No notebook to send yet: make one on the Notebooks page first.", icon=":material/menu_book:")
            return None
        fields["notebook_id"] = st.selectbox("Notebook", ids, index=ids.index(now) if now in ids else 0,
                                             format_func=titles.get, key=f"{key}_notebook",
                                             help="The email shows the notebook's results, Markdown and charts.")
        fields["rerun_queries"] = st.checkbox(
            "Run its SQL cells again before each send", value=report.rerun_queries if report else True,
            key=f"{key}_rerun", help="So each email has the numbers as of its send. Prompt cells are not run again "
                                     "(they are charged); their last answers are sent.")
    else:
        fields["view"] = view_controls(report.view or {} if report else {}, key)
    fields["cron"], fields["timezone"] = schedule_controls(report, key)
    fields["recipient_user_ids"] = st.multiselect(
        "Members", list(members), default=[u for u in report.recipient_user_ids if u in members] if report
        else [actor.user_id],
        format_func=members.get, key=f"{key}_members")
    fields["recipient_addresses"] = st.text_area(
        "Other addresses", value=", ".join(report.recipient_addresses) if report else "", key=f"{key}_addresses",
        help="Separated by commas or new lines.", height=68)
    cols = st.columns(len(FORMATS) + 1)
    chosen = set(report.formats) if report else {"csv"}
    fields["formats"] = [f for col, f in zip(cols, FORMATS)
                         if col.checkbox(f"Attach {FORMAT_LABELS[f]}", value=f in chosen, key=f"{key}_{f}")]
    fields["skip_if_empty"] = cols[-1].checkbox("Skip if empty", value=report.skip_if_empty if report else True,
                                                key=f"{key}_skip", help="No rows in any table, or no spend in "
                                                                        "the period: nothing is sent.")
    return fields


def save(report: store.ReportView | None, fields: dict) -> None:
    if report is None:
        made = ui.attempt(lambda: store.create(actor, **fields))
        if made:
            open_report(made.id)
            finish(f"Saved the report “{made.name}”.")
        return
    if ui.attempt(lambda: store.update(actor, report.id, **fields)):
        finish(f"Saved the report “{fields['name'].strip()}”.")


def show_preview(report: store.ReportView | None, fields: dict | None) -> None:
    draft = None if report else {k: v for k, v in (fields or {}).items() if k not in ("cron", "timezone")}
    if report is None and not draft:
        return
    if draft is not None and not draft.get("name", "").strip():
        draft["name"] = "Untitled report"
    p = ui.attempt(lambda: deliveries.preview(actor, report.id if report else None, draft=draft))
    if p is None:
        return
    st.markdown(f"**Subject:** {p.subject}  \n**To:** {', '.join(p.recipients)}")
    if p.attachments:
        st.caption("Attached: " + ", ".join(f"{name} ({size / 1024:,.0f} kB)" for name, _, size in p.attachments))
    if p.empty_reason:
        st.warning(f"{p.empty_reason} " + ("A scheduled send would be skipped." if p.skip_if_empty
                                            else "It would be sent anyway."), icon=":material/info:")
    with st.container(border=True, key="report_preview"):
        st.html(p.preview_html)


def actions(report: store.ReportView) -> None:
    with st.container(horizontal=True):
        if st.button("Send now", type="primary", icon=":material/send:", key="report_send_now"):
            if ui.attempt(lambda: deliveries.send_now(actor, report.id)):
                finish("Queued: it goes out within seconds. The history below shows how it went.")
        if st.button("Send test to me", icon=":material/outgoing_mail:", key="report_send_test"):
            if ui.attempt(lambda: deliveries.send_test(actor, report.id)):
                finish("Queued a test to you only.")
        if report.paused:
            if st.button("Resume", icon=":material/play_arrow:", key="report_resume"):
                if ui.attempt(lambda: store.resume(actor, report.id)):
                    finish("Resumed: scheduled sends go out again.")
        elif st.button("Pause", icon=":material/pause:", key="report_pause"):
            if ui.attempt(lambda: store.pause(actor, report.id)):
                finish("Paused: no scheduled sends until you resume it.")
        st.button("Delete", icon=":material/delete:", key="report_delete",
                  on_click=lambda: st.session_state.update(reports_dialog=("delete", report.id)))


@st.fragment(run_every=5)
def history(report: store.ReportView) -> None:
    rows = ui.attempt(lambda: deliveries.history(actor, report.id)) or []
    if not rows:
        st.caption("Nothing sent yet.")
        return
    st.dataframe(
        [{"#": d.id, "Kind": KIND_LABELS[d.kind], "Status": STATUS_ICONS[d.status],
          "Asked": ui.local_time(d.created_at), "Finished": ui.local_time(d.finished_at),
          "Attempts": d.attempts, "To": ", ".join(d.recipients), "Outcome": d.outcome} for d in rows],
        hide_index=True, width="stretch", key="report_history", alt="Each delivery of this report and how it went",
    )
    finished = [d for d in rows if d.status in ("sent", "failed", "skipped")]
    if can_write and finished:
        with st.container(horizontal=True, vertical_alignment="bottom"):
            pick = st.selectbox("Delivery", [d.id for d in finished], key="report_resend_pick",
                                format_func=lambda i: f"#{i} · {next(d.status for d in finished if d.id == i)}")
            if st.button("Resend", icon=":material/replay:", key="report_resend"):
                if ui.attempt(lambda: deliveries.resend(actor, pick)):
                    ui.flash("Queued the resend.")
                    st.rerun(scope="app")


def warnings(reports: list[store.ReportView]) -> None:
    """Say plainly when nothing would go out: no mail server, or no sidecar firing the schedules."""
    if smtp_settings.get(actor) is None and smtp_settings.environment_server() is None:
        st.warning("No mail server is set up, so reports cannot be emailed yet.", icon=":material/mail_lock:")
        st.page_link("pages/settings.py", label="Set one up under Settings → Email", icon=":material/settings:")
    if any(r.schedule and not r.paused for r in reports) and not schedules.scheduler_status().running:
        st.warning("No sidecar is firing schedules right now, so scheduled sends wait until one runs "
                   "(`python -m engine up` starts it).", icon=":material/schedule:")


# --- layout -------------------------------------------------------------------------------

st.title("Reports")
ui.show_flash()
reports = ui.attempt(lambda: store.list_reports(actor)) or []
warnings(reports)
current = opened()
report = next((r for r in reports if r.id == current), None) if isinstance(current, int) else None

if current is None or (isinstance(current, int) and report is None):
    if isinstance(current, int):
        st.warning("That report does not exist in this workspace.", icon=":material/warning:")
    if can_write:
        st.button("New report", type="primary", icon=":material/add:", key="report_new", on_click=open_report,
                  args=("new",))
    show_list(reports)
    if reports:
        by_id = {r.id: r.name for r in reports}
        with st.container(horizontal=True, vertical_alignment="bottom"):
            pick = st.selectbox("Report", list(by_id), format_func=by_id.get, key="report_pick")
            st.button("Open", icon=":material/open_in_new:", key="report_open", on_click=lambda: open_report(
                st.session_state["report_pick"]))
    st.stop()

st.button("All reports", icon=":material/arrow_back:", key="report_back", on_click=close_report)
if report is not None:
    st.subheader(report.name)
    st.caption(f"{report.source_label} · {schedule_text(report)} · owner {report.owner_name or '—'}")
members = {m.user_id: f"{m.name} ({m.email})" for m in accounts.list_members(actor)}
notebook_list = notebooks.list_notebooks(actor)
edit_tab, preview_tab, history_tab = st.tabs([":material/edit: Report", ":material/mail: Preview",
                                              ":material/history: History"], key="report_tab", on_change="rerun")
with edit_tab:
    if can_write:
        fields = editor(report, members, notebook_list)
        if fields is not None and st.button("Save report", type="primary", icon=":material/save:", key="report_save"):
            save(report, fields)
        if report is not None:
            actions(report)
    else:
        fields = None
        st.info(f"Only editors and up can change or send reports. Your role is {ui.role()}.", icon=":material/lock:")
with preview_tab:
    st.caption("The email exactly as it would be sent now (as last saved), charts as images, from the data as it "
               "stands. A notebook report runs its SQL cells again just before it is sent.")
    if preview_tab.open:  # rendering runs the queries and draws the charts: only when looked at
        show_preview(report, fields if report is None else None)
with history_tab:
    if report is not None:
        history(report)
    else:
        st.caption("Save the report to send it.")

dialog = st.session_state.get("reports_dialog")
if dialog and report is not None and dialog == ("delete", report.id):
    delete_dialog(report)
