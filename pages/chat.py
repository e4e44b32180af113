"""Chat: conversations with a model, answers streamed as they arrive, each one priced.

The open conversation lives in the URL (``?conversation=<id>``). Answers come through
``engine.conversations.send``, so through the generation path like every other call. While
an answer streams the chat box turns into a stop button; a stopped answer keeps the words
received. Typing with no conversation open starts one.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import streamlit as st

from engine import chat_context, chat_tools, compare, conversations, routes
from engine.chat_context import ContextUsage
from engine.conversations import ConversationView, MessageView
from engine.errors import MeterbookError
from engine.generation import DEFAULT_MAX_TOKENS
from pages import _common as ui

log = logging.getLogger(__name__)

ROUTE = ""  # the model choice that leaves it to the workspace's text route
THUMBS = {0: -1, 1: 1}  # st.feedback's thumbs (down, up) → a rating

actor = ui.actor()
can_chat = ui.allowed("generate")
models = routes.choices(actor, "text")
tool_choices = chat_tools.choices(actor)  # connected MCP servers; empty: no tools toggle


# --- helpers ------------------------------------------------------------------------------


def money(value: Decimal | None) -> str:
    """Dollars, down to the fractions of a cent one answer costs."""
    if value is None:
        return "unpriced"
    if value == 0 or abs(value) >= Decimal("0.01"):
        return ui.usd(value)
    return f"${value:.10f}".rstrip("0")


def model_label(target: str | None) -> str:
    return target or "Workspace route (the first model that answers)"


def open_conversation(conversation_id: int | None) -> None:
    if conversation_id is None:
        st.query_params.pop("conversation", None)
    else:
        st.query_params["conversation"] = str(conversation_id)
    st.session_state.pop("chat_dialog", None)


def opened_id() -> int | None:
    raw = st.query_params.get("conversation", "")
    return int(raw) if raw.isdigit() else None


def rate_answer(ledger_id: int, key: str) -> None:
    choice = st.session_state.get(key)
    ui.attempt(lambda: compare.rate(actor, ledger_id, THUMBS.get(choice), source="chat"))


def duration(ms: int) -> str:
    return f"{ms:,} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def meta(m: MessageView) -> str:
    parts = [m.target or "—"]
    if m.input_tokens is not None:
        parts.append(f"{m.input_tokens:,} in / {m.output_tokens:,} out tokens")
    if m.ledger_id is not None:
        parts.append(money(m.cost))
    if m.ttft_ms is not None:
        parts.append(f"first words after {duration(m.ttft_ms)}")
    if m.latency_ms is not None:
        parts.append(f"{duration(m.latency_ms)} in all")
    return " · ".join(parts)


# --- dialogs ------------------------------------------------------------------------------


def close_dialog() -> None:
    st.session_state.pop("chat_dialog", None)


@st.dialog("Rename conversation", on_dismiss=close_dialog)
def rename_dialog(view: ConversationView) -> None:
    with st.form("chat_rename", border=False):
        title = st.text_input("Title", value=view.title, key="chat_rename_title")
        saved = st.form_submit_button("Save", type="primary", icon=":material/save:", key="chat_rename_save")
    if saved and (renamed := ui.attempt(lambda: conversations.rename_conversation(actor, view.id, title))):
        close_dialog()
        ui.flash(f"Renamed to “{renamed.title}”.")
        st.rerun()


@st.dialog("Delete conversation", on_dismiss=close_dialog)
def delete_dialog(view: ConversationView) -> None:
    st.markdown(f"Delete **{view.title}** and its {len(view.messages)} messages? This cannot be undone. "
                "What the answers cost stays in the usage ledger.")
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="chat_delete_cancel")
        confirm = st.button("Delete conversation", type="primary", icon=":material/delete:", key="chat_delete_confirm")
    if cancel:
        close_dialog()
        st.rerun()
    if confirm and (title := ui.attempt(lambda: conversations.delete_conversation(actor, view.id))):
        open_conversation(None)
        ui.flash(f"Conversation “{title}” deleted.")
        st.rerun()


# --- the list of conversations ------------------------------------------------------------


def new_conversation_form() -> None:
    with st.expander("New conversation", icon=":material/add_comment:"):
        with st.form("chat_new", border=False):
            title = st.text_input("Title", placeholder="Optional: named after the first message",
                                  key="chat_new_title")
            target = st.selectbox("Model", [ROUTE, *models], format_func=model_label, key="chat_new_target")
            system = st.text_area("System prompt", placeholder="Optional: how the model should answer",
                                  key="chat_new_system")
            started = st.form_submit_button("Start", type="primary", icon=":material/add:", key="chat_new_submit")
        if started and (view := ui.attempt(lambda: conversations.create_conversation(
                actor, title, target=target or None, system_prompt=system))):
            open_conversation(view.id)
            st.rerun()


def conversation_list(current: int | None) -> None:
    if can_chat and models:
        new_conversation_form()
    search = st.text_input("Search", placeholder="Search titles and messages", type="search",
                           icon=":material/search:", key="chat_search")
    listed = conversations.list_conversations(actor, search)
    if not listed:
        st.caption("No conversations match your search." if search.strip() else "No conversations yet.")
        return
    for c in listed:
        st.button(c.title, key=f"chat_open_{c.id}", on_click=open_conversation, args=(c.id,), width="stretch",
                  type="primary" if c.id == current else "secondary")
        unpriced = f" + {c.unpriced} unpriced" if c.unpriced else ""
        st.caption(f"{c.message_count} messages · {money(c.cost)}{unpriced} · {ui.local_time(c.updated_at)}")


# --- one conversation ---------------------------------------------------------------------


def settings_form(view: ConversationView) -> None:
    options = [ROUTE, *models] + ([view.target] if view.target and view.target not in models else [])
    with st.expander("Model settings", icon=":material/tune:"):
        with st.form("chat_settings", border=False):
            target = st.selectbox(
                "Model", options, index=options.index(view.target or ROUTE), key=f"chat_target_{view.id}",
                format_func=lambda t: model_label(t) + ("" if not t or t in models else " (no longer routed)"),
                help="Switching applies to the next answers; earlier answers keep the model that gave them.")
            system = st.text_area("System prompt", value=view.system_prompt or "", key=f"chat_system_{view.id}")
            temperature = st.number_input("Temperature", min_value=0.0, max_value=2.0, step=0.1,
                                          value=view.temperature, placeholder="Model default",
                                          key=f"chat_temperature_{view.id}")
            max_tokens = st.number_input("Max tokens", min_value=1, max_value=chat_context.MAX_TOKENS_LIMIT,
                                         step=256, value=view.max_tokens,
                                         placeholder=f"Default ({DEFAULT_MAX_TOKENS:,})",
                                         key=f"chat_max_tokens_{view.id}",
                                         help="The longest answer; it must fit the model's context window.")
            saved = st.form_submit_button("Save settings", icon=":material/save:", key="chat_settings_save",
                                          disabled=not can_chat)
        if saved and ui.attempt(lambda: conversations.update_settings(
                actor, view.id, target=target or None, system_prompt=system, temperature=temperature,
                max_tokens=max_tokens)):
            ui.flash("Settings saved; they apply from the next answer.")
            st.rerun()


def tools_form(view: ConversationView) -> None:
    """Which connected MCP servers' tools the model may call in this conversation."""
    options = list(dict.fromkeys([*tool_choices, *view.tool_connections]))
    label = f"Tools ({len(view.tool_connections)} connection{'s' if len(view.tool_connections) != 1 else ''} on)"
    with st.expander(label, icon=":material/build:"):
        with st.form("chat_tools", border=False):
            chosen = st.multiselect(
                "Let the model call the tools of", options, default=list(view.tool_connections),
                format_func=lambda i: tool_choices.get(i, f"Connection #{i} (no longer connected)"),
                key=f"chat_tools_{view.id}",
                help=f"Answers then take several model turns, each priced; at most {chat_tools.DEFAULT_CAP} tool "
                     "calls per answer. Answers with tools arrive whole, not word by word.")
            saved = st.form_submit_button("Save tools", icon=":material/save:", key="chat_tools_save",
                                          disabled=not can_chat)
        if saved and ui.attempt(lambda: chat_tools.set_tools(actor, view.id, chosen)):
            ui.flash("Tools saved; the model can call them from the next message." if chosen
                     else "Tools switched off for this conversation.")
            st.rerun()


