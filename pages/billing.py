"""Billing: the plan and its status, use against each limit, plans to compare, the portal, invoices."""

from __future__ import annotations

from decimal import Decimal

import streamlit as st

from engine.billing import accounts as billing
from engine.billing.limits import GRACE
from engine.billing.plans import FEATURE_LABELS, LIMIT_LABELS, LIMITS, Plan
from pages import _common as ui

STATUS_LABELS = {"active": "Active", "trialing": "Trial", "past_due": "Payment overdue", "unpaid": "Unpaid",
                 "canceled": "Cancelled", "incomplete": "Waiting for the first payment",
                 "incomplete_expired": "Checkout expired", "none": "No subscription", "paused": "Paused"}
CONFIGURE = """Set these environment variables (or put them in `.env`) and restart Meterbook:

| Variable | What it is |
|---|---|
| `METERBOOK_STRIPE_SECRET_KEY` | Stripe secret key (`sk_live_…` or `sk_test_…`) |
| `METERBOOK_STRIPE_WEBHOOK_SECRET` | the webhook endpoint's signing secret (`whsec_…`) |
| `METERBOOK_STRIPE_PRICE_PRO`, `METERBOOK_STRIPE_PRICE_BUSINESS` | the plans' monthly prices |
| `METERBOOK_STRIPE_PRICE_PRO_USAGE`, `METERBOOK_STRIPE_PRICE_BUSINESS_USAGE` | metered prices on the AI-spend meter |
| `METERBOOK_STRIPE_METER_ID` | that meter's id, for the daily reconciliation |
"""

actor = ui.actor()
st.title("Billing")
ui.show_flash()


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]  # not str.capitalize: it would lower "AI"


def limit_text(value) -> str:
    if value is None:
        return "Unlimited"
    return ui.usd(value) if isinstance(value, Decimal) else f"{value:,}"


overview = ui.attempt(lambda: billing.overview(actor))
if overview is None:
    st.stop()

if not overview.configured:
    st.info("This workspace runs **self-hosted**: billing is not configured, so there are no plan limits and "
            "nothing is charged.", icon=":material/dns:")
    with st.expander("How to turn on billing with Stripe"):
        st.markdown(CONFIGURE)
    st.stop()

state = overview.state
can_manage = overview.can_manage

back = st.query_params.get("checkout")
if back == "success" and not st.session_state.get("billing_refreshed"):
    st.session_state["billing_refreshed"] = True
    with st.spinner("Checking the subscription with Stripe…"):
        fresh = ui.attempt(lambda: billing.refresh(actor))
    if fresh is not None:
        overview = billing.overview(actor)
        state = overview.state
    st.success("Thank you. The plan changes as soon as Stripe confirms the payment; this page shows what Stripe "
               "says now.", icon=":material/check_circle:")
elif back == "cancelled":
    st.info("Checkout was cancelled; nothing was charged.")

# --- the plan now -------------------------------------------------------------------------

with st.container(border=True):
    c1, c2, c3 = st.columns(3)
    c1.metric("Plan", state.plan.name)
    c2.metric("Status", STATUS_LABELS.get(state.status, state.status))
    c3.metric("Renews" if not overview.cancel_at_period_end else "Ends",
              ui.local_time(overview.period_end, "%Y-%m-%d") if overview.period_end else "—")
    if state.status in GRACE and state.grace_until is not None:
        if state.plan.key == state.subscribed_plan:
            st.warning(f"The last payment failed. {state.plan.name} keeps working until "
                       f"{ui.local_time(state.grace_until)}; after that Free limits apply until it is paid. "
                       "Nothing is deleted.", icon=":material/warning:")
        else:
            st.error("The payment is overdue and the grace period has ended: Free limits apply until it is paid. "
                     "Nothing was deleted.", icon=":material/error:")
    if can_manage and overview.has_customer:
        with st.container(horizontal=True):
            if st.button("Manage payment and invoices", icon=":material/open_in_new:", key="portal"):
                st.session_state["billing_link"] = ("Open Stripe's customer portal",
                                                    ui.attempt(lambda: billing.portal_url(actor)))
            if st.button("Refresh from Stripe", icon=":material/sync:", key="refresh"):
                if ui.attempt(lambda: billing.refresh(actor), "Up to date with Stripe.") is not None:
                    st.rerun()

