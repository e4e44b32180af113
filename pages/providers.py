"""Providers: the workspace's provider keys and endpoints, which models each kind of call goes to, and their health.

Keys are write-only: they are typed in, stored encrypted by the engine and only ever shown as
their masked hint. Admins and owners change things here; everyone else sees the same page
without the controls.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import streamlit as st

from engine import connections, local_servers, provider_health, routes
from engine.config import get_settings
from engine.connections import KEY_REQUIRED, ConnectionView
from engine.errors import MeterbookError
from engine.local_servers import LocalServer
from engine.routes import TargetView
from pages import _common as ui

KINDS = ("text", "image", "speech", "video")
TYPE_LABELS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "gemini": "Google Gemini",
    "elevenlabs": "ElevenLabs (speech)",
    "fal": "fal (images and video)",
    "openai-compatible": "OpenAI-compatible server (OpenRouter, Groq, Ollama, vLLM…)",
}
CUSTOM = "custom"
STRATEGIES = {
    "priority": "In order: the first healthy model, then down the list",
    "cost": "Cheapest first (by the call's estimated cost)",
    "latency": "Fastest first (by recent latency)",
}
NEW_CONNECTION_DEFAULTS = {"new_conn_name": "openai", "new_conn_key": "", "new_conn_url": "", "new_conn_price": ""}
NEW_TARGET_DEFAULTS = {"new_target_model": None, "new_target_typed": "", "new_target_window": "",
                       "new_target_rpm": "", "new_target_tpm": ""}
PROBE_CACHE_SECONDS = 10

actor = ui.actor()
can_keys = ui.allowed("provider.write")
can_route = ui.allowed("route.write")


# --- state helpers ------------------------------------------------------------------------


def close_dialog() -> None:
    st.session_state.pop("providers_dialog", None)


def open_dialog(kind: str, object_id: int) -> None:
    st.session_state["providers_dialog"] = (kind, object_id)


def finish(message: str) -> None:
    close_dialog()
    for stale in ("editing_connection", "test_result"):
        st.session_state.pop(stale, None)
    ui.flash(message)
    st.rerun()


@st.cache_data(ttl=PROBE_CACHE_SECONDS, show_spinner=False)
def local_ollama(url: str) -> LocalServer | None:
    """Asked at most every few seconds: every rerun of the page would otherwise wait on it."""
    return local_servers.probe(url, name="Ollama")


def apply_preset() -> None:
    """Fill the add form from the chosen type and preset (a callback, so the fields can still be edited)."""
    kind = st.session_state["new_conn_type"]
    preset = local_servers.presets().get(st.session_state.get("new_conn_preset", CUSTOM))
    if kind == "openai-compatible" and preset is not None:
        st.session_state.update(new_conn_name=preset.id, new_conn_url=preset.base_url, new_conn_price=preset.price_id)
    else:
        st.session_state.update(new_conn_name=kind if kind != "openai-compatible" else "", new_conn_url="",
                                new_conn_price="")


def price_text(prices: provider_health.UnitPrices | None) -> str:
    if prices is None:
        return "unpriced"
    parts = []
    if prices.input_mtok or prices.output_mtok:
        parts.append(f"${prices.input_mtok:,f} in / ${prices.output_mtok:,f} out per M tokens")
    for value, unit in ((prices.per_image, "image"), (prices.per_1k_characters, "1k characters"),
                        (prices.per_second, "second")):
        if value:
            parts.append(f"${value:,f} per {unit}")
    text = "; ".join(parts) or "free"
    return f"{text} (workspace price)" if prices.source == "override" else text


def last_test(c: ConnectionView) -> str:
    if c.last_tested_at is None:
        return "Not tested since its last change."
    when = ui.local_time(c.last_tested_at)
    return f":green[Connected] at {when}." if c.last_test_ok else f":red[Failed] at {when}: {c.last_test_error}"


# --- dialogs ------------------------------------------------------------------------------


@st.dialog("Delete connection", on_dismiss=close_dialog)
def delete_connection_dialog(c: ConnectionView, used_by: list[str]) -> None:
    st.markdown(f"Delete **{c.name}**? Its stored key is destroyed. Past usage keeps its ledger rows.")
    if used_by:
        st.warning(f"{len(used_by)} route target{'s use' if len(used_by) != 1 else ' uses'} this connection: "
                   f"{', '.join(used_by)}. Deleting it removes {'them' if len(used_by) != 1 else 'it'} "
                   "from the routes too.", icon=":material/alt_route:")
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="confirm_cancel")
        go = st.button("Delete and remove from routes" if used_by else "Delete connection", type="primary",
                       key="confirm_ok")
    if cancel:
        close_dialog()
        st.rerun()
    if go and (done := ui.attempt(lambda: connections.delete_connection(actor, c.id, remove_from_routes=bool(used_by)))):
        finish(done.describe())


@st.dialog("Remove from route", on_dismiss=close_dialog)
def remove_target_dialog(t: TargetView) -> None:
    st.markdown(f"Remove **{t.label}** from the {t.kind} route? Calls stop going to it; its history stays.")
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="confirm_cancel")
        go = st.button("Remove", type="primary", key="confirm_ok")
    if cancel:
        close_dialog()
        st.rerun()
    if go and ui.attempt(lambda: routes.remove_target(actor, t.id) or True):
        finish(f"{t.label} was removed from the {t.kind} route.")


# --- sections -----------------------------------------------------------------------------


def ollama_offer(listed: list[ConnectionView]) -> None:
    server = local_ollama(get_settings().ollama_url)
    if server is None or any(c.base_url == server.base_url for c in listed):
        return
    models = local_servers.chat_models(server)
    shown = ", ".join(models[:5]) + (f" and {len(models) - 5} more" if len(models) > 5 else "")
    with st.container(border=True):
        st.markdown(f":material/dns: **Ollama is running** at {server.base_url} with "
                    f"{len(models)} chat model{'s' if len(models) != 1 else ''}{': ' + shown if models else ''}.")
        if can_keys and can_route:
            if st.button("Add local Ollama", icon=":material/add:", key="add_ollama"):
                if added := ui.attempt(lambda: local_servers.add_ollama(actor)):
                    view, routed = added
                    finish(f"Added {view.name}: {len(routed)} model{'s' if len(routed) != 1 else ''} routed for text. "
                           "Its calls are unpriced until you set a price under Settings → Prices.")
        else:
            st.caption("Ask an admin to add it here.")


def connection_card(c: ConnectionView, used_by: list[str]) -> None:
    with st.container(border=True):
        head, actions = st.columns([3, 2], vertical_alignment="center")
        with head:
            state = "" if c.enabled else " · :orange[disabled]"
            st.markdown(f"**{c.name}** · {TYPE_LABELS.get(c.provider_type, c.provider_type)}{state}")
            details = [f"Key: `{c.key_hint}`" if c.has_key else "No key"]
            if c.base_url:
                details.append(f"Endpoint: {c.base_url}")
            if c.price_provider and c.price_provider != c.provider_type:
                details.append(f"Priced as: {c.price_provider}")
            details.append(f"Routes: {', '.join(used_by)}" if used_by else "Not in any route yet")
            st.caption(" · ".join(details))
            st.markdown(last_test(c))
        if can_keys:
            with actions, st.container(horizontal=True, horizontal_alignment="right"):
                test = st.button("Test connection", icon=":material/network_check:", key=f"test_{c.id}")
                st.button("Edit", icon=":material/edit:", key=f"edit_{c.id}",
                          on_click=lambda: st.session_state.update(editing_connection=c.id))
                st.button("Delete", icon=":material/delete:", key=f"delete_{c.id}",
                          on_click=open_dialog, args=("delete_connection", c.id))
            if test:
                with st.spinner(f"Calling {c.name}…"):
                    check = ui.attempt(lambda: connections.test_connection(actor, c.id))
                if check is not None:
                    st.session_state["test_result"] = (c.id, check)
                    st.rerun()
            shown = st.session_state.get("test_result")
            if shown and shown[0] == c.id:
                check = shown[1]
                latency = f" ({check.latency_ms:,} ms)" if check.latency_ms is not None else ""
                if check.ok:
                    st.success(f"Test passed{latency}: {check.detail}", icon=":material/check_circle:")
                else:
                    st.error(f"Test failed{latency}: {check.detail}", icon=":material/error:")
        if st.session_state.get("editing_connection") == c.id and can_keys:
            edit_form(c)


def edit_form(c: ConnectionView) -> None:
    with st.form(f"edit_form_{c.id}"):
        st.markdown(f"**Edit {c.name}**")
        left, right = st.columns(2)
        name = left.text_input("Name", value=c.name, key=f"edit_name_{c.id}")
        url = right.text_input("Base URL", value=c.base_url or "", key=f"edit_url_{c.id}",
                               placeholder="The vendor's own endpoint" if c.provider_type != "openai-compatible" else "")
        key = left.text_input("Replace the API key", type="password", key=f"edit_key_{c.id}",
                              placeholder="Leave empty to keep the stored key",
                              help="Stored encrypted; never shown again, only its last characters.")
        price = right.text_input("Priced as (catalog id)", value=c.price_provider or "", key=f"edit_price_{c.id}",
                                 help="The genai-prices provider id its calls are priced under, e.g. groq.")
        clear = False
        if c.has_key and c.provider_type not in KEY_REQUIRED:
            clear = st.checkbox("Remove the stored key", key=f"edit_clear_{c.id}")
        enabled = st.checkbox("Enabled", value=c.enabled, key=f"edit_enabled_{c.id}",
                              help="A disabled connection is skipped by every route.")
        with st.container(horizontal=True):
            saved = st.form_submit_button("Save", type="primary", icon=":material/save:", key=f"edit_save_{c.id}")
            cancelled = st.form_submit_button("Cancel", key=f"edit_cancel_{c.id}")
    if cancelled:
        st.session_state.pop("editing_connection", None)
        st.rerun()
    if saved and ui.attempt(lambda: connections.update_connection(
        actor, c.id, name=name, base_url=url or None, price_provider=price or None, enabled=enabled,
        api_key=key or None, clear_key=clear,
    )):
        finish(f"Connection {name.strip().lower()} saved." + (" Its key was replaced." if key else ""))


def add_connection_form() -> None:
    st.subheader("Add a provider")
    presets = local_servers.presets()
    kind = st.selectbox("Provider", list(TYPE_LABELS), format_func=TYPE_LABELS.get, key="new_conn_type",
                        on_change=apply_preset)
    preset = None
    if kind == "openai-compatible":
        choice = st.selectbox("Preset", [*presets, CUSTOM], index=None, placeholder="Choose a server, or Custom",
                              format_func=lambda p: presets[p].name if p in presets else "Custom server",
                              key="new_conn_preset", on_change=apply_preset)
        preset = presets.get(choice)
        if preset is not None and preset.docs:
            st.caption(f"[{preset.name}'s OpenAI-compatible API]({preset.docs})")
    key_rule = preset.key if preset is not None else ("required" if kind in KEY_REQUIRED else "optional")
    left, right = st.columns(2)
    name = left.text_input("Connection name", key="new_conn_name",
                           help="How calls name it, as name/model: lower-case letters, digits, '.', '_' or '-'.")
    api_key = ""
    if key_rule != "none":
        api_key = right.text_input(f"API key ({key_rule})", type="password", key="new_conn_key",
                                   help="Stored encrypted; afterwards only its last characters are shown.")
    url = left.text_input("Base URL" + (" (required)" if kind == "openai-compatible" else " (optional)"),
                          key="new_conn_url", placeholder="http://localhost:11434/v1" if kind == "openai-compatible"
                          else "Leave empty for the vendor's own endpoint")
    price = ""
    if kind == "openai-compatible":
        price = right.text_input("Priced as (catalog id)", key="new_conn_price",
                                 help="The genai-prices provider id for its models (groq, openrouter…). "
                                      "Self-hosted servers stay unpriced until you set a price under Settings → Prices.")
    if st.button("Add connection", type="primary", icon=":material/add:", key="new_conn_submit"):
        made = ui.attempt(lambda: connections.create_connection(
            actor, name=name, provider_type=kind, api_key=api_key or None, base_url=url or None,
            price_provider=price or None))
        if made is not None:
            st.session_state["reset_new_connection"] = True
            finish(f"Connection {made.name} added. Test it, then route its models under Routing.")


def policy_form(route: routes.RouteView) -> None:
    with st.form(f"policy_{route.kind}"):
        st.markdown("**How calls choose among these models**")
        strategy_col, attempts_col, retries_col = st.columns([3, 1, 1])
        strategy = strategy_col.selectbox("Strategy", list(STRATEGIES), index=list(STRATEGIES).index(route.strategy),
                                          format_func=STRATEGIES.get, key=f"policy_strategy_{route.kind}")
        attempts = attempts_col.number_input("Attempts in all", 1, 20, route.max_attempts,
                                             key=f"policy_attempts_{route.kind}",
                                             help="Retries and fallbacks together, per call.")
        retries = retries_col.number_input("Retries per model", 0, 10, route.retries_per_target,
                                           key=f"policy_retries_{route.kind}",
                                           help="On rate limits, timeouts and server errors, before moving on.")
        saved = st.form_submit_button("Save", icon=":material/save:", key=f"policy_save_{route.kind}",
                                      disabled=not can_route)
    if saved and ui.attempt(lambda: routes.set_policy(actor, route.kind, strategy=strategy, max_attempts=attempts,
                                                      retries_per_target=retries) or True):
        finish(f"The {route.kind} route now uses “{STRATEGIES[strategy]}”.")


def target_row(t: TargetView, prices: dict[int, str], first: bool, last: bool) -> None:
    with st.container(border=True):
        info, actions = st.columns([3, 2], vertical_alignment="center")
        with info:
            off = "" if t.enabled else " · :orange[disabled]"
            colour = {"open": "red", "unknown": "gray"}.get(t.state, "orange" if t.consecutive_failures else "green")
            st.markdown(f"**{t.position}. {t.label}**{off} · :{colour}[{provider_health.health_text(t)}]")
            facts = [prices.get(t.id, "—")]
            if t.latency_ms is not None:
                facts.append(f"~{t.latency_ms:,} ms")
            if t.last_ok_at is not None:
                facts.append(f"last OK {ui.local_time(t.last_ok_at)}")
            limits = [f"{t.context_window:,}-token context" if t.context_window else None,
                      f"{t.rpm_limit:,} requests/min" if t.rpm_limit else None,
                      f"{t.tpm_limit:,} tokens/min" if t.tpm_limit else None]
            facts += [x for x in limits if x]
            st.caption(" · ".join(facts))
            if t.last_error and (t.consecutive_failures or t.state == "open"):
                st.caption(f":red[Last error:] {t.last_error}")
        if can_route:
            with actions, st.container(horizontal=True, horizontal_alignment="right"):
                st.button("", icon=":material/arrow_upward:", key=f"up_{t.id}", disabled=first, help="Try earlier",
                          on_click=move, args=(t.id, -1))
                st.button("", icon=":material/arrow_downward:", key=f"down_{t.id}", disabled=last, help="Try later",
                          on_click=move, args=(t.id, 1))
                st.button("Disable" if t.enabled else "Enable", key=f"toggle_{t.id}", on_click=toggle, args=(t,))
                st.button("", icon=":material/delete:", key=f"remove_{t.id}", help="Remove from this route",
                          on_click=open_dialog, args=("remove_target", t.id))
            with st.expander("Limits"):
                with st.form(f"limits_{t.id}", border=False):
                    a, b, c = st.columns(3)
                    window = a.text_input("Context window (tokens)", value=str(t.context_window or ""),
                                          key=f"limit_window_{t.id}",
                                          help="Longer prompts skip this model and fall back to a larger one.")
                    rpm = b.text_input("Requests per minute", value=str(t.rpm_limit or ""), key=f"limit_rpm_{t.id}")
                    tpm = c.text_input("Tokens per minute", value=str(t.tpm_limit or ""), key=f"limit_tpm_{t.id}")
                    saved = st.form_submit_button("Save limits", key=f"limit_save_{t.id}")
                if saved and ui.attempt(lambda: routes.update_target(
                    actor, t.id, context_window=window, rpm_limit=rpm, tpm_limit=tpm, enabled=t.enabled,
                ) or True):
                    finish(f"Limits of {t.label} saved.")


def move(target_id: int, step: int) -> None:
    ui.attempt(lambda: routes.move_target(actor, target_id, step))


def toggle(t: TargetView) -> None:
    ui.attempt(lambda: routes.update_target(actor, t.id, context_window=t.context_window, rpm_limit=t.rpm_limit,
                                            tpm_limit=t.tpm_limit, enabled=not t.enabled))


def model_options(c: ConnectionView, kind: str) -> list[str]:
    """The connection's listed models of this kind, asked once per version of the connection."""
    cache = st.session_state.setdefault("model_lists", {})
    key = (c.id, c.updated_at.isoformat())
    if key not in cache:
        try:
            cache[key] = [(m.id, m.kind) for m in connections.list_models(actor, c.id)]
        except MeterbookError as exc:  # kept too, so a server that is down is not asked on every rerun
            cache[key] = str(exc)
    listed = cache[key]
    if isinstance(listed, str):
        st.caption(f":orange[{listed}] Type the model id instead, or")
        st.button("Ask for the list again", key="relist_models", on_click=cache.pop, args=(key, None))
        return []
    return [m for m, k in listed if k == kind]


