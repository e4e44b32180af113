"""Settings: the workspace, its members and invitations, API keys, prices, the audit log and your account."""

from __future__ import annotations

import json
import math
from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, available_timezones

import streamlit as st

from engine import accounts, api_keys, audit, pricing
from engine.config import get_settings
from pages import _common as ui
from pages import _email_settings

ROLES = ["owner", "admin", "editor", "viewer"]
ROLE_HELP = (
    "Viewers see everything; editors also change projects and clients; admins also manage members, "
    "invitations, API keys, prices and settings; owners also grant or remove the owner role."
)
TIMEZONES = sorted(available_timezones())
AUDIT_PAGE_SIZE = 50
FORM_DEFAULTS = {
    "reset_invite": {"invite_email": ""},
    "reset_api_key": {"api_key_name": "", "api_key_scopes": [], "api_key_expiry": None},
    "reset_price": {k: "" for k in ("price_provider", "price_model", "price_input", "price_output", "price_cached", "price_image",
                                  "price_chars", "price_second", "price_note")},
}
CONFIRM = {  # kind: dialog title, question, button, engine call (actor, id), success message
    "remove_member": ("Remove member", "Remove **{}** from this workspace? They lose access at once.",
                      "Remove member", accounts.remove_member, "{} was removed from the workspace."),
    "revoke_invitation": ("Revoke invitation", "Revoke the invitation for **{}**? Its link stops working at once.",
                          "Revoke invitation", accounts.revoke_invitation, "The invitation for {} was revoked."),
    "revoke_key": ("Revoke API key", "Revoke **{}**? Anything using it stops working at once. This cannot be undone.",
                   "Revoke key", api_keys.revoke_api_key, "API key {} was revoked."),
    "delete_price": ("Delete price override", "Delete the price override for **{}**?",
                     "Delete override", pricing.delete_override, "The price override for {} was deleted."),
}

actor = ui.actor()
zone = ZoneInfo(st.session_state.get("workspace_tz", "UTC"))
labels: dict[str, dict[int, str]] = {}  # what each confirmation dialog can act on, filled as the tabs load


# --- helpers ------------------------------------------------------------------------------


def open_dialog(kind: str, pick_key: str) -> None:
    """Confirm an action on the item picked right now (a callback sees the latest pick)."""
    st.session_state["settings_dialog"] = (kind, st.session_state[pick_key])


def close_dialog() -> None:
    st.session_state.pop("settings_dialog", None)


def finish(message: str) -> None:
    close_dialog()
    ui.flash(message)
    st.rerun()


def confirm_body(kind: str, object_id: int, label: str) -> None:
    _, question, button, action, done = CONFIRM[kind]
    st.markdown(question.format(label))
    with st.container(horizontal=True, horizontal_alignment="right"):
        cancel = st.button("Cancel", key="confirm_cancel")
        go = st.button(button, type="primary", key="confirm_ok")
    if cancel:
        close_dialog()
        st.rerun()
    if go and ui.attempt(lambda: action(actor, object_id) or True):
        finish(done.format(label))


DIALOGS = {kind: st.dialog(spec[0], on_dismiss=close_dialog)(confirm_body) for kind, spec in CONFIRM.items()}


def pick_and_act(items: dict[int, str], kind: str, label: str, button: str, icon: str) -> None:
    """A picker over ``items`` and a button that asks to confirm ``kind`` on the picked one."""
    labels[kind] = items
    with st.container(horizontal=True, vertical_alignment="bottom"):
        st.selectbox(label, list(items), format_func=items.get, key=f"{kind}_pick")
        st.button(button, icon=icon, key=f"{kind}_open", on_click=open_dialog, args=(kind, f"{kind}_pick"))


def only_admins(what: str) -> None:
    st.info(f"Only admins and owners can {what}. Your role is {ui.role()}.", icon=":material/lock:")


def day(value: datetime | None) -> str:
    return ui.local_time(value, "%Y-%m-%d")


def rate(value: Decimal | None) -> str:
    return "—" if value is None else f"${value.normalize():f}" if value % Decimal("0.01") else f"${value:,.2f}"


