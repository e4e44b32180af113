"""Cost & Usage: what the workspace spent on AI, on what and by whom, and how well the calls ran.

The period and the filters are widgets bound to the URL's query parameters, so a view can be
shared as a link; a value in a link that this workspace does not know is dropped with a
warning. Selecting any bar lists the ledger rows behind it; the view exports as CSV, Parquet
or Excel. All data comes from ``engine.dashboards`` over one warehouse connection per run.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import streamlit as st

from engine import dashboards
from engine.errors import MeterbookError
from pages import _common as ui

ROWS_PER_PAGE = 50
MAX_ROW_PAGES = 200  # the newest 10,000 rows behind a bar can be paged through; export for more
FILTERS = (  # (URL key, label, what "no filter" reads as)
    ("client", "Client", "All clients"),
    ("project", "Project", "All projects"),
    ("provider", "Provider", "All providers"),
    ("model", "Model", "All models"),
    ("user", "Person", "Everyone"),
    ("kind", "Kind", "All kinds"),
    ("tag", "Tag", "All tags"),
    ("status", "Status", "Any status"),
)
STACK = {"provider": "Provider", "model": "Model"}
TOP_TITLES = {"project": "Projects", "user": "People", "tag": "Tags (prompts)", "workflow_run": "Workflow runs"}
FORMATS = {"csv": "CSV", "parquet": "Parquet", "xlsx": "Excel"}
DRILL = "cost_usage_drill"
ROWS_PAGE = "cost_usage_rows_page"
ROW_COLUMNS = {
    "id": st.column_config.NumberColumn("Row", format="%d"),
    "created_at": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm:ss"),
    "user": "Person", "project": "Project", "client": "Client", "provider": "Provider", "model": "Model",
    "kind": "Kind", "input_tokens": "Input tokens", "cached_input_tokens": "Cached", "cache_write_tokens": "Cache writes",
    "output_tokens": "Output tokens", "images": "Images", "characters": "Characters", "seconds": "Seconds",
    "cost": st.column_config.NumberColumn("Cost", format="$%.6f"),
    "estimated_cost": st.column_config.NumberColumn("Estimated", format="$%.6f"),
    "latency_ms": st.column_config.NumberColumn("Latency", format="%d ms"),
    "ttft_ms": st.column_config.NumberColumn("First token", format="%d ms"),
    "status": "Status", "error": "Error", "tags": "Tags", "workflow_run_id": "Workflow run",
    "notebook_id": "Notebook", "report_id": "Report",
}


# --- formatting -----------------------------------------------------------------------------


def compact(n: int) -> str:
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if abs(n) >= size:
            return f"{n / size:.2f}{suffix}"
    return f"{n:,}"


def duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms / 1000:,.2f} s" if ms >= 1000 else f"{ms:,.0f} ms"


def relative(now, before) -> str | int | None:
    if now is None or not before:
        return None
    change = (Decimal(now) - Decimal(before)) / Decimal(before) * 100
    return 0 if change == 0 else f"{change:+.1f}%"


def points(now: float | None, before: float | None) -> str | int | None:
    if now is None or before is None:
        return None
    change = (now - before) * 100
    return 0 if change == 0 else f"{change:+.2f} pp"


def ms_change(now: float | None, before: float | None) -> str | int | None:
    if now is None or before is None:
        return None
    return 0 if now == before else f"{now - before:+,.0f} ms"


def local(instant: datetime, tz: str, fmt: str = "%d %b %Y %H:%M") -> str:
    return instant.astimezone(ZoneInfo(tz)).strftime(fmt)


# --- the view, from the URL and the widgets -------------------------------------------------


def filter_choices(options) -> dict[str, dict]:
    """Each filter's values → labels, as the URL spells them."""
    return {
        "client": options.clients,
        "project": {**options.projects, dashboards.UNASSIGNED: "No project"},
        "provider": {v: v for v in options.providers},
        "model": {v: v for v in options.models},
        "user": {**options.users, dashboards.UNASSIGNED: "No one (API key)"},
        "kind": {v: v for v in options.kinds},
        "tag": {v: v for v in options.tags},
        "status": {v: v for v in options.statuses},
    }


