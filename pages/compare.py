"""Compare: one prompt to two to four models at once, answers streaming side by side, then what each cost.

``engine.compare`` streams each answer in a worker thread; this script thread drains their
queue and redraws the columns, since Streamlit draws only from the script's own thread.
The finished answers stay in the session, where they can be rated; the ledger keeps the calls.
"""

from __future__ import annotations

import time
from decimal import Decimal

import streamlit as st

from engine import chat_context, compare, routes
from engine.compare import Comparison, Lane
from engine.generation import DEFAULT_MAX_TOKENS
from pages import _common as ui

THUMBS = {0: -1, 1: 1}  # st.feedback's thumbs (down, up) → a rating
STATES = {"waiting": "Waiting for the first words…", "streaming": "Streaming…", "done": "Done",
          "failed": "Failed", "cancelled": "Stopped"}

actor = ui.actor()
can_run = ui.allowed("generate")
models = routes.choices(actor, "text")


def money(value: Decimal | None) -> str:
    """Dollars, down to the fractions of a cent one answer costs."""
    if value is None:
        return "unpriced"
    if value == 0 or abs(value) >= Decimal("0.01"):
        return ui.usd(value)
    return f"${value:.10f}".rstrip("0")


def cost(lane: Lane) -> str:
    if lane.ledger_id is not None:
        return money(lane.cost)
    return "not charged" if lane.finished else "—"  # a call still open is priced when it ends


def count(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def seconds(ms: int | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.2f} s"


def rate_answer(ledger_id: int, key: str) -> None:
    choice = st.session_state.get(key)
    ui.attempt(lambda: compare.rate(actor, ledger_id, THUMBS.get(choice)))


def draw(lane: Lane, note, body) -> None:
    """One column while the answers stream."""
    if lane.state == "failed":
        note.error(lane.error, icon=":material/error:")
    else:
        note.caption(STATES[lane.state])
    body.markdown(lane.text)


def stream_side_by_side(cmp: Comparison) -> None:
    """Poll the workers and redraw each column as its words arrive; keep the outcome in the session."""
    columns = st.columns(len(cmp.lanes))
    notes, bodies = [], []
    for column, lane in zip(columns, cmp.lanes):
        with column:
            st.markdown(f"**{lane.target}**")
            notes.append(st.empty())
            bodies.append(st.empty())
            draw(lane, notes[-1], bodies[-1])
    st.button("Stop", icon=":material/stop_circle:", key="compare_stop")  # a click reruns the page: see finally
    clock = st.empty()
    started, shown = time.monotonic(), -1
    try:
        while not cmp.finished:
            for i in cmp.pump(0.1):
                draw(cmp.lanes[i], notes[i], bodies[i])
            # A tick each second shows progress, and lets Streamlit stop the run when asked.
            if (elapsed := int(time.monotonic() - started)) != shown:
                shown = elapsed
                clock.caption(f":material/timer: {elapsed} s")
    finally:
        cmp.cancel()  # stopped or left mid-answer: close the streams still open, recorded as cancelled
        st.session_state["compare_lanes"] = list(cmp.lanes)


def show_results(lanes: list[Lane]) -> None:
    columns = st.columns(len(lanes))
    marks = compare.ratings(actor, [lane.ledger_id for lane in lanes if lane.ledger_id is not None])
    for column, lane in zip(columns, lanes):
        with column, st.container(border=True):
            st.markdown(f"**{lane.target}**")
            if lane.state == "failed":
                st.error(lane.error, icon=":material/error:")
            elif lane.state == "cancelled":
                st.caption(":material/stop_circle: Stopped before the end; the words received are kept.")
            elif not lane.finished:
                st.caption(":material/hourglass_top: Stopped while this model was silent. Its call is recorded as "
                           "stopped when its next words arrive, or when its read timeout ends it.")
            if lane.text:
                st.markdown(lane.text)
            if lane.state == "done" and lane.ledger_id is not None and ui.allowed("answer.rate"):
                key = f"compare_rate_{lane.ledger_id}"
                mark = marks.get(lane.ledger_id)
                st.caption("Rate this answer")
                st.feedback("thumbs", key=key, default=None if mark is None else (1 if mark > 0 else 0),
                            on_change=rate_answer, args=(lane.ledger_id, key))
    st.subheader("Cost and speed")
    st.table(
        [{"Model": lane.target, "Status": STATES[lane.state] if lane.finished else "Stopping",
          "Cost": cost(lane),
          "Input tokens": count(lane.input_tokens), "Output tokens": count(lane.output_tokens),
          "Latency": seconds(lane.latency_ms), "Time to first token": seconds(lane.ttft_ms)}
         for lane in lanes],
        hide_index=True, alt="Cost, tokens, latency and time to first token of each model's answer",
    )
    known = [lane.cost for lane in lanes if lane.cost is not None]
    unpriced = sum(lane.unpriced for lane in lanes)
    st.caption(f"{money(sum(known, Decimal(0)))} for this comparison"
               + (f", plus {unpriced} unpriced answer{'s' if unpriced != 1 else ''}" if unpriced else "")
               + ". Every call is in the usage ledger, tagged “compare”.")


st.title("Compare")
st.caption("Send one prompt to two to four models at once and read their answers side by side, with what each "
           "cost and how fast it answered. Rate the answers to keep track of which model does best.")

if not models:
    st.info("No text model is set up in this workspace yet, so there is nothing to compare. Add provider keys and "
            "route at least two text models on the Providers page.", icon=":material/key_off:")
    st.page_link("pages/providers.py", label="Go to Providers", icon=":material/hub:")
    st.stop()
if len(models) < compare.MIN_TARGETS:
    st.info(f"Only one text model is routed ({models[0]}). Route another on the Providers page to compare them.",
            icon=":material/alt_route:")
    st.page_link("pages/providers.py", label="Go to Providers", icon=":material/hub:")
    st.stop()
if not can_run:
    st.info(f"Your role ({ui.role()}) cannot run comparisons: each one calls several models, which costs money. "
            "Ask an admin for the editor role.", icon=":material/lock:")

with st.form("compare_form"):
    prompt = st.text_area("Prompt", height=140, placeholder="What should every model answer?", key="compare_prompt")
    chosen = st.multiselect("Models", models, default=models[:compare.MIN_TARGETS],
                            max_selections=compare.MAX_TARGETS, key="compare_targets",
                            help=f"Choose {compare.MIN_TARGETS} to {compare.MAX_TARGETS}; each answers on its own, "
                                 "with no fallback to another model.")
    with st.expander("Settings", icon=":material/tune:"):
        system = st.text_area("System prompt", placeholder="Optional", key="compare_system")
        left, right = st.columns(2)
        temperature = left.number_input("Temperature", min_value=0.0, max_value=2.0, step=0.1, value=None,
                                        placeholder="Model default", key="compare_temperature")
        max_tokens = right.number_input("Max tokens", min_value=1, max_value=chat_context.MAX_TOKENS_LIMIT,
                                        step=256, value=None, placeholder=f"Default ({DEFAULT_MAX_TOKENS:,})",
                                        key="compare_max_tokens")
    run = st.form_submit_button("Compare", type="primary", icon=":material/compare:", key="compare_run",
                                disabled=not can_run)

if run:
    started = ui.attempt(lambda: compare.start(actor, prompt, chosen, system=system, temperature=temperature,
                                               max_tokens=max_tokens))
    if started is not None:
        stream_side_by_side(started)
        st.rerun()

if lanes := st.session_state.get("compare_lanes"):
    show_results(lanes)