def add_target_form(kind: str, listed: list[ConnectionView]) -> None:
    st.markdown(f"**Add a model to the {kind} route**")
    usable = {c.id: c for c in listed if c.enabled}
    if not usable:
        st.caption("Add (or enable) a provider under Connections first.")
        return
    left, right = st.columns(2)
    cid = left.selectbox("Connection", list(usable), format_func=lambda i: usable[i].name, key="new_target_connection")
    options = model_options(usable[cid], kind)
    picked = right.selectbox("Model", options, index=None, key="new_target_model",
                             placeholder="Pick a listed model" if options else "No models listed for this kind")
    typed = right.text_input("…or type any model id", key="new_target_typed", placeholder="e.g. llama-3.3-70b-versatile")
    a, b, c = st.columns(3)
    window = a.text_input("Context window (optional)", key="new_target_window")
    rpm = b.text_input("Requests per minute (optional)", key="new_target_rpm")
    tpm = c.text_input("Tokens per minute (optional)", key="new_target_tpm")
    if st.button(f"Add to the {kind} route", type="primary", icon=":material/add:", key="new_target_submit"):
        model = (typed or picked or "").strip()
        if ui.attempt(lambda: routes.add_target(actor, kind, connection_id=cid, model=model, context_window=window,
                                                rpm_limit=rpm, tpm_limit=tpm)):
            st.session_state["reset_new_target"] = True
            finish(f"{usable[cid].name}/{model} added to the {kind} route.")