def unknown_in_link(choices: dict[str, dict]) -> list[str]:
    """Values in the URL this workspace does not know, checked before the widgets read (and drop) them."""
    known = {key: {*labels.values(), everything} for (key, _, everything), labels in zip(FILTERS, choices.values())}
    known["period"] = set(dashboards.PERIODS.values())
    known["by"] = set(STACK.values())
    bad = [f"{key} “{st.query_params[key]}”" for key, labels in known.items()
           if key in st.query_params and key not in st.session_state and st.query_params[key] not in labels]
    for key in ("from", "to"):
        if key in st.query_params and key not in st.session_state:
            try:
                date.fromisoformat(st.query_params[key])
            except ValueError:
                bad.append(f"{key} “{st.query_params[key]}”")
    return bad


def controls(options, today: date) -> dashboards.View:
    choices = filter_choices(options)
    bad = unknown_in_link(choices)
    if bad:
        st.warning(f"This link asked for {', '.join(bad)}, which this workspace does not have; showing the "
                   "view without it.", icon=":material/link_off:")
    top = st.columns([2, 1, 1, 3])
    period = top[0].selectbox("Period", list(dashboards.PERIODS), format_func=dashboards.PERIODS.get,
                              index=1, key="period", bind="query-params")
    first = last = None
    if period == "custom":
        first = top[1].date_input("From", value=today - timedelta(days=29), key="from", bind="query-params")
        last = top[2].date_input("To", value=today, key="to", bind="query-params")
    chosen = {}
    columns = st.columns(4)
    for i, ((key, label, everything), labels) in enumerate(zip(FILTERS, choices.values())):
        chosen[key] = columns[i % 4].selectbox(
            label, [None, *labels], format_func=lambda v, labels=labels, everything=everything:
            everything if v is None else labels[v], key=key, bind="query-params",
        )
    return dashboards.View(period, first, last, chosen["client"], chosen["project"], chosen["provider"],
                           chosen["model"], chosen["user"], chosen["kind"], chosen["tag"], chosen["status"])


# --- sections -------------------------------------------------------------------------------


def headline(summary: dashboards.Summary, tz: str) -> None:
    per, now, before = summary.filters.period, summary.totals.current, summary.totals.previous
    st.caption(
        f"{local(per.start, tz)} to {local(per.end, tz)} ({tz}), against the same span just before: "
        f"{local(per.previous_start, tz)} to {local(per.previous_end, tz)}."
    )
    vs = "vs previous period"
    with st.container(horizontal=True):
        st.metric("Spend", ui.usd(now.spend), relative(now.spend, before.spend), delta_color="inverse",
                  delta_description=vs, border=True,
                  help=f"{now.unpriced:,} calls have no known cost and are not in this total." if now.unpriced else None)
        st.metric("Calls", f"{now.calls:,}", relative(now.calls, before.calls), delta_color="off",
                  delta_description=vs, border=True)
        st.metric("Tokens", compact(now.tokens), relative(now.tokens, before.tokens), delta_color="off",
                  delta_description=vs, border=True, help=f"{now.tokens:,} input and output tokens")
        st.metric("Average cost per call", ui.usd(now.cost_per_call, 4),
                  relative(now.cost_per_call, before.cost_per_call), delta_color="inverse", delta_description=vs,
                  border=True)
        st.metric("Error rate", "—" if now.error_rate is None else f"{now.error_rate:.2%}",
                  points(now.error_rate, before.error_rate), delta_color="inverse", delta_description=vs,
                  border=True, help="Calls that reached a provider and did not succeed.")
        st.metric("Latency p50", duration(now.p50_ms), ms_change(now.p50_ms, before.p50_ms), delta_color="inverse",
                  delta_description=vs, border=True, help="Median time of successful calls (to within 1%).")
        st.metric("Latency p95", duration(now.p95_ms), ms_change(now.p95_ms, before.p95_ms), delta_color="inverse",
                  delta_description=vs, border=True, help="95% of successful calls took no longer (to within 1%).")


