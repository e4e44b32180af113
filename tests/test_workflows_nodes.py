"""Every node type, run by the executor: AI steps through the generation path, http against a local
server (with a vault credential that never reaches the logs), transform/JSONPath, sql through the
notebooks' sandbox, email over SMTP, webhooks, delay and the python node (when its sandbox exists)."""

from __future__ import annotations

import importlib.util
import json
from decimal import Decimal

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from engine import db
from engine.config import get_settings
from engine.errors import InvalidInput, PermissionDenied
from engine.models import Asset, AuditEvent, LedgerEntry, ProviderConnection, RouteTarget
from engine.workflows import credentials, runs, store, worker
from engine.workflows.models import WorkflowStep
from providers.base import Result, Usage
from tests import scripted_provider as scripted
from tests.factories import member, owner, scripted_routes
from tests.fakes.http_target import HttpTarget
from tests.test_notify import Inbox, _free_port
from tests.test_warehouse import add_rows

GPT = "gpt-4o-mini"
SECRET = "sk-live-verysecretvalue-9876"


@pytest.fixture
def ws(database, data_dir):
    actor = owner()
    scripted_routes(actor, ("primary", "openai", GPT))
    return actor


@pytest.fixture
def target():
    server = HttpTarget().start()
    yield server
    server.stop()


def run(actor, source: str, inputs=None):
    wf = store.create(actor, source)
    view = runs.trigger(actor, wf.id, inputs)
    worker.work_once("nodes")
    done = runs.get_run(actor, view.id)
    return done, {s.node_id: s for s in runs.steps(actor, view.id)}


def test_llm_json_output_is_parsed_and_tagged_with_the_run(ws):
    scripted.SCRIPT[GPT] = [Result(text='```json\n{"score": 87}\n```', usage=Usage(input_tokens=200, output_tokens=20))]
    done, steps = run(ws, """
name: score
nodes:
  - {id: rate, type: llm, params: {prompt: "Score this lead", system: "Answer in JSON", json_output: true}}
outputs: {score: "{{ rate.data.score }}"}
""")
    assert done.status == "succeeded" and done.outputs == {"score": 87}
    assert scripted.CALLS[0].system == "Answer in JSON"
    with db.read_session() as s:
        row = s.scalars(select(LedgerEntry)).one()
    assert row.workflow_run_id == done.id and row.request_id.startswith(f"wf{done.id}-rate-a1")
    assert steps["rate"].output["cost"] == str(row.cost)


def test_image_and_speech_nodes_go_through_the_generation_path(ws):
    with db.transaction() as s:
        conn = s.scalar(select(ProviderConnection))
        s.add(RouteTarget(workspace_id=ws.workspace_id, kind="image", connection_id=conn.id, model="gpt-image-1"))
        s.add(RouteTarget(workspace_id=ws.workspace_id, kind="speech", connection_id=conn.id, model="tts-1"))
    scripted.SCRIPT["gpt-image-1"] = [scripted.image(2)]
    scripted.SCRIPT["tts-1"] = [Result(assets=(scripted.Asset(b"ID3 audio", "audio/mpeg"),), usage=Usage(characters=11))]
    done, steps = run(ws, """
name: media
nodes:
  - {id: pic, type: image, params: {prompt: a lighthouse, n: 2}}
  - {id: voice, type: speech, params: {text: hello world}}
""")
    assert done.status == "succeeded", done.error
    assert len(steps["pic"].output["asset_ids"]) == 2 and len(steps["voice"].output["asset_ids"]) == 1
    with db.read_session() as s:
        assert len(s.scalars(select(Asset)).all()) == 3
        assert {r.kind for r in s.scalars(select(LedgerEntry))} == {"image", "speech"}


