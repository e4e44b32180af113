"""Connectors: connect MCP servers from the catalog or any custom command or URL, test them (their tools and
input schemas), enable or disable them, see when each was last used and its last error, delete them.

Catalog entries without an MCP server are shown as presets for the workflow http node, with how to use them.
Credentials go to the vault and come back only as their last four characters.
"""

from __future__ import annotations

import streamlit as st

from engine.connectors import catalog as catalog_module
from engine.connectors import connections, policy
from pages import _common as ui

actor = ui.actor()
can_manage = ui.allowed("connector.manage")

st.title("Connectors")
st.caption("MCP servers your workflows (the `mcp` node) and chats can call. A stdio server runs on this host as a "
           "child process; a remote one is called over HTTPS with its key from the vault.")
ui.show_flash()

cat = ui.attempt(catalog_module.load)
if cat is None:
    st.stop()
mine = ui.attempt(lambda: connections.list_connections(actor)) or []


def status_line(c: connections.ConnectionView) -> str:
    state = ":green[enabled]" if c.enabled else ":gray[disabled]"
    used = f"last used {ui.local_time(c.last_used_at)}" if c.last_used_at else "never used"
    tools = f" · {c.tool_count} tools" if c.tool_count is not None else ""
    return f"{state} · {used}{tools}"


def parse_pairs(text: str, what: str) -> dict[str, str] | None:
    pairs = {}
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        sep = "=" if what == "env" else ":"
        if sep not in line:
            st.error(f"Line {n}: write {'NAME=value' if what == 'env' else 'Header-Name: value'}.", icon=":material/error:")
            return None
        key, value = line.split(sep, 1)
        pairs[key.strip()] = value.strip()
    return pairs


def values_form(fields, key: str, *, editing: bool) -> dict[str, str]:
    values = {}
    for f in fields:
        label = f.label + ("" if f.required else " (optional)")
        help_ = f.vendor_name or None
        if f.secret:
            hint = f" (stored: {f.shown}; leave blank to keep)" if editing and f.shown else ""
            values[f.target] = st.text_input(label + hint, type="password", key=f"{key}_{f.target}", help=help_,
                                             placeholder=f.placeholder or None)
        else:
            values[f.target] = st.text_input(label, value=f.shown if editing else "", key=f"{key}_{f.target}",
                                             help=help_, placeholder=f.placeholder or None)
    return values


def forget(keys: list[str]) -> None:
    """Empty these inputs on the next run: once saved, a typed secret must not stay in the browser's form.

    Deleting a widget's state is not enough (the browser keeps what it shows); setting it before the
    widget is drawn again is, so the keys wait in ``forget_next`` until then.
    """
    st.session_state.setdefault("forget_next", []).extend(keys)


def forget_values(fields, key: str) -> None:
    forget([f"{key}_{f.target}" for f in fields])


for _key in st.session_state.pop("forget_next", []):
    st.session_state[_key] = ""


def show_tools(tools) -> None:
    for t in tools:
        with st.expander(f"`{t.name}` — {t.description[:120] or 'no description'}"):
            st.json(t.input_schema, expanded=True)


# --- connected ---------------------------------------------------------------------------------

tab_mine, tab_catalog, tab_custom = st.tabs(["Connected", "Catalog", "Custom connector"])

