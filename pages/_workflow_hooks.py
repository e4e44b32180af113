"""The Webhooks section of a workflow's editor: its hook URLs (token masked), create, rotate, disable,
delete with confirmation. A new URL, its signing secret and a ready curl example are shown once,
until dismissed, and kept only in this browser session meanwhile.
"""

from __future__ import annotations

import streamlit as st

from engine.errors import MeterbookError
from engine.permissions import Actor
from engine.workflows import hooks, spec as specs
from pages import _common as ui

ISSUED = "wf_hook_issued"  # {"workflow_id", "hook_id", "url", "secret", "rotated"}: shown once
CONFIRM = "wf_hook_confirm"  # ("rotate" | "delete", hook_id)


def example_body(spec: specs.WorkflowSpec | None) -> dict:
    """A body for the curl example: each input's default, or a placeholder of its type."""
    if spec is None:
        return {}
    if "body" in spec.inputs:  # the whole request arrives as inputs.body (an n8n flow)
        return {"example": "value"}
    placeholder = {"string": "text", "number": 1, "boolean": True, "array": [], "object": {}}
    return {name: inp.default if inp.default is not None else placeholder.get(inp.type, "")
            for name, inp in spec.inputs.items()}


def remember(workflow_id: int, issued: hooks.Issued, *, rotated: bool) -> None:
    st.session_state[ISSUED] = {"workflow_id": workflow_id, "hook_id": issued.view.id, "rotated": rotated,
                                "url": hooks.base_url() + hooks.path_for(workflow_id, issued.token),
                                "secret": issued.secret}


def show_issued(workflow_id: int, spec: specs.WorkflowSpec | None) -> None:
    issued = st.session_state.get(ISSUED)
    if not issued:
        return
    if issued["workflow_id"] != workflow_id:  # made on another workflow's page, then left: never shown again
        st.session_state.pop(ISSUED, None)
        return
    with st.container(border=True, key="wf_hook_issued_box"):
        st.warning("Copy the URL" + (" and the signing secret" if issued["secret"] else "")
                   + " now: they are not shown again." + (" The old URL no longer works." if issued["rotated"] else ""),
                   icon=":material/key:")
        st.code(issued["url"], language=None)
        if issued["secret"]:
            st.markdown("**Signing secret**")
            st.code(issued["secret"], language=None)
            st.caption("Sign each delivery: put the Unix time in `X-Meterbook-Timestamp` and "
                       "`sha256=` + hex HMAC-SHA256(secret, timestamp + \".\" + raw body) in `X-Meterbook-Signature`. "
                       "Deliveries more than 5 minutes old are refused.")
        st.markdown("**Try it**")
        st.code(hooks.curl_example(issued["url"], example_body(spec), issued["secret"]), language="bash")
        st.caption("The JSON object sent becomes the run's inputs. Add `?wait=30` to wait up to 30 s (at most 60) "
                   "for the outputs; a repeated `Idempotency-Key` returns the first run.")
        if st.button("Done, I have copied it", key="wf_hook_issued_done", icon=":material/check:"):
            st.session_state.pop(ISSUED, None)
            st.rerun()


def confirm_row(actor: Actor, workflow_id: int, hook: hooks.HookView) -> None:
    kind = st.session_state.get(CONFIRM, (None, None))[0]
    question = {"rotate": "Make a new URL? The current one stops working at once; senders must be updated.",
                "delete": "Delete this webhook? Its URL stops working at once. Runs it started are kept."}[kind]
    st.warning(question, icon=":material/warning:")
    with st.container(horizontal=True):
        go = st.button("Rotate the URL" if kind == "rotate" else "Delete webhook", type="primary",
                       key=f"wf_hook_{kind}_confirm")
        if st.button("Cancel", key=f"wf_hook_{kind}_cancel"):
            st.session_state.pop(CONFIRM, None)
            st.rerun()
    if not go:
        return
    if kind == "rotate":
        issued = ui.attempt(lambda: hooks.rotate(actor, hook.id))
        if issued:
            remember(workflow_id, issued, rotated=True)
    elif ui.attempt(lambda: hooks.delete(actor, hook.id) or True):
        ui.flash(f"Webhook …{hook.token_hint} deleted.")
    st.session_state.pop(CONFIRM, None)
    st.rerun()


def hook_row(actor: Actor, workflow_id: int, hook: hooks.HookView, can_write: bool) -> None:
    with st.container(border=True, key=f"wf_hook_row_{hook.id}"):
        left, right = st.columns([3, 2])
        with left:
            st.markdown(f"`{hooks.base_url()}{hook.path}`")
            st.caption(" · ".join(part for part in [  # the toggle beside it says enabled
                "signed (HMAC-SHA256)" if hook.require_signature else "unsigned",
                "" if hook.enabled else ":orange[disabled: deliveries are refused]",
                f"runs as {hook.created_by}" if hook.created_by else "its creator was deleted: create a new hook",
                f"last used {ui.local_time(hook.last_used_at)}" if hook.last_used_at else "never used",
            ]))
        with right, st.container(horizontal=True, horizontal_alignment="right"):
            enabled = st.toggle("Enabled", value=hook.enabled, key=f"wf_hook_enabled_{hook.id}", disabled=not can_write)
            if enabled != hook.enabled:
                if ui.attempt(lambda: hooks.set_enabled(actor, hook.id, enabled)):
                    ui.flash(f"Webhook …{hook.token_hint} {'enabled' if enabled else 'disabled'}.")
                st.rerun()
            if can_write and st.button("Rotate", key=f"wf_hook_rotate_{hook.id}", icon=":material/autorenew:"):
                st.session_state[CONFIRM] = ("rotate", hook.id)
            if can_write and st.button("Delete", key=f"wf_hook_delete_{hook.id}", icon=":material/delete:"):
                st.session_state[CONFIRM] = ("delete", hook.id)
        if st.session_state.get(CONFIRM, (None, None))[1] == hook.id:
            confirm_row(actor, workflow_id, hook)


def section(actor: Actor, workflow_id: int, source: str, *, can_write: bool) -> None:
    """``source`` is the saved spec, for the curl example's body."""
    try:
        spec = specs.parse(source)
    except MeterbookError:
        spec = None
    items = ui.attempt(lambda: hooks.list_hooks(actor, workflow_id))
    if items is None:
        return
    with st.expander(f"Webhooks ({len(items)})", icon=":material/webhook:",
                     expanded=bool(st.session_state.get(ISSUED) or st.session_state.get(CONFIRM))):
        st.caption("A secret URL that starts a run of this workflow when something POSTs JSON to it. Runs run as "
                   "the member who created the hook. The sidecar (`python -m engine sidecar`) serves these URLs.")
        show_issued(workflow_id, spec)
        for hook in items:
            hook_row(actor, workflow_id, hook, can_write)
        if not can_write:
            return
        with st.container(horizontal=True, vertical_alignment="bottom"):
            signed = st.checkbox("Require a signature (HMAC-SHA256)", key="wf_hook_signed",
                                 help="Senders then sign each delivery with a secret shown once; unsigned or "
                                      "stale deliveries are refused.")
            if st.button("Create webhook", icon=":material/add_link:", key="wf_hook_create"):
                issued = ui.attempt(lambda: hooks.create_hook(actor, workflow_id, require_signature=signed))
                if issued:
                    remember(workflow_id, issued, rotated=False)
                    st.rerun()
