"""The sidecar's HTTP server through real HTTP on 127.0.0.1: hook deliveries (idempotency, waiting for the
result, signatures, size and type limits, refusals that store nothing), Stripe's webhook against the fake
Stripe, the health check, unknown routes and methods, token-free logs, and a clean stop."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time

import httpx
import pytest
from sqlalchemy import func, select

from engine import db
from engine.billing.models import StripeEvent
from engine.sidecar import http
from engine.workflows import hooks, runs, store, worker
from engine.workflows.models import WorkflowRun
from tests.billing_helpers import billing_on
from tests.factories import owner
from tests.fakes.stripe_server import WEBHOOK_SECRET, sign as stripe_sign

SPEC = """\
name: Greeter
inputs:
  who: {type: string, default: world}
nodes:
  - {id: hello, type: transform, params: {value: "Hello {{ inputs.who }}"}}
outputs:
  text: "{{ hello }}"
"""


class Health:
    def __init__(self):
        self.report: dict = {"ok": True, "leader": True}
        self.fail = False

    def __call__(self) -> dict:
        if self.fail:
            raise RuntimeError("database gone")
        return self.report


@pytest.fixture
def health():
    return Health()


@pytest.fixture
def server(health):
    srv = http.start("127.0.0.1", 0, health=health)
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture
def ws(database, data_dir):
    return owner()


@pytest.fixture
def wf(ws):
    return store.create(ws, SPEC)


@pytest.fixture
def hook(ws, wf):
    return hooks.create_hook(ws, wf.id)


def run_count() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(WorkflowRun))


def url(issued: hooks.Issued, suffix: str = "") -> str:
    return hooks.path_for(issued.view.workflow_id, issued.token) + suffix


# --- hooks ----------------------------------------------------------------------------------


def test_a_delivery_queues_a_run_with_the_body_as_inputs(client, ws, hook):
    r = client.post(url(hook), json={"who": "Ada"})
    assert r.status_code == 202 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "queued"
    run = runs.get_run(ws, body["run_id"])
    assert (run.trigger, run.inputs, run.status) == ("webhook", {"who": "Ada"}, "queued")


def test_a_repeated_idempotency_key_answers_200_with_the_same_run(client, hook):
    first = client.post(url(hook), json={"who": "a"}, headers={"Idempotency-Key": "delivery-7"})
    again = client.post(url(hook), json={"who": "a"}, headers={"Idempotency-Key": "delivery-7"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["run_id"] == first.json()["run_id"] and run_count() == 1
    too_long = client.post(url(hook), json={}, headers={"Idempotency-Key": "k" * 300})
    assert too_long.status_code == 400 and "at most" in too_long.json()["error"] and run_count() == 1


@pytest.fixture
def working():
    """A worker thread, as the sidecar hosts them."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            if not worker.work_once("http-test", stop=stop):
                stop.wait(0.05)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield
    stop.set()
    t.join(30)