def end_of_day(value) -> datetime | None:
    """An expiry date means the key works until the end of that day, in the workspace's time zone."""
    return None if value is None else datetime.combine(value + timedelta(days=1), time.min, zone)


# --- layout -------------------------------------------------------------------------------

for flag, defaults in FORM_DEFAULTS.items():  # empty a form after it succeeded, before it is drawn
    if st.session_state.pop(flag, False):
        st.session_state.update(defaults)

with st.container():  # one block whether or not a message shows, so the tabs below keep their place
    st.title("Settings")
    ui.show_flash()
workspace_tab, members_tab, invitations_tab, keys_tab, prices_tab, email_tab, audit_tab, account_tab = st.tabs(
    [":material/domain: Workspace", ":material/group: Members", ":material/person_add: Invitations",
     ":material/key: API keys", ":material/sell: Prices", ":material/mail: Email", ":material/history: Audit log",
     ":material/account_circle: Account"],
    key="settings_tab", on_change="rerun",  # tracked, so the open tab survives the rerun after a change
)

with workspace_tab:
    workspace, _ = accounts.get_workspace(actor)
    if ui.allowed("workspace.settings"):
        with st.form("workspace_form"):
            name = st.text_input("Workspace name", value=workspace.name, key="workspace_name")
            timezone = st.selectbox(
                "Time zone", TIMEZONES, index=TIMEZONES.index(workspace.timezone) if workspace.timezone in TIMEZONES else None,
                help="Dates, days and months are counted in this time zone.", key="workspace_timezone",
            )
            if st.form_submit_button("Save workspace", type="primary", icon=":material/save:", key="workspace_save"):
                if ui.attempt(lambda: accounts.update_workspace(actor, name=name, timezone=timezone or "")):
                    finish("Workspace settings saved.")
    else:
        st.table({"Name": workspace.name, "Time zone": workspace.timezone}, border="horizontal", width="content")
        only_admins("change workspace settings")

with members_tab:
    members = {m.user_id: m for m in accounts.list_members(actor)}
    st.dataframe(
        [{"Name": m.name, "Email": m.email, "Role": m.role.capitalize(), "Joined": day(m.joined_at)} for m in members.values()],
        hide_index=True, width="stretch", alt="Members of this workspace and their roles",
    )
    if ui.allowed("member.manage"):
        with st.container(horizontal=True, vertical_alignment="bottom"):
            uid = st.selectbox("Member", list(members), format_func=lambda u: f"{members[u].name} ({members[u].email})",
                               key="member_pick")
            new_role = st.selectbox("Role", ROLES, index=ROLES.index(members[uid].role), format_func=str.capitalize,
                                    help=ROLE_HELP, key=f"member_role_{uid}")
            change = st.button("Change role", icon=":material/manage_accounts:", key="member_change_role")
            st.button("Remove", icon=":material/person_remove:", key="remove_member_open",
                      on_click=open_dialog, args=("remove_member", "member_pick"))
        labels["remove_member"] = {u: m.email for u, m in members.items()}
        if change and ui.attempt(lambda: accounts.change_role(actor, uid, new_role) or True):
            finish(f"{members[uid].email} is now {'an' if new_role in ('owner', 'admin', 'editor') else 'a'} {new_role}.")
    else:
        only_admins("change roles or remove members")