def show_tool_steps(steps: tuple[dict, ...]) -> None:
    """Each tool call and its result, collapsed; the model turns' costs are in the answer's total."""
    for step in steps:
        if step["type"] != "tool":
            continue
        icon = ":material/check_circle:" if step.get("ok") else ":material/error:"
        with st.expander(f"Tool call: {step['name']}", icon=icon, expanded=False):
            st.caption("Arguments")
            st.code(chat_tools.describe_arguments(step.get("arguments")), language="json", wrap_lines=True)
            st.caption("Result" if step.get("ok") else "Error (sent back to the model)")
            st.code(step.get("result") or "", language=None, wrap_lines=True)
    turns = sum(s["type"] == "model" for s in steps)
    if turns:
        st.caption(f"{turns} model turn{'s' if turns != 1 else ''}, each its own priced call.")


def context_meter(usage: ContextUsage) -> None:
    if usage.target is None:
        return
    how = "" if usage.exact else "about "
    if usage.window.tokens:
        st.progress(min(1.0, usage.fraction),
                    text=f"Context: {how}{usage.prompt_tokens:,} of {usage.window.tokens:,} tokens "
                         f"({usage.fraction:.0%}) on {usage.target}")
        note = (f"Window from {usage.window.source}; {usage.reserved_output:,} tokens are kept free for the answer.")
        if usage.tool_tokens:
            note += f" The enabled tools' definitions take {how}{usage.tool_tokens:,} of it on every model turn."
        if usage.trimmed:
            note += (f" The {usage.trimmed} oldest turn{'s' if usage.trimmed != 1 else ''} no longer "
                     f"fit{'' if usage.trimmed != 1 else 's'} and {'are' if usage.trimmed != 1 else 'is'} left out "
                     "of what is sent.")
        st.caption(note)
    else:
        st.caption(f"Context: {how}{usage.prompt_tokens:,} tokens. {usage.target}'s context window is unknown (set it "
                   "on its route under Providers), so the whole history is sent and nothing is trimmed.")


