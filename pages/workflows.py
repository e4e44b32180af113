"""Workflows: the list (search, active/paused, clone, delete), the editor with inline validation and
a graph preview, versions, run with inputs, dry run, webhooks (pages/_workflow_hooks.py), and the
credentials HTTP nodes use.

The open workflow lives in the URL (``?workflow=<id>``, or ``?workflow=new``).
"""

from __future__ import annotations

import json

import streamlit as st

from engine.schedules import store as schedules
from engine.workflows import credentials, executor, graph, runs, spec as specs, store
from pages import _common as ui
from pages import _workflow_hooks as hooks_ui

STARTER = """\
name: My workflow
description: What it does, in one line.
inputs:
  topic: {type: string, default: workflows}
nodes:
  - id: draft
    type: llm
    params:
      prompt: "Write three bullet points about {{ inputs.topic }}."
      max_tokens: 300
outputs:
  text: "{{ draft.text }}"
"""

actor = ui.actor()
can_write = ui.allowed("workflow.write")
can_run = ui.allowed("workflow.run")


def open_workflow(value: int | str) -> None:
    st.query_params["workflow"] = str(value)


def close_workflow() -> None:
    st.query_params.pop("workflow", None)
    st.session_state.pop("wf_dry_run", None)
    st.session_state.pop(hooks_ui.ISSUED, None)  # a new hook's URL is shown once: not again on coming back


def close_dialog() -> None:
    st.session_state.pop("wf_deleting", None)


@st.dialog("Delete workflow", on_dismiss=close_dialog)
def delete_dialog(view: store.WorkflowView) -> None:
    st.markdown(f"Delete **{view.name}**, its {view.version} version(s) and all its runs? Money already spent stays "
                "in the ledger. This cannot be undone.")
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="wf_delete_cancel")
        confirm = st.button("Delete workflow", type="primary", icon=":material/delete:", key="wf_delete_confirm")
    if cancel:
        close_dialog()
        st.rerun()
    if confirm and ui.attempt(lambda: store.delete(actor, view.id) or True):
        close_dialog()
        close_workflow()
        ui.flash(f"Workflow “{view.name}” deleted.")
        st.rerun()


def status_badge(status: str | None) -> str:
    icons = {"succeeded": ":green[:material/check_circle:]", "failed": ":red[:material/error:]",
             "running": ":blue[:material/progress_activity:]", "queued": ":material/schedule:",
             "waiting": ":orange[:material/pending:]", "cancelled": ":gray[:material/cancel:]"}
    return f"{icons.get(status, '')} {status}" if status else "never run"


# --- the list -----------------------------------------------------------------------------


def workflow_list() -> None:
    st.title("Workflows")
    ui.show_flash()
    with st.container(horizontal=True):
        search = st.text_input("Search", placeholder="Name or description", key="wf_search",
                               label_visibility="collapsed")
        if can_write and st.button("New workflow", type="primary", icon=":material/add:", key="wf_new"):
            open_workflow("new")
            st.rerun()
    items = ui.attempt(lambda: store.list_workflows(actor, search)) or []
    if not items:
        st.info("No workflows match your search." if search else
                "No workflows yet. Create one, or install a template below.", icon=":material/account_tree:")
    for wf in items:
        with st.container(border=True):
            left, right = st.columns([3, 2])
            with left:
                st.markdown(f"**{wf.name}** · version {wf.version}")
                if wf.description:
                    st.caption(wf.description)
                st.markdown(f"Last run: {status_badge(wf.last_status)}"
                            + (f" · {ui.local_time(wf.last_run_at)} · cost {ui.usd(wf.last_cost)}"
                               if wf.last_status else ""))
            with right:
                with st.container(horizontal=True, horizontal_alignment="right"):
                    active = st.toggle("Active", value=wf.active, key=f"wf_active_{wf.id}", disabled=not can_write)
                    if active != wf.active:
                        if ui.attempt(lambda: store.set_active(actor, wf.id, active)):
                            ui.flash(f"“{wf.name}” is {'active' if active else 'paused'}.")
                        st.rerun()
                    if st.button("Open", key=f"wf_open_{wf.id}", icon=":material/edit:"):
                        open_workflow(wf.id)
                        st.rerun()
                    if can_write and st.button("Clone", key=f"wf_clone_{wf.id}", icon=":material/content_copy:"):
                        copy = ui.attempt(lambda: store.clone(actor, wf.id))
                        if copy:
                            ui.flash(f"Cloned as “{copy.name}”.")
                            st.rerun()
                    if can_write and st.button("Delete", key=f"wf_delete_{wf.id}", icon=":material/delete:"):
                        st.session_state["wf_deleting"] = wf.id
        if st.session_state.get("wf_deleting") == wf.id:
            delete_dialog(wf)
    templates_section()
    import_section()
    credentials_section()