link = st.session_state.pop("billing_link", None)
if link and link[1]:
    # A bearer link: shown to this user once, never stored or logged.
    st.link_button(link[0], link[1], type="primary", icon=":material/open_in_new:")

# --- use this period ----------------------------------------------------------------------

st.subheader("This month")
for use in overview.usage:
    if use.allowed is None:
        st.markdown(f"**{cap(use.label)}**: {limit_text(use.used)} (unlimited)")
        continue
    share = float(min(Decimal(use.used) / Decimal(use.allowed), Decimal(1))) if use.allowed else 1.0
    over = use.used >= use.allowed
    note = ""
    if over and use.limit == "ai_spend":
        note = " — billed as overage" if state.plan.overage == "billed" else " — AI calls are paused until next month"
    elif over:
        note = " — limit reached"
    st.progress(share, text=f"{cap(use.label)}: {limit_text(use.used)} of {limit_text(use.allowed)}{note}")

# --- plans ----------------------------------------------------------------------------------

st.subheader("Plans")
subscribed = state.status in billing.SUBSCRIBED


def comparison(all_plans: list[Plan]) -> str:
    """The plans side by side as one Markdown table: a row per limit and feature."""
    head = "| | " + " | ".join(f"**{p.name}**" for p in all_plans) + " |"
    rows = [head, "|---|" + "---|" * len(all_plans),
            "| Price | " + " | ".join(f"{ui.usd(p.monthly_price_usd, 0)} a month" if p.paid else "Free"
                                     for p in all_plans) + " |"]
    rows += [f"| {cap(LIMIT_LABELS[name])} | " + " | ".join(limit_text(p.limit(name)) for p in all_plans) + " |"
             for name in LIMITS]
    rows.append("| AI spend over the allowance | " + " | ".join(
        "billed by use" if p.overage == "billed" else "blocked" for p in all_plans) + " |")
    rows += [f"| {cap(label)} | " + " | ".join("✓" if p.has(feature) else "—" for p in all_plans) + " |"
             for feature, label in FEATURE_LABELS.items()]
    return "\n".join(rows)


def plan_button(plan: Plan) -> None:
    if plan.key == state.subscribed_plan and (subscribed or plan.key == "free"):
        st.button(f"{plan.name}: current plan", disabled=True, key=f"plan_{plan.key}")
    elif not can_manage:
        return
    elif subscribed:
        label = f"Change to {plan.name}" if plan.paid else f"Cancel and move to {plan.name}"
        if st.button(label, key=f"plan_{plan.key}"):
            st.session_state["billing_link"] = (
                "Continue in Stripe's customer portal",
                ui.attempt(lambda: billing.portal_url(actor, change_plan=plan.paid)))
            st.rerun()
    elif plan.paid:
        if st.button(f"Upgrade to {plan.name}", type="primary", key=f"plan_{plan.key}"):
            with st.spinner("Opening Stripe checkout…"):
                url = ui.attempt(lambda: billing.start_checkout(actor, plan.key))
            if url:
                st.session_state["billing_link"] = (f"Continue to Stripe checkout for {plan.name}", url)
                st.rerun()


st.markdown(comparison(overview.plans))
if not can_manage:
    st.caption("An admin or owner can change the plan.")
with st.container(horizontal=True):
    for plan in overview.plans:
        plan_button(plan)

# --- invoices --------------------------------------------------------------------------------

st.subheader("Invoices")
invoices = ui.attempt(lambda: billing.invoices(actor)) or []
if not invoices:
    st.caption("No invoices yet. They appear here after the first payment.")
else:
    st.dataframe(
        [{"Number": i.number, "Date": ui.local_time(i.created, "%Y-%m-%d"), "Status": (i.status or "").capitalize(),
          "Total": ui.usd(i.total), "Paid": ui.usd(i.amount_paid), "Invoice": i.hosted_invoice_url,
          "PDF": i.invoice_pdf} for i in invoices],
        hide_index=True, width="stretch",
        column_config={"Invoice": st.column_config.LinkColumn(display_text="View"),
                       "PDF": st.column_config.LinkColumn(display_text="PDF")},
    )