with invitations_tab:
    if not ui.allowed("invitation.manage"):
        only_admins("invite people")
    else:
        if invited := st.session_state.pop("invite_link", None):
            email, role, link = invited
            st.success(f"Invitation created for {email} as {role}. Send them this link:", icon=":material/mail:")
            st.code(link, language=None)
            st.warning(
                f"This link is shown only once and expires in {accounts.INVITATION_DAYS} days. "
                "Copy it now; if it is lost, revoke the invitation and create a new one.", icon=":material/warning:",
            )
        with st.form("invite_form"):
            email = st.text_input("Email", placeholder="name@example.com", key="invite_email")
            role = st.selectbox("Role", ROLES, index=ROLES.index("editor"), format_func=str.capitalize,
                                help=ROLE_HELP, key="invite_role")
            submitted = st.form_submit_button("Create invitation link", type="primary", icon=":material/send:",
                                              key="invite_submit")
        if submitted and (token := ui.attempt(lambda: accounts.invite(actor, email, role))):
            base = get_settings().base_url.rstrip("/")
            st.session_state.update(invite_link=(email.strip().lower(), role, f"{base}/?invite={token}"), reset_invite=True)
            st.rerun()
        st.subheader("Pending invitations")
        pending = accounts.list_invitations(actor)
        if pending:
            st.dataframe(
                [{"Email": i.email, "Role": i.role.capitalize(), "Invited": day(i.created_at), "Expires": day(i.expires_at)}
                 for i in pending],
                hide_index=True, width="stretch", alt="Invitations not yet accepted",
            )
            pick_and_act({i.id: f"{i.email} ({i.role})" for i in pending}, "revoke_invitation", "Invitation",
                         "Revoke", ":material/cancel:")
        else:
            st.caption("No pending invitations.")

with keys_tab:
    if not ui.allowed("api_key.manage"):
        only_admins("manage API keys")
    else:
        if created := st.session_state.pop("new_api_key", None):
            st.warning(
                f"Copy the key “{created[0]}” now. It is shown only this once: Meterbook keeps only a hash "
                "and cannot show it again.", icon=":material/warning:",
            )
            st.code(created[1], language=None)
        with st.form("api_key_form"):
            name = st.text_input("Key name", placeholder="e.g. CI pipeline", key="api_key_name")
            scopes = st.multiselect("Scopes", list(api_keys.SCOPES), format_func=lambda s: f"{s} — {api_keys.SCOPES[s]}",
                                    key="api_key_scopes")
            expiry = st.date_input("Expiry date (optional)", value=None, min_value=datetime.now(zone).date(),
                                   help="The key works until the end of this day, workspace time.", key="api_key_expiry")
            submitted = st.form_submit_button("Create API key", type="primary", icon=":material/add:", key="api_key_submit")
        if submitted and (made := ui.attempt(lambda: api_keys.create_api_key(actor, name, scopes, end_of_day(expiry)))):
            st.session_state.update(new_api_key=(made[0].name, made[1]), reset_api_key=True)
            st.rerun()
        keys = api_keys.list_api_keys(actor)
        if keys:
            st.dataframe(
                [{"Name": k.name, "Prefix": k.prefix, "Scopes": ", ".join(k.scopes), "Status": k.status.capitalize(),
                  "Created": day(k.created_at), "Last used": ui.local_time(k.last_used_at), "Expires": day(k.expires_at)}
                 for k in keys],
                hide_index=True, width="stretch", alt="API keys of this workspace, by prefix",
            )
            if active := {k.id: f"{k.name} ({k.prefix})" for k in keys if k.status == "active"}:
                pick_and_act(active, "revoke_key", "API key", "Revoke", ":material/key_off:")
        else:
            st.caption("No API keys yet.")