def import_section() -> None:
    from engine.workflows import n8n

    if not can_write:
        return
    with st.expander("Import from n8n", icon=":material/upload_file:"):
        st.caption("Upload a workflow downloaded from n8n (JSON). Webhook, Schedule Trigger, HTTP Request, Set, IF, "
                   "Switch, Code (Python) and OpenAI nodes are converted; any other node is named and left out.")
        upload = st.file_uploader("n8n workflow file", type=["json"], key="wf_n8n_file")
        if upload is None:
            return
        result = ui.attempt(lambda: n8n.convert(upload.getvalue()))
        if result is None:
            return
        if result.unmapped:
            st.warning("Not imported (no equivalent node): " + ", ".join(result.unmapped), icon=":material/warning:")
        for t in result.triggers:
            st.info(f"The {t['type']} trigger “{t['node']}” is not part of a spec: its data arrives as the "
                    "input body. Set up the trigger once schedules and webhooks are available.", icon=":material/bolt:")
        for note in result.notes:
            st.caption(note)
        st.code(result.source, language="yaml")
        if st.button("Create workflow from this", type="primary", key="wf_n8n_create", icon=":material/add:"):
            view = ui.attempt(lambda: store.create(actor, result.source))
            if view:
                ui.flash(f"Imported “{view.name}”.")
                open_workflow(view.id)
                st.rerun()


def templates_section() -> None:
    from engine.workflows import library

    if not can_write:
        return
    with st.expander("Templates", icon=":material/library_add:"):
        for t in library.list_templates():
            with st.container(horizontal=True):
                st.markdown(f"**{t.name}** — {t.description}")
                if st.button("Install", key=f"wf_tpl_{t.id}", icon=":material/download:"):
                    view = ui.attempt(lambda: library.install(actor, t.id))
                    if view:
                        ui.flash(f"Installed “{view.name}”.")
                        open_workflow(view.id)
                        st.rerun()


def credentials_section() -> None:
    if not ui.allowed("workflow.credentials"):
        return
    with st.expander("Credentials for HTTP nodes", icon=":material/key:"):
        st.caption("Refer to one in an http node with `credential: NAME`. Values are encrypted and never shown again.")
        for c in ui.attempt(lambda: credentials.list_credentials(actor)) or []:
            with st.container(horizontal=True):
                st.markdown(f"`{c.name}` · {c.header}: {c.scheme} {c.hint}")
                if st.button("Delete", key=f"wf_cred_del_{c.id}", icon=":material/delete:"):
                    if ui.attempt(lambda: credentials.delete(actor, c.id) or True):
                        ui.flash(f"Credential {c.name} deleted.")
                        st.rerun()
        with st.form("wf_new_credential", clear_on_submit=True):
            name = st.text_input("Name", placeholder="crm")
            value = st.text_input("Secret value", type="password")
            header = st.text_input("Header", value="Authorization")
            scheme = st.text_input("Scheme (empty: send the value as it is)", value="Bearer")
            if st.form_submit_button("Add credential", icon=":material/add:"):
                if ui.attempt(lambda: credentials.create(actor, name, value, header=header, scheme=scheme)):
                    ui.flash(f"Credential {name} added.")
                    st.rerun()


# --- the editor ---------------------------------------------------------------------------


def input_widgets(spec: specs.WorkflowSpec, key: str) -> dict:
    values = {}
    for name, inp in spec.inputs.items():
        label = f"{name} ({inp.type})" + ("" if inp.is_required() else " · optional")
        k = f"{key}_{name}"
        if inp.type == "boolean":
            values[name] = st.checkbox(label, value=bool(inp.default), key=k, help=inp.description or None)
        elif inp.type in ("array", "object"):
            default = json.dumps(inp.default) if inp.default is not None else ""
            values[name] = st.text_area(label + " as JSON", value=default, key=k, help=inp.description or None)
        else:
            values[name] = st.text_input(label, value="" if inp.default is None else str(inp.default), key=k,
                                         help=inp.description or None)
    return values


def validation(source: str) -> specs.WorkflowSpec | None:
    try:
        spec = specs.parse(source)
    except specs.SpecError as exc:
        st.error("The spec has problems:\n" + "\n".join(
            f"- {'line ' + str(line) + ' · ' if line else ''}{where + ': ' if where else ''}{msg}"
            for line, where, msg in exc.problems), icon=":material/error:")
        return None
    st.success(f"Valid: {len(spec.nodes)} node(s), {len(spec.inputs)} input(s).", icon=":material/check_circle:")
    return spec


