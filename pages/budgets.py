"""Budgets & Alerts: spending limits with what is spent, held and left, their burn-down and forecast, and the alerts."""

from __future__ import annotations

from decimal import Decimal

import streamlit as st

from analytics import budget_figures
from engine import alerts, budgets, monitor
from engine.budget_periods import PERIOD_LABELS, PERIODS
from engine.budget_scope import BY_ID, SCOPE_LABELS, SCOPES
from engine.dbtypes import utcnow
from pages import _common as ui

BUDGETS_TAB, ALERTS_TAB = ":material/savings: Budgets", ":material/notifications: Alerts"
KIND_LABELS = {"threshold": "Threshold", "forecast": "Forecast", "spike": "Spike", "billing": "Billing"}
DELIVERY_LABELS = {"pending": "Waiting to send", "sending": "Sending", "sent": "Sent", "partial": "Partly sent",
                   "failed": "Failed", "in_app": "In the app only"}
CAUSE_TITLES = {"model": "Model", "user": "Person", "workflow": "Workflow"}

actor = ui.actor()
can_write = ui.allowed("budget.write")
can_triage = ui.allowed("alert.manage")


# --- state helpers ------------------------------------------------------------------------


def open_dialog(kind: str) -> None:
    st.session_state["budget_dialog"] = (kind, st.session_state["budget_pick"])


def close_dialog() -> None:
    st.session_state.pop("budget_dialog", None)


def finish(message: str) -> None:
    close_dialog()
    ui.flash(message)
    st.rerun()


def show_budget(budget_id: int) -> None:
    """From an alert to its budget: pick it and bring the Budgets tab forward."""
    st.session_state["budget_pick"] = budget_id
    st.session_state["budgets_tab"] = BUDGETS_TAB


# --- the form, shared by "New budget" and "Edit budget" -------------------------------------


def budget_form(prefix: str, choices: budgets.Choices, members: dict[int, str],
                current: budgets.BudgetView | None = None) -> dict | None:
    """The budget's fields as widgets keyed ``{prefix}_…``; returns them when the save button is pressed."""
    name = st.text_input("Name", value=current.name if current else "", placeholder="e.g. Support bot, monthly",
                         key=f"{prefix}_name")
    scope = st.selectbox("Covers", SCOPES, index=SCOPES.index(current.scope) if current else 0,
                         format_func=SCOPE_LABELS.get, key=f"{prefix}_scope",
                         help="Every call that matches is counted against the budget and checked before it runs.")
    target = None
    if scope in BY_ID:
        options = {"client": choices.clients, "project": choices.projects, "user": choices.users,
                   "api_key": choices.api_keys}[scope]
        if current and current.scope == scope and current.scope_id not in options:
            options = {**options, current.scope_id: current.target}
        if not options:
            st.caption(f"This workspace has no {SCOPE_LABELS[scope].lower()} to choose yet.")
        ids = list(options)
        target = st.selectbox(SCOPE_LABELS[scope], ids, format_func=options.get, key=f"{prefix}_target_{scope}",
                              index=ids.index(current.scope_id) if current and current.scope_id in ids else 0)
    elif scope != "workspace":
        known = {"provider": choices.providers, "model": choices.models, "tag": choices.tags}[scope]
        if current and current.scope == scope and current.scope_value not in known:
            known = [current.scope_value, *known]
        target = st.selectbox(SCOPE_LABELS[scope], known, accept_new_options=True, key=f"{prefix}_target_{scope}",
                              index=known.index(current.scope_value) if current and current.scope_value in known
                              else (0 if known else None),
                              placeholder=f"Type a {SCOPE_LABELS[scope].lower()} name")
    with st.container(horizontal=True):
        period = st.selectbox("Period", PERIODS, index=PERIODS.index(current.period) if current else 2,
                              format_func=PERIOD_LABELS.get, key=f"{prefix}_period",
                              help="Calendar days, weeks (from Monday) and months in the workspace's time zone.")
        limit = st.text_input("Limit (USD)", value=str(current.limit_usd.normalize()) if current else "",
                              placeholder="e.g. 250", key=f"{prefix}_limit")
    action = st.segmented_control("At the limit", budgets.ACTIONS, default=current.action if current else "block",
                                  format_func=budgets.ACTION_LABELS.get, key=f"{prefix}_action")
    downgrade_to = None
    if action == "downgrade":
        targets = choices.downgrade_targets
        if current and current.downgrade_to and current.downgrade_to not in targets:
            targets = [current.downgrade_to, *targets]
        downgrade_to = st.selectbox("Switch to", targets, accept_new_options=True, key=f"{prefix}_downgrade",
                                    index=targets.index(current.downgrade_to) if current and current.downgrade_to
                                    in targets else None, placeholder="connection/model, like openai/gpt-4o-mini")
    thresholds = st.text_input("Alert at (% of the limit)",
                               value=", ".join(map(str, current.thresholds)) if current else "50, 80, 100",
                               key=f"{prefix}_thresholds")
    owners = st.multiselect("Email alerts to", list(members), format_func=members.get, key=f"{prefix}_owners",
                            default=[o for o in current.owner_ids if o in members] if current else [actor.user_id])
    webhook = st.text_input(
        "Webhook (Slack-compatible)", type="password", key=f"{prefix}_webhook",
        placeholder=f"Saved: {current.webhook_hint}. Type a new address to replace it"
        if current and current.webhook_hint else "https://hooks.slack.com/services/…",
        help="Alerts are posted as JSON with a “text” field. The address is stored encrypted and never shown again.",
    )
    remove_webhook = bool(current and current.webhook_hint) and st.checkbox("Remove the saved webhook",
                                                                             key=f"{prefix}_webhook_remove")
    if not st.button("Save budget" if current else "Create budget", type="primary", key=f"{prefix}_submit",
                     icon=":material/save:" if current else ":material/add:"):
        return None
    fields = dict(name=name, scope=scope, target=target, period=period, limit_usd=limit, action=action or "block",
                  downgrade_to=downgrade_to, thresholds=thresholds, owner_ids=owners)
    if current is None:
        return fields | {"webhook_url": webhook or None}
    return fields | ({"webhook_url": ""} if remove_webhook else {"webhook_url": webhook} if webhook else {})