def select_bar(chart: str, view: tuple) -> None:
    """A chart's selection becomes the drill-down; clearing it ends the drill-down it started."""
    points = st.session_state[chart].selection.points
    if points:
        st.session_state[DRILL] = {"chart": chart, "point": dict(points[0]), "view": view}
    elif st.session_state.get(DRILL, {}).get("chart") == chart:
        del st.session_state[DRILL]
    st.session_state.pop(ROWS_PAGE, None)


def chart(fig, name: str, alt: str, view: tuple) -> None:
    key = f"cost_usage_chart_{name}"
    st.plotly_chart(fig, key=key, on_select=lambda: select_bar(key, view), selection_mode="points", alt=alt)


def charts(summary: dashboards.Summary, stack_by: str, view: tuple) -> None:
    figs = dashboards.charts(summary, stack_by)
    thing = STACK[stack_by].lower()
    st.subheader(f"Spend over time, by {thing}")
    chart(figs.over_time, "over_time", f"Stacked bars of spend per {summary.filters.period.grain}, by {thing}", view)
    st.subheader(f"{STACK[stack_by]}s compared")
    chart(figs.comparison, "comparison", f"Cost per 1k tokens, latency and error rate by {thing}", view)

    st.subheader("Top spenders")
    tabs = st.tabs(list(TOP_TITLES.values()))
    for tab, (dimension, title) in zip(tabs, TOP_TITLES.items()):
        with tab:
            if dimension == "tag":
                st.caption("The ledger keeps no prompt text: a prompt is known by the tags its feature gives each "
                           "call. A call with several tags counts under each of them.")
            if summary.top[dimension].is_empty():
                st.caption("No calls in this view came from a workflow run." if dimension == "workflow_run"
                           else "Nothing to rank in this view.")
            else:
                chart(figs.top[dimension], f"top_{dimension}", f"{title} by spend, biggest first", view)

    st.subheader("Cached-token savings")
    saving = summary.savings
    if saving.by_model.is_empty() and not saving.unpriced_models:
        st.caption("No call in this view read from or wrote to a prompt cache.")
    elif not saving.by_model.is_empty():
        cols = st.columns(3)
        cols[0].metric("Saved by cache reads", ui.usd(saving.saved), border=True,
                       help=f"{saving.cached_input_tokens:,} cached input tokens")
        cols[1].metric("Extra paid to write caches", ui.usd(saving.write_premium), border=True)
        cols[2].metric("Net saving", ui.usd(saving.net), border=True)
        chart(figs.savings, "savings", "Savings from prompt caching per model", view)
    st.caption(
        "Savings = cached input tokens × (input rate − cache-read rate), at the rates in force when each call was "
        "made (your price overrides, else the catalog); writing a cache can cost more than ordinary input, and "
        "that premium, cache-write tokens × (cache-write rate − input rate), is taken off the net saving."
        + (f" Not counted, as their price is tiered or unknown: {', '.join(saving.unpriced_models)}."
           if saving.unpriced_models else "")
    )


def describe_drill(fields: dict, options, grain: str) -> str:
    parts = []
    for name, value in fields.items():
        if name == "bucket":
            parts.append(value.strftime("%d %b %Y %H:00" if grain == "hour" else "%d %b %Y"))
        elif name in ("project", "user"):
            names = filter_choices(options)[name]
            parts.append(names.get(value, f"{name} #{value}"))
        elif name == "workflow_run":
            parts.append(f"workflow run #{value}")
        elif name == "cached":
            parts.append("calls that used a prompt cache")
        else:
            parts.append(str(value))
    return " · ".join(parts)