def test_http_sends_the_credential_but_never_stores_or_logs_it(ws, target):
    credentials.create(ws, "crm", SECRET)
    target.answers["/leads"] = [(201, {"id": 7, "name": "Ann"}, "application/json")]
    done, steps = run(ws, f"""
name: crm
inputs:
  name: {{type: string}}
nodes:
  - id: post
    type: http
    params:
      url: "{target.url}/leads?token=abc"
      method: POST
      credential: crm
      headers: {{X-Source: meterbook}}
      body: {{name: "{{{{ inputs.name }}}}"}}
      expect_status: [201]
outputs: {{id: "{{{{ post.body.id }}}}"}}
""", {"name": "Ann"})
    assert done.status == "succeeded", done.error
    assert done.outputs == {"id": 7}
    seen = target.seen[0]
    assert seen.headers["Authorization"] == f"Bearer {SECRET}" and seen.headers["X-Source"] == "meterbook"
    assert json.loads(seen.body) == {"name": "Ann"}
    assert steps["post"].logs.startswith("POST 127.0.0.1/leads → 201")
    with db.read_session() as s:
        stored = json.dumps([(r.input, r.output, r.logs, r.error) for r in s.scalars(select(WorkflowStep))])
        audit = json.dumps([e.detail for e in s.scalars(select(AuditEvent))], default=str)
    assert SECRET not in stored and SECRET not in audit and "abc" not in steps["post"].logs
    [view] = credentials.list_credentials(ws)
    assert view.hint == "sk-…9876"


def test_credentials_are_checked_and_admin_only(ws):
    with pytest.raises(InvalidInput):
        credentials.create(ws, "bad name!", SECRET)
    editor = member(ws, "ed@example.com", "editor")
    with pytest.raises(PermissionDenied):
        credentials.create(editor, "crm", SECRET)
    assert credentials.list_credentials(ws) == []


def test_http_unexpected_status_and_a_missing_credential_fail_clearly(ws, target):
    target.answers["/x"] = [(200, "plain words", "text/plain")]
    done, steps = run(ws, f"name: h\nnodes:\n  - {{id: a, type: http, params: {{url: '{target.url}/x', expect_status: [204]}}}}\n")
    assert done.status == "failed" and "answered 200" in done.error
    done, _ = run(ws, f"name: h2\nnodes:\n  - {{id: a, type: http, params: {{url: '{target.url}/x', credential: nope}}}}\n")
    assert done.status == "failed" and "no credential called 'nope'" in done.error


def test_transform_with_jsonpath_and_templates(ws):
    done, steps = run(ws, """
name: shape
inputs:
  order: {type: object, default: {items: [{sku: a, qty: 2}, {sku: b, qty: 5}], customer: {name: Ann}}}
nodes:
  - id: pick
    type: transform
    params:
      data: "{{ inputs.order }}"
      jsonpath: {skus: "$.items[*].sku", big: "$.items[?@.qty > 3].sku", who: "$.customer.name"}
  - id: first
    type: transform
    params: {data: "{{ inputs.order }}", jsonpath: "$.items[*].qty", first: true}
  - {id: text, type: transform, needs: [pick], params: {value: "{{ pick.skus | join(',') }} for {{ pick.who[0] }}"}}
""")
    assert done.status == "succeeded", done.error
    assert steps["pick"].output == {"skus": ["a", "b"], "big": ["b"], "who": ["Ann"]}
    assert steps["first"].output == 2 and steps["text"].output == "a,b for Ann"


def test_templates_cannot_reach_python_internals(ws):
    done, _ = run(ws, "name: esc\nnodes:\n  - {id: a, type: transform, params: {value: \"{{ inputs.__class__.__mro__ }}\"}}\n")
    assert done.status == "failed"
    assert "__class__" in done.error and ("unsafe" in done.error or "undefined" in done.error)


def test_sql_runs_in_the_notebooks_sandbox(ws, data_dir):
    add_rows(ws.workspace_id, ws.user_id, 30, seed=4, cost=Decimal("0.5"))
    done, steps = run(ws, """
name: spend
nodes:
  - {id: q, type: sql, params: {query: "SELECT count(*) AS n, sum(cost) AS total FROM ledger", max_rows: 5}}
  - {id: bad, type: sql, on_error: continue, params: {query: "DELETE FROM ledger"}}
outputs: {n: "{{ q.rows[0].n }}", total: "{{ q.rows[0].total }}"}
""")
    assert done.status == "succeeded", done.error
    assert done.outputs["n"] == 30 and Decimal(done.outputs["total"]) == Decimal("15")
    assert steps["bad"].status == "failed" and steps["bad"].error