def show_message(m: MessageView, marks: dict[int, int]) -> None:
    with st.chat_message(m.role):
        if m.tool_steps:
            show_tool_steps(m.tool_steps)
        if m.content:
            st.markdown(m.content)
        if m.role != "assistant":
            return
        if m.status == "error":
            st.error(f"This answer failed: {m.error}", icon=":material/error:")
        elif m.status == "cancelled":
            st.caption(":material/stop_circle: Stopped before the end; the words received are kept.")
        elif m.status == "streaming":
            st.caption(":material/hourglass_top: Still arriving, or cut off when the app stopped mid-answer.")
        if m.status != "streaming":
            st.caption(meta(m))
        if m.status == "ok" and m.ledger_id is not None and ui.allowed("answer.rate"):
            key = f"chat_rate_{m.ledger_id}"
            mark = marks.get(m.ledger_id)
            st.feedback("thumbs", key=key, default=None if mark is None else (1 if mark > 0 else 0),
                        on_change=rate_answer, args=(m.ledger_id, key))


def header(view: ConversationView) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader(view.title)
        st.button("Rename", icon=":material/edit:", key="chat_rename",
                  on_click=lambda: st.session_state.update(chat_dialog="rename"))
        st.button("Delete", icon=":material/delete:", key="chat_delete",
                  on_click=lambda: st.session_state.update(chat_dialog="delete"))
    answers = sum(m.role == "assistant" for m in view.messages)
    unpriced = f", plus {view.unpriced} unpriced answer{'s' if view.unpriced != 1 else ''}" if view.unpriced else ""
    st.caption(f"{model_label(view.target)} · {answers} answer{'s' if answers != 1 else ''} · "
               f"{money(view.cost)} in all{unpriced}")


