"""Webhook triggers in the engine: tokens shown once and stored hashed, signatures, rotation, enable/disable,
delete, who a hook runs as, and how the body becomes the run's inputs (n8n flows' ``inputs.body`` too)."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from engine import accounts, db
from engine.errors import InvalidInput, NotFound, PermissionDenied
from engine.models import AuditEvent
from engine.permissions import Actor
from engine.config import PROJECT_ROOT
from engine.workflows import hooks, n8n, runs, store, worker
from engine.workflows.hook_models import WorkflowHook
from engine.workflows.models import WorkflowRun
from tests.factories import member, owner

N8N_FLOW = (PROJECT_ROOT / "tests" / "data" / "n8n_lead_flow.json").read_text()
SPEC = """\
name: Greeter
inputs:
  who: {type: string, default: world}
  times: {type: number, default: 1}
nodes:
  - {id: hello, type: transform, params: {value: "Hello {{ inputs.who }} x{{ inputs.times }}"}}
outputs:
  text: "{{ hello }}"
"""


@pytest.fixture
def ws(database, data_dir):
    return owner()


@pytest.fixture
def wf(ws):
    return store.create(ws, SPEC)


def deliver(workflow_id, token, data=None, *, headers=None, raw: bytes | None = None, **kw):
    body = raw if raw is not None else json.dumps(data or {}).encode()
    return hooks.deliver(workflow_id, token, body, headers or {}, content_type="application/json", **kw)


def count(model) -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_the_token_is_shown_once_and_only_its_hash_and_last_four_are_stored(ws, wf):
    view, token, secret = hooks.create_hook(ws, wf.id)
    assert token.startswith("mbh_") and len(token) > 40 and secret is None
    assert view.token_hint == token[-4:] and view.path == f"/hooks/{wf.id}/…{token[-4:]}" and view.enabled
    with db.read_session() as s:
        row = s.get(WorkflowHook, view.id)
        stored = [v for v in vars(row).values() if isinstance(v, str | bytes)]
    assert row.token_sha256 == hooks.hash_token(token) and not any(token in str(v) for v in stored)
    [listed] = hooks.list_hooks(ws, wf.id)
    assert listed == view and token not in repr(listed)
    assert listed.created_by == "Olivia Owner"


def test_a_delivery_queues_a_webhook_run_as_the_creator_with_the_body_as_inputs(ws, wf):
    view, token, _ = hooks.create_hook(ws, wf.id)
    got = deliver(wf.id, token, {"who": "Ada", "times": 3})
    run = runs.get_run(ws, got.run.id)
    assert (run.status, run.trigger, run.inputs) == ("queued", "webhook", {"who": "Ada", "times": 3})
    with db.read_session() as s:
        assert s.get(WorkflowRun, run.id).user_id == ws.user_id
    assert hooks.list_hooks(ws, wf.id)[0].last_used_at is not None
    assert not got.repeated


def test_the_same_idempotency_key_gives_the_same_run(ws, wf):
    _, token, _ = hooks.create_hook(ws, wf.id)
    first = deliver(wf.id, token, {"who": "a"}, idempotency_key="evt-1")
    again = deliver(wf.id, token, {"who": "b"}, idempotency_key="evt-1")
    other = deliver(wf.id, token, {"who": "c"}, idempotency_key="evt-2")
    assert again.run.id == first.run.id and again.repeated and not first.repeated
    assert other.run.id != first.run.id and count(WorkflowRun) == 2
    with pytest.raises(InvalidInput, match="at most"):
        deliver(wf.id, token, {}, idempotency_key="k" * 500)


def test_an_unknown_token_and_another_workflow_s_token_get_the_same_answer(ws, wf):
    other = store.create(ws, SPEC.replace("Greeter", "Other"))
    _, token, _ = hooks.create_hook(ws, wf.id)
    answers = []
    for ref, tok in [(wf.id, token[:-1] + ("A" if token[-1] != "A" else "B")), (other.id, token),
                     (wf.id, ""), ("not-a-number", token), (999999, token)]:
        with pytest.raises(NotFound) as caught:
            deliver(ref, tok, {})
        answers.append(str(caught.value))
    assert len(set(answers)) == 1 and count(WorkflowRun) == 0


def test_signed_hooks_take_only_fresh_signatures_made_with_their_secret(ws, wf):
    view, token, secret = hooks.create_hook(ws, wf.id, require_signature=True)
    assert secret.startswith("mbs_") and view.require_signature and view.secret_hint.endswith(secret[-4:])
    body = json.dumps({"who": "signed"}).encode()
    with pytest.raises(hooks.BadSignature, match="needs a signature"):
        deliver(wf.id, token, raw=body)
    with pytest.raises(hooks.BadSignature, match="does not match"):
        deliver(wf.id, token, raw=body, headers=hooks.sign("mbs_wrong", body))
    with pytest.raises(hooks.BadSignature, match="does not match"):  # signed, then the body changed
        deliver(wf.id, token, raw=body + b" ", headers=hooks.sign(secret, body))
    with pytest.raises(hooks.BadSignature, match="minutes"):
        deliver(wf.id, token, raw=body, headers=hooks.sign(secret, body, int(time.time()) - 301))
    assert count(WorkflowRun) == 0
    headers = hooks.sign(secret, body)
    first = deliver(wf.id, token, raw=body, headers=headers)
    assert runs.get_run(ws, first.run.id).inputs["who"] == "signed"
    # The same signed request replayed inside its five minutes gets the first run, not a second one.
    replay = deliver(wf.id, token, raw=body, headers=headers)
    assert replay.run.id == first.run.id and replay.repeated and count(WorkflowRun) == 1


def test_rotating_replaces_the_token_and_secret_at_once(ws, wf):
    view, old_token, old_secret = hooks.create_hook(ws, wf.id, require_signature=True)
    rotated, token, secret = hooks.rotate(ws, view.id)
    assert token != old_token and secret != old_secret and rotated.rotated_at is not None
    body = b"{}"
    with pytest.raises(NotFound):
        deliver(wf.id, old_token, raw=body, headers=hooks.sign(secret, body))
    with pytest.raises(hooks.BadSignature):
        deliver(wf.id, token, raw=body, headers=hooks.sign(old_secret, body))
    deliver(wf.id, token, raw=body, headers=hooks.sign(secret, body))
    unsigned, token2, none = hooks.rotate(ws, view.id, require_signature=False)
    assert none is None and not unsigned.require_signature and unsigned.secret_hint is None
    deliver(wf.id, token2, {})


def test_disabled_hooks_paused_workflows_and_deleted_hooks_refuse_and_queue_nothing(ws, wf):
    view, token, _ = hooks.create_hook(ws, wf.id)
    hooks.disable(ws, view.id)
    with pytest.raises(hooks.HookDisabled, match="disabled"):
        deliver(wf.id, token, {})
    hooks.enable(ws, view.id)
    store.set_active(ws, wf.id, False)
    with pytest.raises(hooks.WorkflowPaused, match="paused"):
        deliver(wf.id, token, {})
    assert count(WorkflowRun) == 0 and hooks.list_hooks(ws, wf.id)[0].last_used_at is None
    store.set_active(ws, wf.id, True)
    hooks.delete(ws, view.id)
    with pytest.raises(NotFound):
        deliver(wf.id, token, {})
    assert hooks.list_hooks(ws, wf.id) == []


def test_bad_bodies_are_refused_before_anything_is_stored(ws, wf):
    _, token, _ = hooks.create_hook(ws, wf.id)
    with pytest.raises(InvalidInput, match="not valid JSON"):
        deliver(wf.id, token, raw=b"{nope")
    with pytest.raises(InvalidInput, match="JSON object"):
        deliver(wf.id, token, raw=b"[1, 2]")
    with pytest.raises(hooks.UnsupportedBody, match="application/json"):
        hooks.deliver(wf.id, token, b"who=x", {}, content_type="application/x-www-form-urlencoded")
    with pytest.raises(InvalidInput, match="no input 'colour'"):
        deliver(wf.id, token, {"colour": "red"})
    with pytest.raises(InvalidInput, match="type number"):
        deliver(wf.id, token, {"times": "many"})
    assert count(WorkflowRun) == 0 and hooks.list_hooks(ws, wf.id)[0].last_used_at is None
    assert deliver(wf.id, token, raw=b"").run.inputs == {"who": "world", "times": 1}  # an empty ping: defaults


def test_an_imported_n8n_flow_reads_the_request_as_n8n_s_webhook_node_gave_it(ws):
    flow = json.loads(N8N_FLOW)
    flow["nodes"] = [n for n in flow["nodes"] if n["name"] in ("Webhook", "Set fields", "Is hot?")]
    flow["connections"] = {k: v for k, v in flow["connections"].items() if k in ("Webhook", "Set fields")}
    wf = store.create(ws, n8n.convert(json.dumps(flow)).source)
    _, token, _ = hooks.create_hook(ws, wf.id)
    got = hooks.deliver(wf.id, token, json.dumps({"email": "a@b.c", "score": 80}).encode(),
                        {"Content-Type": "application/json", "Authorization": "Bearer s3cret-value", "X-Source": "crm"},
                        content_type="application/json", query={"campaign": "spring"})
    request = runs.get_run(ws, got.run.id).inputs["body"]
    assert request["body"] == {"email": "a@b.c", "score": 80} and request["query"] == {"campaign": "spring"}
    assert request["headers"]["x-source"] == "crm" and "authorization" not in request["headers"]
    worker.work_once("hooks-n8n")
    done = runs.get_run(ws, got.run.id)
    assert done.status == "succeeded", done.error
    steps = {s.node_id: s for s in runs.steps(ws, got.run.id)}
    assert steps["set_fields"].output == {"email": "a@b.c", "score": 80} and steps["is_hot"].output["branch"] == "then"


def test_who_may_manage_hooks_and_a_creator_who_loses_the_right_stops_the_hook(ws, wf):
    viewer = member(ws, "vera@example.com", "viewer")
    editor = member(ws, "eddie@example.com", "editor")
    with pytest.raises(PermissionDenied):
        hooks.create_hook(viewer, wf.id)
    assert [h.workflow_id for h in hooks.list_hooks(viewer, wf.id)] == []
    view, token, _ = hooks.create_hook(editor, wf.id)
    with pytest.raises(PermissionDenied):
        hooks.disable(viewer, view.id)
    other_ws = Actor(ws.user_id, accounts.create_workspace(ws.user_id, "Elsewhere").id)
    with pytest.raises(NotFound):
        hooks.list_hooks(other_ws, wf.id)
    with pytest.raises(NotFound):
        hooks.delete(other_ws, view.id)
    accounts.change_role(ws, editor.user_id, "viewer")
    with pytest.raises(PermissionDenied, match="created this webhook"):
        deliver(wf.id, token, {})
    assert count(WorkflowRun) == 0


def test_every_change_is_audited_without_the_token(ws, wf):
    view, token, secret = hooks.create_hook(ws, wf.id, require_signature=True)
    _, token2, secret2 = hooks.rotate(ws, view.id)
    hooks.disable(ws, view.id)
    hooks.delete(ws, view.id)
    with db.read_session() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action.like("workflow_hook.%"))
                                .order_by(AuditEvent.id)))
    assert [e.action for e in events] == ["workflow_hook.create", "workflow_hook.rotate", "workflow_hook.disable",
                                          "workflow_hook.delete"]
    text = json.dumps([e.detail for e in events], default=str)
    assert not any(v in text for v in (token, token2, secret, secret2))