def rows_behind(board: dashboards.Dashboard, filters, options, view: tuple) -> None:
    st.subheader("Ledger rows")
    drill = st.session_state.get(DRILL)
    if drill and drill["view"] != view:  # a bar of an earlier view
        del st.session_state[DRILL]
        drill = None
    result = dashboards.drill(filters, drill["point"]) if drill else None
    if result is None:
        st.caption("Select any bar above to list the ledger rows behind it.")
        return
    narrowed, fields = result
    head = st.columns([5, 1])
    head[0].markdown(f"Rows behind **{describe_drill(fields, options, filters.period.grain)}**")
    if head[1].button("Clear", icon=":material/close:", key="cost_usage_clear_drill"):
        del st.session_state[DRILL]
        st.session_state.pop(ROWS_PAGE, None)
        st.rerun()
    page = max(1, int(st.session_state.get(ROWS_PAGE, 1)))
    rows = board.rows(narrowed, ROWS_PER_PAGE, (page - 1) * ROWS_PER_PAGE)
    pages = max(1, min(MAX_ROW_PAGES, -(-rows.total // ROWS_PER_PAGE)))
    if page > pages:
        st.session_state[ROWS_PAGE] = page = pages
        rows = board.rows(narrowed, ROWS_PER_PAGE, (page - 1) * ROWS_PER_PAGE)
    first = (page - 1) * ROWS_PER_PAGE
    if rows.total:
        note = f"Showing rows {first + 1:,}–{first + rows.frame.height:,} of {rows.total:,}, newest first."
        if rows.total > MAX_ROW_PAGES * ROWS_PER_PAGE:
            note += (f" Only the newest {MAX_ROW_PAGES * ROWS_PER_PAGE:,} can be paged through here; "
                     "export the view for all.")
        st.caption(note)
    else:
        st.caption("Showing 0 of 0 rows.")
    st.dataframe(rows.frame, hide_index=True, key="cost_usage_rows", column_config=ROW_COLUMNS)
    if pages > 1:
        st.pagination(pages, key=ROWS_PAGE)


def export(actor, filters, count: int) -> None:
    st.subheader("Export")
    fmt = st.segmented_control("Format", list(FORMATS), format_func=FORMATS.get, default="csv", required=True,
                               key="cost_usage_export_format") or "csv"
    ext, mime = dashboards.EXPORT_FORMATS[fmt]
    n = min(count, dashboards.EXPORT_CAP)
    per = filters.period
    st.download_button(
        f"Download {n:,} rows as {FORMATS[fmt]}", data=lambda: dashboards.export(actor, filters, fmt),
        file_name=f"meterbook-cost-usage-{per.first}-to-{per.last}.{ext}", mime=mime, on_click="ignore",
        icon=":material/download:", key="cost_usage_download", disabled=not count,
    )
    if count > dashboards.EXPORT_CAP:
        st.caption(f"The view has {count:,} rows; an export holds the newest {dashboards.EXPORT_CAP:,}. "
                   "Narrow the period or the filters, or use a notebook, for the rest.")


def page(board: dashboards.Dashboard, actor) -> None:
    tz = board.timezone
    options = board.options()
    if not options.has_usage:
        st.info("No AI usage recorded yet. Every call made through Meterbook is priced and lands here within "
                "seconds: spend, tokens, latency and errors, by project, person, provider and model.",
                icon=":material/monitoring:")
        return
    view = controls(options, datetime.now(ZoneInfo(tz)).date())
    filters = ui.attempt(lambda: board.filters(view))
    if filters is None:
        return
    stack_by = st.segmented_control("Split charts by", list(STACK), format_func=STACK.get, default="provider",
                                    required=True, key="by", bind="query-params") or "provider"
    summary = board.summary(filters, stack_by)
    headline(summary, tz)
    if not summary.totals.current.calls:
        st.info("No calls in this period with these filters. Widen the period or clear a filter.",
                icon=":material/filter_alt_off:")
        return
    identity = (view, stack_by)
    charts(summary, stack_by, identity)
    rows_behind(board, filters, options, identity)
    export(actor, filters, summary.totals.current.calls)


actor = ui.actor()
st.title("Cost & Usage")
try:
    with dashboards.open_dashboard(actor) as board:
        page(board, actor)
except MeterbookError as exc:
    st.error(str(exc), icon=":material/error:")