with prices_tab:
    overrides = pricing.list_overrides(actor)
    if overrides:
        st.dataframe(
            [{"Provider": o.provider, "Model": o.model, "Input $/MTok": rate(o.input_mtok), "Output $/MTok": rate(o.output_mtok),
              "Cached input $/MTok": rate(o.cache_read_mtok), "$/image": rate(o.per_image),
              "$/1k chars": rate(o.per_1k_characters), "$/second": rate(o.per_second),
              "From": ui.local_time(o.effective_from), "Note": o.note or ""}
             for o in overrides],
            hide_index=True, width="stretch", alt="Workspace price overrides",
        )
    else:
        st.info("No price overrides. Calls are priced from the bundled genai-prices catalog; add an override for "
                "a negotiated rate or a model the catalog does not know.", icon=":material/sell:")
    if ui.allowed("price.write"):
        if overrides:
            pick_and_act({o.id: f"{o.provider}/{o.model}" for o in overrides}, "delete_price", "Override", "Delete",
                         ":material/delete:")
        with st.form("price_form"):
            st.markdown("**Add a price override** (USD per million tokens; it applies to calls from now on)")
            left, right = st.columns(2)
            provider = left.text_input("Provider", placeholder="e.g. openai", key="price_provider")
            model = right.text_input("Model", placeholder="e.g. gpt-4o", key="price_model")
            inp, out, cached = st.columns(3)
            input_rate = inp.text_input("Input $/MTok", placeholder="e.g. 2.50", key="price_input")
            output_rate = out.text_input("Output $/MTok", placeholder="e.g. 10", key="price_output")
            cached_rate = cached.text_input("Cached input $/MTok", placeholder="Same as input", key="price_cached")
            st.caption("Media models (images, speech, video) are priced per unit instead; leave what does not apply empty.")
            img, chars, secs = st.columns(3)
            image_rate = img.text_input("$ per image", placeholder="e.g. 0.04", key="price_image")
            char_rate = chars.text_input("$ per 1,000 characters", placeholder="e.g. 0.30", key="price_chars")
            second_rate = secs.text_input("$ per second of video", placeholder="e.g. 0.07", key="price_second")
            note = st.text_input("Note", placeholder="e.g. Enterprise agreement 2026", key="price_note")
            submitted = st.form_submit_button("Add override", type="primary", icon=":material/add:", key="price_submit")
        if submitted and ui.attempt(lambda: pricing.set_override(
            actor, provider=provider, model=model, input_mtok=input_rate, output_mtok=output_rate,
            cache_read_mtok=cached_rate, per_image=image_rate, per_1k_characters=char_rate, per_second=second_rate,
            note=note or None,
        )):
            st.session_state["reset_price"] = True
            finish(f"Price override for {provider.strip()}/{model.strip()} added.")
    else:
        st.caption("Only admins and owners can change prices.")

with email_tab:
    _email_settings.section(actor)

with audit_tab:
    if not ui.allowed("audit.read"):
        only_admins("read the audit log")
    else:
        page = st.session_state.get("audit_page", 1)
        events, total = audit.list_events(actor, page=page, page_size=AUDIT_PAGE_SIZE)
        pages = max(1, math.ceil(total / AUDIT_PAGE_SIZE))
        if page > pages:  # a page number left over from another workspace
            page = st.session_state["audit_page"] = 1
            events, total = audit.list_events(actor, page=1, page_size=AUDIT_PAGE_SIZE)
        st.dataframe(
            [{"When": ui.local_time(e.created_at, "%Y-%m-%d %H:%M:%S"), "Who": e.actor, "Action": e.action,
              "Object": e.object, "Detail": json.dumps(e.detail, default=str) if e.detail else ""} for e in events],
            hide_index=True, width="stretch", alt="Audit log, newest first",
        )
        with st.container(horizontal=True, vertical_alignment="center"):
            if pages > 1:
                st.pagination(pages, key="audit_page")
            st.caption(f"Page {page} of {pages} · {total} event{'s' if total != 1 else ''}, newest first")

with account_tab:
    me = accounts.get_user(actor.user_id)
    st.markdown(f"Signed in as **{me.name}** ({me.email}).")
    if me.password_hash is None:
        st.info("You sign in with single sign-on, so there is no Meterbook password to change.", icon=":material/key:")
    else:
        with st.form("password_form", clear_on_submit=True):
            st.markdown("**Change your password**")
            current = st.text_input("Current password", type="password", key="current_password")
            new = st.text_input("New password", type="password", key="new_password",
                                help=f"At least {get_settings().password_min_length} characters; a phrase works well.")
            repeat = st.text_input("Repeat the new password", type="password", key="repeat_password")
            submitted = st.form_submit_button("Change password", type="primary", icon=":material/lock_reset:",
                                              key="password_submit")
        if submitted:
            if new != repeat:
                st.error("The new passwords do not match; type the same one twice.", icon=":material/error:")
            elif ui.attempt(lambda: accounts.change_password(actor.user_id, current, new) or True):
                st.success("Your password was changed.", icon=":material/check_circle:")

if dialog := st.session_state.get("settings_dialog"):
    kind, object_id = dialog
    if object_id in labels.get(kind, {}):
        DIALOGS[kind](kind, object_id, labels[kind][object_id])
    else:  # gone since the dialog was opened
        close_dialog()