def hours_chart(history: list[provider_health.TargetHistory]) -> None:
    picked = st.selectbox("Calls per hour for", ["All targets", *(h.label for h in history)], key="health_pick")
    chosen = history if picked == "All targets" else [h for h in history if h.label == picked]
    hours = chosen[0].hours
    st.bar_chart(
        {
            "Hour": [ui.local_time(h.hour, "%d %b %H:00") for h in hours],
            "Succeeded": [sum(c.hours[i].ok for c in chosen) for i in range(len(hours))],
            "Failed": [sum(c.hours[i].failed for c in chosen) for i in range(len(hours))],
        },
        x="Hour", y=["Succeeded", "Failed"], color=["#2e7d32", "#c62828"], height=260,
    )


# --- layout -------------------------------------------------------------------------------

for flag, defaults in (("reset_new_connection", NEW_CONNECTION_DEFAULTS), ("reset_new_target", NEW_TARGET_DEFAULTS)):
    if st.session_state.pop(flag, False):  # empty a form after it succeeded, before it is drawn
        st.session_state.update(defaults)
        st.session_state.pop("new_conn_preset", None)
for field, value in NEW_CONNECTION_DEFAULTS.items():
    st.session_state.setdefault(field, value)

with st.container():
    st.title("Providers")
    ui.show_flash()