@st.dialog("Edit budget", width="large", on_dismiss=close_dialog)
def edit_dialog(budget: budgets.BudgetView, choices: budgets.Choices, members: dict[int, str]) -> None:
    fields = budget_form("edit_budget", choices, members, budget)
    if fields and ui.attempt(lambda: budgets.update_budget(actor, budget.id, **fields)):
        finish(f"Budget “{fields['name'].strip()}” saved.")


@st.dialog("Delete budget", on_dismiss=close_dialog)
def delete_dialog(budget: budgets.BudgetView) -> None:
    st.markdown(f"Delete **{budget.name}**? Calls it covers will no longer be checked against it. "
                "Its alerts stay in the history.")
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="delete_budget_cancel")
        confirm = st.button("Delete budget", type="primary", icon=":material/delete:", key="delete_budget_confirm")
    if cancel:
        close_dialog()
        st.rerun()
    if confirm and ui.attempt(lambda: budgets.delete_budget(actor, budget.id) or True):
        finish(f"Budget “{budget.name}” deleted.")


# --- the two tabs ---------------------------------------------------------------------------


def budgets_tab(rows: list[budgets.BudgetView]) -> None:
    if can_write:
        with st.expander("New budget", icon=":material/add_card:", expanded=not rows):
            choices = budgets.choices(actor)
            fields = budget_form("new_budget", choices, choices.users)
            if fields:
                created = ui.attempt(lambda: budgets.create_budget(actor, **fields))
                if created:
                    st.session_state["budget_pick"] = created.id
                    ui.flash(f"Budget “{created.name}” created.")
                    st.rerun()
    if not rows:
        st.info("No budgets yet. A budget caps what calls of a scope (the workspace, a client, a project, a model…) "
                "may spend in a day, week, month or in all; a hard one refuses a call before it could pass it."
                + ("" if can_write else " An admin can create one."), icon=":material/savings:")
        return
    st.plotly_chart(budget_figures.usage_bars([(b.name, b.limit_usd, b.spent, b.held) for b in rows]),
                    width="stretch", key="budget_bars", config={"displayModeBar": False})
    st.dataframe(
        [{"Name": b.name, "Covers": b.target, "Period": PERIOD_LABELS[b.period],
          "At the limit": budgets.ACTION_LABELS[b.action] + (f" → {b.downgrade_to}" if b.downgrade_to else ""),
          "Limit": ui.usd(b.limit_usd), "Spent": ui.usd(b.spent), "Held": ui.usd(b.held),
          "Remaining": ui.usd(b.remaining), "Used": b.used, "Status": "On" if b.enabled else "Off"} for b in rows],
        column_config={"Used": st.column_config.ProgressColumn("Used", min_value=0, max_value=1, format="percent",
                                                               help="Spent so far as a share of the limit.")},
        hide_index=True, width="stretch", key="budget_table",
    )
    by_id = {b.id: b for b in rows}
    if st.session_state.get("budget_pick") not in by_id:
        st.session_state["budget_pick"] = rows[0].id
    st.subheader("Budget detail")
    with st.container(horizontal=True, vertical_alignment="bottom"):
        chosen = by_id[st.selectbox("Budget", list(by_id), format_func=lambda i: by_id[i].name, key="budget_pick")]
        if can_write:
            st.button("Edit", icon=":material/edit:", key="budget_edit", on_click=open_dialog, args=("edit",))
            toggle = st.button("Turn off" if chosen.enabled else "Turn on", key="budget_toggle",
                               icon=":material/toggle_off:" if chosen.enabled else ":material/toggle_on:")
            st.button("Delete", icon=":material/delete:", key="budget_delete", on_click=open_dialog,
                      args=("delete",))
            if toggle and ui.attempt(lambda: budgets.set_enabled(actor, chosen.id, not chosen.enabled) or True):
                finish(f"Budget “{chosen.name}” turned {'off' if chosen.enabled else 'on'}.")
    detail(chosen)