def show_unsent(text: str, error: str | None) -> None:
    """A message that was refused before any model was called: say why, and keep the words."""
    if error:
        st.error(error, icon=":material/error:")
    st.caption("Your message was not sent; nothing was stored or charged. Copy it from here:")
    st.code(text, language=None, wrap_lines=True)


def send_with_tools(text: str, conversation_id: int) -> None:
    """Run the model-and-tools loop to its end, then show the conversation as stored."""
    with st.chat_message("user"):
        st.markdown(text)
    with st.chat_message("assistant"), st.spinner("Answering, calling tools as the model asks…"):
        try:
            turn = chat_tools.send(actor, conversation_id, text)
        except MeterbookError as exc:
            st.session_state["chat_unsent"] = (conversation_id, text, str(exc))
            st.rerun()
        except Exception as exc:  # a bug or a database failure the loop could not store: words, not a traceback
            log.exception("Chat with tools failed in conversation %s", conversation_id)
            st.error(f"The answer could not be finished: an unexpected error ({type(exc).__name__}) stopped it. "
                     "It was logged for the administrator; try again in a moment.", icon=":material/error:")
            return
    open_conversation(turn.conversation_id)
    st.rerun()


def send(text: str, conversation_id: int | None) -> None:
    """Stream the answer under the conversation, then show the conversation as stored."""
    try:
        turn = conversations.send(actor, conversation_id, text)
    except MeterbookError as exc:
        show_unsent(text, str(exc))
        return
    with st.chat_message("user"):
        st.markdown(text)
    with st.chat_message("assistant"):
        try:
            st.write_stream(turn)
        except MeterbookError:
            pass  # the turn kept the reason; the stored answer (or the unsent note) shows it
        finally:
            turn.close()  # stopped mid-answer (the stop button, leaving the page): keep what arrived
    if turn.stored:
        open_conversation(turn.conversation_id)
    else:
        st.session_state["chat_unsent"] = (conversation_id, text, turn.error)
    st.rerun()


# --- layout -------------------------------------------------------------------------------


st.title("Chat")
ui.show_flash()
current = opened_id()
view = None
if current is not None:
    view = ui.attempt(lambda: conversations.get_conversation(actor, current))
    if view is None:
        open_conversation(None)

listing, main = st.columns([1, 3], gap="large")
with listing:
    conversation_list(view.id if view else None)

with main:
    if not models:
        st.info("No text model is set up in this workspace yet, so Chat has nothing to answer with. Add a provider "
                "key and route a text model on the Providers page.", icon=":material/key_off:")
        st.page_link("pages/providers.py", label="Go to Providers", icon=":material/hub:")
    elif not can_chat:
        st.info(f"Your role ({ui.role()}) can read conversations but not send messages: answers cost money. Ask an "
                "admin for the editor role.", icon=":material/lock:")
    if view is not None:
        header(view)
        settings_form(view)
        if tool_choices or view.tool_connections:
            tools_form(view)
        if usage := ui.attempt(lambda: chat_tools.context_usage(actor, view.id)):
            context_meter(usage)
        if not view.messages:
            st.caption("No messages yet. Write the first one below.")
        ratings = compare.ratings(actor, [m.ledger_id for m in view.messages if m.ledger_id is not None])
        for message in view.messages:
            show_message(message, ratings)
        dialog = st.session_state.get("chat_dialog")
        if dialog == "rename":
            rename_dialog(view)
        elif dialog == "delete":
            delete_dialog(view)
    elif models and can_chat:
        st.info("Write a message below to start a conversation, or use **New conversation** to choose its model "
                "and system prompt first.", icon=":material/forum:")
    unsent = st.session_state.get("chat_unsent")
    if unsent and unsent[0] == (view.id if view else None):
        del st.session_state["chat_unsent"]
        show_unsent(unsent[1], unsent[2])

prompt = st.chat_input("Message", key="chat_input", submit_mode="stop", max_chars=conversations.MAX_MESSAGE_CHARS,
                       disabled=not (models and can_chat))
if prompt is not None:
    with main:
        if view is not None and view.tool_connections:
            send_with_tools(prompt, view.id)
        else:
            send(prompt, view.id if view else None)