listed = connections.list_connections(actor)
all_routes = {kind: routes.get_route(actor, kind) for kind in KINDS}
used_by: dict[int, list[str]] = defaultdict(list)
for route in all_routes.values():
    for t in route.targets:
        used_by[t.connection_id].append(f"{t.kind}: {t.model}")

connections_tab, routing_tab, health_tab = st.tabs(
    [":material/key: Connections", ":material/alt_route: Routing", ":material/monitor_heart: Health"],
    key="providers_tab", on_change="rerun",
)

with connections_tab:
    ollama_offer(listed)
    if not listed:
        st.info("No provider is connected yet. Add a key below (OpenAI, Anthropic, Gemini, ElevenLabs, fal) or an "
                "OpenAI-compatible server; then route its models under Routing.", icon=":material/key_off:")
    for c in listed:
        connection_card(c, used_by.get(c.id, []))
    if can_keys:
        add_connection_form()
    else:
        st.caption(f"Only admins and owners can add or change provider keys. Your role is {ui.role()}.")

with routing_tab:
    kind = st.radio("Kind of call", KINDS, horizontal=True, format_func=str.capitalize, key="route_kind")
    route = all_routes[kind]
    st.caption("Calls go to the first model that can take them; on failure they retry, then fall back down the "
               "list. A model that keeps failing is paused for a while and then tried again.")
    policy_form(route)
    if route.targets:
        price_of = {s.view.id: price_text(s.prices) for s in provider_health.targets(actor, kind)}
        for i, t in enumerate(route.targets):
            target_row(t, price_of, first=i == 0, last=i == len(route.targets) - 1)
    else:
        st.info(f"No model is routed for {kind} yet." + (" Add one below." if can_route else ""),
                icon=":material/alt_route:")
    if can_route:
        add_target_form(kind, listed)
    st.page_link("pages/settings.py", label="Set or change prices: Settings → Prices", icon=":material/sell:")