def detail(b: budgets.BudgetView) -> None:
    chart = ui.attempt(lambda: budgets.burndown(actor, b.id))
    if chart is None:
        return
    f = chart.forecast
    cols = st.columns(4)
    cols[0].metric("Spent", ui.usd(b.spent), border=True)
    cols[1].metric("Held for calls in progress", ui.usd(b.held), border=True)
    cols[2].metric("Remaining", ui.usd(b.remaining), border=True)
    end = "in 30 days" if b.period == "total" else "at period end"
    cols[3].metric(f"Forecast {end}", ui.usd(f.expected) if f else "—", border=True,
                   delta=f"{ui.usd(f.expected - b.limit_usd)} over" if f and f.expected > b.limit_usd else None,
                   delta_color="inverse")
    period = ("all time" if b.period == "total" else
              f"{ui.local_time(b.period_start, '%a %d %b')} – {ui.local_time(b.period_end, '%a %d %b %H:%M')}")
    st.caption(f"{b.target} · {PERIOD_LABELS[b.period].lower()} limit {ui.usd(b.limit_usd)} ({period}) · "
               f"{budgets.ACTION_LABELS[b.action].lower()} · alerts at {', '.join(f'{t}%' for t in b.thresholds)}"
               + ("" if b.enabled else " · turned off: calls are not checked against it"))
    st.plotly_chart(
        budget_figures.burndown(
            b.limit_usd, chart.actual, [(p.at, p.expected, p.low, p.high) for p in f.path] if f else (),
            f.exhausted_at if f else None, st.session_state.get("workspace_tz", "UTC")),
        width="stretch", key="budget_burndown", config={"displayModeBar": False},
    )
    if f is None:
        st.caption("No forecast yet: it needs at least one full day of spend in this budget's scope.")
    else:
        how = "each weekday's own level and hours" if f.weekday_aware else "the average day (weekdays are told apart after two weeks)"
        runs_out = (f"Expected to run out around {ui.local_time(f.exhausted_at, '%a %d %b %H:%M')}."
                    if f.exhausted_at else "Not expected to run out before the period ends.")
        st.caption(f"{runs_out} Forecast from {f.history_days} days of history, using {how}; "
                   f"the shaded band is an 80% range ({ui.usd(f.low)}–{ui.usd(f.high)}).")