@pytest.fixture
def smtp_server(monkeypatch):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    for key, value in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(controller.port), "SMTP_STARTTLS": "false",
                       "SMTP_FROM": "flows@meterbook.example"}.items():
        monkeypatch.setenv(f"METERBOOK_{key}", value)
    get_settings.cache_clear()
    yield inbox
    controller.stop()
    get_settings.cache_clear()


def test_email_and_webhook_nodes_deliver(ws, smtp_server, target):
    done, steps = run(ws, f"""
name: tell
inputs:
  who: {{type: string, default: Ann}}
nodes:
  - id: mail
    type: email
    params: {{to: "ann@example.com, bob@example.com", subject: "Hi {{{{ inputs.who }}}}", body: "Your report is ready."}}
  - id: slack
    type: webhook
    params: {{url: "{target.url}/hooks/T000/B000/XXXXsecret", text: "Report for {{{{ inputs.who }}}}", extra: {{channel: ops}}}}
""")
    assert done.status == "succeeded", done.error
    [(sender, to, text, _, _)] = smtp_server.messages
    assert to == ["ann@example.com", "bob@example.com"] and "Subject: Hi Ann" in text
    assert json.loads(target.seen[0].body) == {"text": "Report for Ann", "channel": "ops"}
    assert "XXXXsecret" not in (steps["slack"].logs or "") + json.dumps(steps["slack"].output)


def test_email_without_a_server_fails_the_step_with_how_to_fix_it(ws, monkeypatch):
    monkeypatch.delenv("METERBOOK_SMTP_HOST", raising=False)
    get_settings.cache_clear()
    done, _ = run(ws, "name: m\nnodes:\n  - {id: m, type: email, params: {to: a@example.com, subject: s, body: b}}\n")
    assert done.status == "failed" and "METERBOOK_SMTP_HOST" in done.error


HAVE_SANDBOX = importlib.util.find_spec("engine.workflows.python_sandbox") is not None


@pytest.mark.skipif(not HAVE_SANDBOX, reason="engine/workflows/python_sandbox.py is missing from this build")
def test_python_node_runs_main_with_the_data(ws):
    done, steps = run(ws, """
name: py
nodes:
  - id: add
    type: python
    params:
      data: {a: 2, b: 3}
      code: |
        def main(data):
            print("adding")
            return {"sum": data["a"] + data["b"]}
outputs: {sum: "{{ add.sum }}"}
""")
    if done.status == "failed" and "sandbox" in (done.error or "").lower():
        pytest.skip(f"the sandbox is off on this host: {done.error}")
    assert done.status == "succeeded", done.error
    assert done.outputs == {"sum": 5} and "adding" in steps["add"].logs


@pytest.mark.skipif(not HAVE_SANDBOX, reason="engine/workflows/python_sandbox.py is missing from this build")
def test_python_node_limits_are_passed_to_the_sandbox(ws):
    done, steps = run(ws, """
name: py_limits
nodes:
  - id: spin
    type: python
    params:
      cpu_s: 1
      code: |
        def main(data):
            while True:
                pass
""")
    if done.status == "failed" and "off on this server" in (done.error or ""):
        pytest.skip(f"the sandbox is off on this host: {done.error}")
    assert done.status == "failed" and steps["spin"].status == "failed"
    assert "CPU" in done.error or "cpu" in done.error


def test_python_node_without_its_sandbox_module_says_so(ws, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "engine.workflows.python_sandbox", None)  # as on a build without it
    done, _ = run(ws, "name: py\nnodes:\n  - {id: p, type: python, params: {code: 'def main(data): return 1'}}\n")
    assert done.status == "failed" and "python node is not available" in done.error