with tab_mine:
    if not mine:
        st.info("Nothing is connected yet. Pick a service in the Catalog tab, or add any MCP server as a custom connector.")
    for c in mine:
        with st.container(border=True):
            top = st.columns([3, 1])
            top[0].markdown(f"**{c.name}** `{c.slug}` — {c.transport}")
            top[0].caption(f"{status_line(c)} · `{c.where}`")
            if c.last_error:
                st.error(f"Last error ({ui.local_time(c.last_error_at)}): {c.last_error}", icon=":material/error:")
            secrets_ = [f"{f.target} {f.shown}" for f in c.fields if f.secret and f.shown]
            if secrets_:
                st.caption("Credentials: " + ", ".join(secrets_))
            if can_manage:
                enabled = top[1].toggle("Enabled", value=c.enabled, key=f"en_{c.id}")
                if enabled != c.enabled and ui.attempt(lambda c=c, e=enabled: connections.set_enabled(actor, c.id, e)):
                    ui.flash(f"{c.name} {'enabled' if enabled else 'disabled'}.")
                    st.rerun()
                b = st.columns(3)
                if b[0].button("Test", key=f"test_{c.id}", icon=":material/network_check:"):
                    with st.spinner(f"Starting {c.name}…"):
                        result = ui.attempt(lambda c=c: connections.test(actor, c.id))
                    if result is not None:
                        st.session_state[f"tested_{c.id}"] = result
                        st.rerun()
                if c.fields and b[1].button("Change credentials", key=f"edit_{c.id}"):
                    st.session_state[f"editing_{c.id}"] = True
                if b[2].button("Delete", key=f"del_{c.id}", icon=":material/delete:"):
                    st.session_state[f"deleting_{c.id}"] = True
                if st.session_state.get(f"deleting_{c.id}"):
                    st.warning(f"Delete {c.name} and its stored credentials? Workflows that call it will fail.")
                    d = st.columns(2)
                    if d[0].button("Yes, delete", key=f"del_yes_{c.id}", type="primary"):
                        if ui.attempt(lambda c=c: connections.delete(actor, c.id)):
                            st.session_state.pop(f"deleting_{c.id}", None)
                            ui.flash(f"Deleted {c.name}.")
                            st.rerun()
                    if d[1].button("Cancel", key=f"del_no_{c.id}"):
                        st.session_state.pop(f"deleting_{c.id}", None)
                        st.rerun()
                if st.session_state.get(f"editing_{c.id}"):
                    with st.form(f"edit_form_{c.id}"):
                        values = values_form(c.fields, f"edit_{c.id}", editing=True)
                        if st.form_submit_button("Save"):
                            if ui.attempt(lambda c=c, v=values: connections.update_values(actor, c.id, v)):
                                forget_values(c.fields, f"edit_{c.id}")
                                st.session_state.pop(f"editing_{c.id}", None)
                                ui.flash(f"Saved {c.name}'s credentials.")
                                st.rerun()
            tested = st.session_state.get(f"tested_{c.id}")
            if tested is not None:
                (st.success if tested.ok else st.error)(tested.message)
                show_tools(tested.tools)
            elif c.tools:
                st.caption(f"{len(c.tools)} tools, as listed {ui.local_time(c.tools_listed_at)}"
                           + (" (Test again to refresh)" if can_manage else ""))
                show_tools(c.tools)
            st.caption(f"In a workflow: `{{type: mcp, params: {{connection: {c.slug}, tool: <name>, arguments: {{…}}}}}}`")

# --- the catalog -------------------------------------------------------------------------------