with health_tab:
    history = provider_health.history(actor)
    st.caption("The last 24 hours of calls that reached each provider, from the ledger. A provider that could not "
               "be reached at all shows in its current state under Routing.")
    if history:
        st.dataframe(
            [{"Target": h.label, "Calls": h.calls, "Succeeded": h.ok, "Failed": h.failed,
              "Success rate": "—" if h.success_rate is None else f"{h.success_rate:.0%}",
              "Avg latency": "—" if h.avg_latency_ms is None else f"{h.avg_latency_ms:,} ms",
              "Spend": ui.usd(h.cost) if h.cost >= Decimal("0.01") or not h.cost else f"${h.cost.normalize():f}",
              "Last call": ui.local_time(h.last_call_at), "Last error": h.last_error or ""} for h in history],
            hide_index=True, width="stretch", alt="Calls per provider and model in the last 24 hours",
        )
        hours_chart(history)
    else:
        st.info("No calls in the last 24 hours.", icon=":material/monitor_heart:")

if dialog := st.session_state.get("providers_dialog"):
    kind_of, object_id = dialog
    if kind_of == "delete_connection" and (found := next((c for c in listed if c.id == object_id), None)):
        delete_connection_dialog(found, used_by.get(found.id, []))
    elif kind_of == "remove_target" and (t := next((t for r in all_routes.values() for t in r.targets
                                                     if t.id == object_id), None)):
        remove_target_dialog(t)
    else:  # gone since the dialog was opened
        close_dialog()