def test_waiting_returns_the_outputs_once_the_run_finished(client, hook, working):
    r = client.post(url(hook) + "?wait=30", json={"who": "Grace"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded" and body["outputs"] == {"text": "Hello Grace"}
    r = client.post(url(hook, "/wait"), json={"who": "Linus"})
    assert r.status_code == 200 and r.json()["outputs"] == {"text": "Hello Linus"}


def test_waiting_for_a_run_nobody_works_answers_202_with_its_id(client, hook):
    r = client.post(url(hook) + "?wait=0.2", json={})
    assert r.status_code == 202 and r.json()["status"] == "queued" and r.json()["run_id"]
    for bad in ("-1", "soon", "inf", "nan"):
        r = client.post(url(hook) + f"?wait={bad}", json={})
        assert r.status_code == 400 and "wait" in r.json()["error"]
    assert run_count() == 1


def test_signed_hooks_need_a_good_fresh_signature(client, ws, wf):
    signed = hooks.create_hook(ws, wf.id, require_signature=True)
    body = json.dumps({"who": "signed"}).encode()
    json_type = {"Content-Type": "application/json"}
    missing = client.post(url(signed), content=body, headers=json_type)
    bad = client.post(url(signed), content=body, headers={**json_type, **hooks.sign("mbs_not-it", body)})
    stale = client.post(url(signed), content=body,
                        headers={**json_type, **hooks.sign(signed.secret, body, int(time.time()) - 600)})
    assert [r.status_code for r in (missing, bad, stale)] == [401, 401, 401]
    assert "minutes" in stale.json()["error"] and run_count() == 0
    good = client.post(url(signed), content=body, headers={**json_type, **hooks.sign(signed.secret, body)})
    assert good.status_code == 202 and runs.get_run(ws, good.json()["run_id"]).inputs == {"who": "signed"}


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl")
def test_the_curl_recipes_the_page_shows_really_deliver(server, ws, wf):
    for signed in (False, True):
        issued = hooks.create_hook(ws, wf.id, require_signature=signed)
        recipe = hooks.curl_example(server.url + url(issued), {"who": "it's curl"}, issued.secret)
        out = subprocess.run(["bash", "-c", recipe], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        assert answer["status"] == "queued", answer
        assert runs.get_run(ws, answer["run_id"]).inputs == {"who": "it's curl"}


def test_oversize_and_non_json_bodies_are_refused_and_nothing_is_stored(client, hook):
    big = client.post(url(hook), content=b'{"who": "' + b"x" * (1024 * 1024) + b'"}',
                      headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and "1024 KiB" in big.json()["error"]
    broken = client.post(url(hook), content=b"{not json", headers={"Content-Type": "application/json"})
    array = client.post(url(hook), json=[1, 2])
    form = client.post(url(hook), data={"who": "x"})
    unknown_input = client.post(url(hook), json={"colour": "red"})
    assert [r.status_code for r in (broken, array, form, unknown_input)] == [400, 400, 415, 400]
    assert "not valid JSON" in broken.json()["error"] and "no input 'colour'" in unknown_input.json()["error"]
    assert run_count() == 0 and hooks.list_hooks(*_owner_and_wf(hook))[0].last_used_at is None


def _owner_and_wf(issued):
    from engine.permissions import Actor

    with db.read_session() as s:
        from engine.workflows.hook_models import WorkflowHook

        row = s.get(WorkflowHook, issued.view.id)
        return Actor(row.created_by, row.workspace_id), row.workflow_id


def test_an_unknown_hook_and_a_bad_token_get_the_same_404(client, ws, hook):
    other = store.create(ws, SPEC.replace("Greeter", "Other"))
    wrong_token = client.post(hooks.path_for(hook.view.workflow_id, hook.token[:-2] + "zz"), json={})
    wrong_workflow = client.post(hooks.path_for(other.id, hook.token), json={})
    no_such = client.post("/hooks/424242/mbh_nothing-here", json={})
    by_name = client.post(f"/hooks/Greeter/{hook.token}", json={})
    answers = {(r.status_code, r.text) for r in (wrong_token, wrong_workflow, no_such, by_name)}
    assert len(answers) == 1 and answers.pop()[0] == 404 and run_count() == 0


def test_a_disabled_hook_and_a_paused_workflow_answer_409(client, ws, wf, hook):
    hooks.disable(ws, hook.view.id)
    r = client.post(url(hook), json={})
    assert r.status_code == 409 and "disabled" in r.json()["error"]
    hooks.enable(ws, hook.view.id)
    store.set_active(ws, wf.id, False)
    r = client.post(url(hook), json={})
    assert r.status_code == 409 and "paused" in r.json()["error"]
    assert run_count() == 0


def test_the_plan_s_run_limit_answers_402_with_the_engine_s_message(client, ws, wf, hook, monkeypatch):
    with billing_on(monkeypatch):
        first = runs.trigger(ws, wf.id)
        with db.transaction() as s:  # Free's 200 runs this month, all used
            version_id = s.get(WorkflowRun, first.id).version_id
            s.add_all(WorkflowRun(workspace_id=ws.workspace_id, workflow_id=wf.id, version_id=version_id,
                                  user_id=ws.user_id, trigger="manual", inputs={}, status="succeeded")
                      for _ in range(199))
        r = client.post(url(hook), json={})
    assert r.status_code == 402 and "workflow runs this month is reached: 200 of 200" in r.json()["error"]
    assert run_count() == 200


def test_log_lines_show_only_the_token_s_last_four(client, hook, caplog):
    caplog.set_level(logging.DEBUG, logger="engine.sidecar.http")
    client.post(url(hook), json={})
    client.post(url(hook), content=b"[")
    client.post(url(hook) + "?wait=0", json={})
    mine = [r.getMessage() for r in caplog.records if r.name == "engine.sidecar.http"]
    assert mine and any(f"…{hook.token[-4:]}" in m for m in mine)
    assert not any(hook.token in m or hook.token[4:20] in m for m in mine)


# --- Stripe -------------------------------------------------------------------------------


def test_stripe_webhooks_good_forged_and_stripe_down(client, ws, monkeypatch):
    from engine.billing import accounts as billing

    with billing_on(monkeypatch) as fake:
        session_id = billing.start_checkout(ws, "pro").rsplit("/", 1)[1]
        events = fake.complete_checkout(session_id)
        payload = json.dumps(events[0]).encode()
        good = client.post("/stripe/webhook", content=payload, headers={"Stripe-Signature": stripe_sign(payload)})
        assert good.status_code == 200 and good.json() == {"received": True, "outcome": "processed"}
        again = client.post("/stripe/webhook", content=payload, headers={"Stripe-Signature": stripe_sign(payload)})
        assert again.json()["outcome"] == "duplicate"
        forged = client.post("/stripe/webhook", content=payload,
                             headers={"Stripe-Signature": stripe_sign(payload, "whsec_someone_else")})
        unsigned = client.post("/stripe/webhook", content=payload)
        assert (forged.status_code, unsigned.status_code) == (400, 400) and "signature" in forged.json()["error"]
        later = json.dumps(fake.cancel(fake.sessions[session_id]["subscription"])).encode()
        fake.outage = True
        down = client.post("/stripe/webhook", content=later, headers={"Stripe-Signature": stripe_sign(later)})
        assert down.status_code == 503 and "could not be reached" in down.json()["error"]
        with db.read_session() as s:
            assert s.scalar(select(func.count()).select_from(StripeEvent)) == 1  # the failed one stored nothing
        fake.outage = False
        assert client.post("/stripe/webhook", content=later,
                           headers={"Stripe-Signature": stripe_sign(later)}).json()["outcome"] == "processed"
        big = client.post("/stripe/webhook", content=b"x" * (1024 * 1024 + 1))
        assert big.status_code == 413


def test_stripe_webhook_without_billing_configured_answers_503(client, database, data_dir):
    payload = b'{"id": "evt_1", "type": "invoice.paid"}'
    r = client.post("/stripe/webhook", content=payload,
                    headers={"Stripe-Signature": stripe_sign(payload, WEBHOOK_SECRET)})
    assert r.status_code == 503 and "METERBOOK_STRIPE_WEBHOOK_SECRET" in r.json()["error"]


# --- health, routes, stopping ---------------------------------------------------------------


def test_health_is_200_when_ok_and_503_otherwise(client, health):
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"ok": True, "leader": True}
    health.report = {"ok": False, "database": "unreachable"}
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["database"] == "unreachable"
    health.fail = True
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["ok"] is False and "RuntimeError" in r.json()["error"]
    assert "Traceback" not in r.text


def test_unknown_paths_are_404_and_wrong_methods_405_as_json(client):
    for method, path, status in [("GET", "/", 404), ("POST", "/hooks/1", 404), ("GET", "/hooks/1/mbh_x", 405),
                                 ("POST", "/health", 405), ("GET", "/stripe/webhook", 405),
                                 ("DELETE", "/hooks/1/mbh_x", 405)]:
        r = client.request(method, path)
        assert r.status_code == status and "error" in r.json(), (method, path)
    assert client.get("/hooks/1/mbh_x").headers["allow"] == "POST"


def test_a_bad_port_is_a_clear_error(server):
    with pytest.raises(http.SidecarHttpError, match="cannot listen"):
        http.start("127.0.0.1", server.port, health=dict)


def test_stop_answers_a_waiting_caller_and_then_closes(health, hook):
    srv = http.start("127.0.0.1", 0, health=health)
    answers = []

    def call():
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            answers.append(c.post(url(hook) + "?wait=60", json={}))

    caller = threading.Thread(target=call)
    caller.start()
    for _ in range(600):  # until the run is queued: the request is then waiting on it
        if run_count():
            break
        time.sleep(0.05)
    srv.stop()
    caller.join(60)
    [r] = answers
    assert r.status_code == 202 and r.json()["status"] == "queued"
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/health", timeout=5)
    srv.stop()  # twice is harmless