def editor(workflow_id: int | None) -> None:
    view = ui.attempt(lambda: store.get(actor, workflow_id)) if workflow_id else None
    if workflow_id and view is None:
        st.button("Back to workflows", on_click=close_workflow, key="wf_back_missing")
        return
    st.button("All workflows", icon=":material/arrow_back:", on_click=close_workflow, key="wf_back")
    st.title(view.name if view else "New workflow")
    ui.show_flash()
    source_key = f"wf_source_{workflow_id or 'new'}"
    if source_key not in st.session_state:
        st.session_state[source_key] = view.source if view else STARTER
    left, right = st.columns([3, 2])
    with left:
        source = st.text_area("Spec (YAML or JSON)", key=source_key, height=460, disabled=not can_write)
    with right:
        spec = validation(source)
        if spec is not None:
            st.graphviz_chart(graph.to_dot(spec), width="stretch")
    if can_write:
        note = st.text_input("What changed (optional)", key=f"wf_note_{workflow_id or 'new'}")
        if st.button("Save" if view else "Create workflow", type="primary", icon=":material/save:", key="wf_save",
                     disabled=spec is None):
            saved = ui.attempt(lambda: store.save(actor, view.id, source, note=note) if view else
                               store.create(actor, source))
            if saved:
                ui.flash(f"Saved as version {saved.version}.")
                st.session_state.pop(source_key, None)
                open_workflow(saved.id)
                st.rerun()
    if view is None or spec is None:
        return
    run_section(view, spec)
    schedules_section(view)
    hooks_ui.section(actor, view.id, view.source, can_write=can_write)
    versions_section(view)


def run_section(view: store.WorkflowView, spec: specs.WorkflowSpec) -> None:
    st.subheader("Run")
    if source_changed(view):
        st.caption("Runs use the saved version; save your changes first to run them.")
    saved_spec = ui.attempt(lambda: specs.parse(view.source))
    if saved_spec is None:  # saved before a node type it uses was removed: fix and save it first
        return
    with st.form("wf_run_form"):
        values = input_widgets(saved_spec, "wf_input")
        with st.container(horizontal=True):
            go = st.form_submit_button("Run with inputs", type="primary", icon=":material/play_arrow:",
                                       disabled=not can_run or not view.active)
            dry = st.form_submit_button("Dry run", icon=":material/science:",
                                        help="No side effects: AI steps are estimated, not called; nothing is sent.")
    if not view.active:
        st.caption("This workflow is paused; switch it to active on the list to run it.")
    if go:
        run = ui.attempt(lambda: runs.trigger(actor, view.id, values))
        if run:
            st.success(f"Run #{run.id} is queued; a worker picks it up in a moment.", icon=":material/schedule:")
            st.page_link("pages/runs.py", label="Watch it on the Runs page", icon=":material/history:",
                         query_params={"run": str(run.id)})
    if dry:
        with st.spinner("Dry run…"):
            st.session_state["wf_dry_run"] = ui.attempt(lambda: executor.dry_run(actor, saved_spec, values))
    result = st.session_state.get("wf_dry_run")
    if result:
        cost = result.get("estimated_cost")
        st.markdown(f"**Dry run: {result.get('status')}** · AI steps at most {ui.usd(cost)}"
                    + (f" · {result['error']}" if result.get("error") else ""))
        st.dataframe([{"node": s["node_id"], "type": s.get("type"), "status": s.get("status"),
                       "output": json.dumps(s.get("output"), default=str)[:300], "error": s.get("error") or ""}
                      for s in result["steps"]], width="stretch", hide_index=True)


def schedules_section(view: store.WorkflowView) -> None:
    items = ui.attempt(lambda: schedules.for_target(actor, "workflow", view.id)) or []
    with st.expander(f"Schedules ({len(items)})", icon=":material/schedule:"):
        for v in items:
            state = "paused" if v.paused else f"next {ui.local_time(v.next_fire_time)}"
            st.markdown(f"**{v.name}** · `{v.cron}` ({v.timezone}) · {state} · last: {v.last_result or '—'}")
        if not items:
            st.caption("Not scheduled. Scheduled runs are fired by the sidecar (`python -m engine up` starts it).")
        st.page_link("pages/schedules.py", label="Schedule this workflow" if can_write else "All schedules",
                     icon=":material/add_alarm:", query_params={"workflow": str(view.id)} if can_write else None)


def source_changed(view: store.WorkflowView) -> bool:
    return st.session_state.get(f"wf_source_{view.id}", view.source) != view.source


def versions_section(view: store.WorkflowView) -> None:
    with st.expander(f"Versions ({view.version})", icon=":material/history:"):
        items = ui.attempt(lambda: store.versions(actor, view.id)) or []
        st.dataframe([{"version": v.version, "saved": ui.local_time(v.created_at), "note": v.note or ""}
                      for v in items], width="stretch", hide_index=True)
        numbers = [v.version for v in items]
        if len(numbers) >= 2:
            a, b = st.columns(2)
            old = a.selectbox("From", numbers, index=1, key="wf_diff_a")
            new = b.selectbox("To", numbers, index=0, key="wf_diff_b")
            st.code(ui.attempt(lambda: store.compare(actor, view.id, old, new)) or "No differences.", language="diff")
            if can_write and st.button(f"Restore version {old}", key="wf_restore", icon=":material/restore:"):
                restored = ui.attempt(lambda: store.restore(actor, view.id, old))
                if restored:
                    st.session_state.pop(f"wf_source_{view.id}", None)
                    ui.flash(f"Version {old} restored as version {restored.version}.")
                    st.rerun()


opened = st.query_params.get("workflow", "")
if opened == "new" and can_write:
    editor(None)
elif opened.isdigit():
    editor(int(opened))
else:
    workflow_list()