def alerts_tab(rows: list[alerts.AlertView], budget_names: dict[int, str]) -> None:
    st.toggle("Show acknowledged and snoozed", key="alerts_show_all")
    if not rows:
        st.info("No alerts need attention. Budgets alert at their thresholds and when their forecast passes the "
                "limit; spend spikes on a project or model alert too." if not st.session_state.get("alerts_show_all")
                else "No alerts yet.", icon=":material/notifications_off:")
        return
    now = utcnow()
    st.dataframe(
        [{"When": ui.local_time(a.created_at), "Kind": KIND_LABELS.get(a.kind, a.kind), "Alert": a.title,
          "Budget": budget_names.get(a.budget_id, "—") if a.budget_id else "—", "Status": a.status(now),
          "Sent": DELIVERY_LABELS.get(a.delivery, a.delivery)} for a in rows],
        hide_index=True, width="stretch", key="alert_table",
    )
    by_id = {a.id: a for a in rows}
    if st.session_state.get("alert_pick") not in by_id:  # acknowledged, snoozed or filtered away since
        st.session_state["alert_pick"] = rows[0].id
    a = by_id[st.selectbox("Alert", list(by_id), key="alert_pick", help="What it was about, and what to do with it.",
                           format_func=lambda i: f"{ui.local_time(by_id[i].created_at)} · {by_id[i].title}")]
    with st.container(border=True):
        st.markdown(f"**{a.title}**")
        st.write(a.message)
        st.caption(f"{KIND_LABELS.get(a.kind, a.kind)} · {ui.local_time(a.created_at)} · {a.status(now)}"
                   + (f" by {a.acknowledged_by}" if a.acknowledged_by else "")
                   + (f" until {ui.local_time(a.snoozed_until)}" if a.status(now) == "Snoozed" else "")
                   + f" · {DELIVERY_LABELS.get(a.delivery, a.delivery)}")
        if a.delivery_error:
            st.warning(a.delivery_error, icon=":material/mail_lock:")
        causes = a.detail.get("causes") if a.kind == "spike" else None
        if causes:
            cols = st.columns(len(causes))
            for col, (name, items) in zip(cols, causes.items()):
                col.dataframe([{CAUSE_TITLES.get(name, name): c["label"], "Today": ui.usd(Decimal(c["today"])),
                                "Typical day": ui.usd(Decimal(c["typical"]))} for c in items],
                              hide_index=True, width="stretch", key=f"alert_causes_{name}")
        with st.container(horizontal=True, vertical_alignment="bottom"):
            if a.budget_id in budget_names:
                st.button("Open budget", icon=":material/open_in_new:", key="alert_open_budget",
                          on_click=show_budget, args=(a.budget_id,))
            if can_triage and a.acknowledged_at is None:
                if st.button("Acknowledge", type="primary", icon=":material/done:", key="alert_ack") and ui.attempt(
                        lambda: alerts.acknowledge(actor, a.id) or True):
                    ui.flash("Alert acknowledged.")
                    st.rerun()
                how_long = st.selectbox("Snooze for", list(alerts.SNOOZE_CHOICES), key="alert_snooze_for")
                if st.button("Snooze", icon=":material/snooze:", key="alert_snooze") and ui.attempt(
                        lambda: alerts.snooze(actor, a.id, alerts.SNOOZE_CHOICES[how_long])):
                    ui.flash(f"Alert snoozed for {how_long}.")
                    st.rerun()


# --- layout ---------------------------------------------------------------------------------

monitor.watch(actor)  # forecasts and spikes get looked at (throttled) when someone looks here
budget_rows = budgets.list_budgets(actor)
alert_rows = alerts.list_alerts(actor, only_open=not st.session_state.get("alerts_show_all", False))

with st.container():
    st.title("Budgets & Alerts")
    st.caption("Limits on what calls may spend, held before each call so they are never overshot, with alerts "
               "before they are crossed.")
    ui.show_flash()

budgets_panel, alerts_panel = st.tabs([BUDGETS_TAB, ALERTS_TAB], key="budgets_tab", on_change="rerun")
if budgets_panel.open:
    with budgets_panel:
        budgets_tab(budget_rows)
if alerts_panel.open:
    with alerts_panel:
        alerts_tab(alert_rows, {b.id: b.name for b in budget_rows})

if dialog := st.session_state.get("budget_dialog"):
    kind, budget_id = dialog
    target = next((b for b in budget_rows if b.id == budget_id), None)
    if target is None:
        close_dialog()
    elif kind == "edit":
        choices = budgets.choices(actor)
        edit_dialog(target, choices, choices.users)
    else:
        delete_dialog(target)