with tab_catalog:
    f1, f2 = st.columns([2, 1])
    query = f1.text_input("Search", key="cat_q", placeholder="github, email, search…")
    category = f2.selectbox("Category", [None, *cat.categories], key="cat_cat",
                            format_func=lambda v: "All categories" if v is None else v.capitalize())
    found = cat.search(query, category)
    st.caption(f"{len(found)} of {len(cat.connectors)} services.")
    connected_keys = {c.catalog_key for c in mine}
    for e in found:
        with st.container(border=True):
            kind = "MCP server" if e.is_mcp else "HTTP preset"
            st.markdown(f"**{e.name}** · {e.category} · {kind}" + (" · :green[connected]" if e.key in connected_keys else ""))
            st.caption(f"{e.description} [Docs]({e.docs})")
            if e.mcp is not None:
                where = e.mcp.url if e.mcp.transport == "http" else " ".join([e.mcp.command or "", *e.mcp.args])
                st.caption(f"{e.mcp.transport}: `{where}`")
                refused = e.mcp.transport == "stdio" and policy.refusal(e.name, custom=False, host_access=e.mcp.host_access)
                if refused:
                    st.caption(f":orange[Not available here.] {refused}")
                    continue
                if not can_manage:
                    continue
                with st.expander(f"Connect {e.name}"):
                    with st.form(f"connect_{e.key}"):
                        fields = [connections.FieldView(c.target, "env" if c.env else "header", c.label, c.secret,
                                                        c.required, c.scheme, c.placeholder, c.vendor_name)
                                  for c in e.mcp.credentials]
                        if not fields:
                            st.caption("This server needs no credential.")
                        values = values_form(fields, f"new_{e.key}", editing=False)
                        if st.form_submit_button("Connect", type="primary"):
                            made = ui.attempt(lambda e=e, v=values: connections.connect(actor, e.key, {k: x for k, x in v.items()}))
                            if made is not None:
                                forget_values(fields, f"new_{e.key}")
                                ui.flash(f"Connected {made.name}. Test it in the Connected tab to see its tools.")
                                st.rerun()
            else:
                p = e.http_preset
                auth = f"{p.header}: {p.scheme + ' ' if p.scheme else ''}<{p.credential}>"
                st.caption(f"No MCP server we can vouch for: call its API from the workflow **http** node. "
                           f"Base URL `{p.base_url}`, header `{auth}`.")
                with st.expander("How to use it"):
                    st.markdown(f"1. On the Workflows page, add a credential named `{e.key}` with header "
                                f"`{p.header}` and scheme `{p.scheme or '(none)'}`, holding your {p.credential}.\n"
                                f"2. Call it from an http node" + (f" (for example {p.example})." if p.example else "."))
                    st.code(f"- id: call_{e.key.replace('-', '_')}\n  type: http\n  params:\n"
                            f"    url: {p.base_url}/…\n    credential: {e.key}", language="yaml")

# --- custom ------------------------------------------------------------------------------------

with tab_custom:
    if not can_manage:
        st.info("Admins and owners add connectors.")
    else:
        kinds = ["stdio command", "Remote URL"] if policy.allows_custom() else ["Remote URL"]
        if not policy.allows_custom():
            st.caption("This Meterbook runs only the catalog's stdio servers (the operator's METERBOOK_MCP_STDIO "
                       f"is {policy.mode()}), so a custom connector is a remote URL.")
        kind = st.radio("Server", kinds, horizontal=True, key="custom_kind")
        st.caption("The command or URL is shown to every member of the workspace: put keys in the "
                   "environment variables or headers, which are stored encrypted.")
        with st.form("custom_form"):
            name = st.text_input("Name", key="custom_name")
            if kind == "stdio command":
                command = st.text_input("Command", key="custom_command", placeholder="npx -y @scope/some-mcp-server")
                pairs = st.text_area("Environment variables (secret, one NAME=value a line)", key="custom_env")
            else:
                url = st.text_input("Server URL", key="custom_url", placeholder="https://mcp.example.com/mcp")
                pairs = st.text_area("Headers (secret, one Header-Name: value a line)", key="custom_headers",
                                     placeholder="Authorization: Bearer …")
            if st.form_submit_button("Add connector", type="primary"):
                given = parse_pairs(pairs, "env" if kind == "stdio command" else "header")
                if given is not None:
                    if kind == "stdio command":
                        made = ui.attempt(lambda: connections.create_custom(actor, name=name, command=command, env=given))
                    else:
                        made = ui.attempt(lambda: connections.create_custom(actor, name=name, url=url, headers=given))
                    if made is not None:
                        forget(["custom_name", "custom_command", "custom_env", "custom_url", "custom_headers"])
                        ui.flash(f"Added {made.name}. Test it in the Connected tab to see its tools.")
                        st.rerun()

