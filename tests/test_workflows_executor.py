"""The executor's guarantees on both databases: parallel branches, retries, timeouts, error branches,
resume after a killed worker without repeating a paid step, idempotency and cancellation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from engine import db
from engine.config import PROJECT_ROOT
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, PermissionDenied
from engine.models import LedgerEntry
from engine.workflows import executor, runs, store, worker
from engine.workflows.models import WorkflowDeadLetter, WorkflowRun, WorkflowStep
from providers.base import Result, Usage
from tests import scripted_provider as scripted
from tests.factories import member, owner, scripted_routes
from tests.fakes.http_target import HttpTarget
from tests.waiting import until

GPT = "gpt-4o-mini"


@pytest.fixture
def ws(database, data_dir):
    actor = owner()
    scripted_routes(actor, ("primary", "openai", GPT))
    return actor


def make(actor, source: str):
    return store.create(actor, source)


def run_now(actor, wf, inputs=None, **kw):
    run = runs.trigger(actor, wf.id, inputs, **kw)
    worker.work_once("test-worker")
    return runs.get_run(actor, run.id)


def step_map(actor, run_id):
    return {s.node_id: s for s in runs.steps(actor, run_id)}


def test_a_linear_workflow_passes_outputs_along_and_records_its_cost(ws):
    scripted.SCRIPT[GPT] = [Result(text="Bonjour", usage=Usage(input_tokens=1000, output_tokens=500))]
    wf = make(ws, """
name: greet
inputs:
  who: {type: string, default: world}
nodes:
  - id: prompt
    type: transform
    params: {value: "Say hello to {{ inputs.who }} in French"}
  - id: ask
    type: llm
    needs: [prompt]
    params: {prompt: "{{ prompt }}", max_tokens: 50}
outputs:
  answer: "{{ nodes.ask.text }}"
""")
    run = run_now(ws, wf, {"who": "Ann"})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"answer": "Bonjour"}
    assert scripted.CALLS[0].messages[0].content == "Say hello to Ann in French"
    with db.read_session() as s:
        [row] = s.scalars(select(LedgerEntry)).all()
    assert row.workflow_run_id == run.id and "workflow" in row.tags
    assert run.cost == row.cost == Decimal("0.00045")  # 1000 × $0.15/M + 500 × $0.60/M
    assert step_map(ws, run.id)["ask"].cost == row.cost


def test_nodes_whose_needs_are_met_run_in_parallel(ws):
    wf = make(ws, """
name: fan
nodes:
  - {id: a, type: delay, params: {seconds: 0.6}}
  - {id: b, type: delay, params: {seconds: 0.6}}
  - {id: c, type: delay, params: {seconds: 0.6}}
  - {id: join, type: transform, needs: [a, b, c], params: {value: done}}
""")
    run = run_now(ws, wf)
    assert run.status == "succeeded"
    steps = step_map(ws, run.id)
    starts = sorted(steps[n].started_at for n in "abc")
    ends = sorted(steps[n].finished_at for n in "abc")
    assert starts[-1] < ends[0]  # all three were running at once
    assert steps["join"].started_at >= ends[-1]


@pytest.fixture
def target():
    server = HttpTarget().start()
    yield server
    server.stop()


def test_retries_back_off_and_then_succeed(ws, monkeypatch, target):
    delays = []
    monkeypatch.setattr(executor.random, "uniform", lambda lo, hi: delays.append((lo, hi)) or 0)
    target.answers["/flaky"] = [(503, "busy", "text/plain"), (502, "bad gateway", "text/plain"),
                                (200, {"n": 1}, "application/json")]
    wf = make(ws, f"""
name: flaky
nodes:
  - id: call
    type: http
    retry: {{max_attempts: 4, backoff_s: 2, max_backoff_s: 3}}
    params: {{url: "{target.url}/flaky"}}
""")
    run = run_now(ws, wf)
    assert run.status == "succeeded", run.error
    call = step_map(ws, run.id)["call"]
    assert call.attempt == 3 and call.output["body"] == {"n": 1}
    assert delays == [(0, 2), (0, 3)]  # full jitter: uniform(0, min(cap, base·2^n))
    assert len(target.seen) == 3


def test_a_client_error_is_not_retried(ws, target):
    target.answers["/gone"] = [(404, "no such thing", "text/plain")]
    wf = make(ws, f"name: gone\nnodes:\n  - {{id: call, type: http, retry: {{max_attempts: 5}}, params: {{url: '{target.url}/gone'}}}}\n")
    run = run_now(ws, wf)
    assert run.status == "failed" and "answered 404" in run.error
    assert len(target.seen) == 1


def test_a_node_past_its_timeout_fails_the_run_into_the_dead_letters(ws):
    wf = make(ws, """
name: slow
nodes:
  - {id: wait, type: delay, timeout_s: 0.3, params: {seconds: 5}}
  - {id: after, type: transform, needs: [wait], params: {value: 1}}
""")
    run = run_now(ws, wf)
    assert run.status == "failed" and run.failed_node == "wait"
    assert "timeout of 0.3 s" in run.error
    steps = step_map(ws, run.id)
    assert steps["wait"].status == "failed" and "after" not in steps or steps["after"].status != "succeeded"
    [letter] = runs.dead_letters(ws)
    assert letter.run_id == run.id


def test_error_branches_continue_and_the_failure_handler(ws, data_dir):
    wf = make(ws, """
name: branches
nodes:
  - id: bad
    type: http
    on_error: route
    params: {url: "http://127.0.0.1:9/nothing", timeout_s: 2}
  - {id: recover, type: transform, needs: ["bad:error"], params: {value: "recovered"}}
  - {id: normal, type: transform, needs: [bad], params: {value: "never"}}
  - id: soft
    type: transform
    on_error: continue
    params: {value: "{{ inputs.missing }}"}
  - {id: after_soft, type: transform, needs: [soft], params: {value: "went on"}}
outputs:
  r: "{{ recover }}"
""")
    run = run_now(ws, wf)
    assert run.status == "succeeded", run.error
    steps = step_map(ws, run.id)
    assert steps["bad"].status == "failed" and steps["recover"].output == "recovered"
    assert steps["normal"].status == "skipped"
    assert steps["soft"].status == "failed" and steps["after_soft"].output == "went on"
    assert run.outputs == {"r": "recovered"}


def test_condition_and_switch_route_to_one_branch(ws):
    wf = make(ws, """
name: route
inputs:
  score: {type: integer}
  tier: {type: string, default: gold}
nodes:
  - {id: hot, type: condition, params: {when: "{{ inputs.score > 50 }}"}}
  - {id: call, type: transform, needs: ["hot:then"], params: {value: call now}}
  - {id: nurture, type: transform, needs: ["hot:else"], params: {value: nurture}}
  - {id: by_tier, type: switch, params: {value: "{{ inputs.tier }}", cases: [gold, silver]}}
  - {id: gold, type: transform, needs: ["by_tier:gold"], params: {value: g}}
  - {id: other, type: transform, needs: ["by_tier:default"], params: {value: o}}
""")
    run = run_now(ws, wf, {"score": "80"})
    steps = step_map(ws, run.id)
    assert run.status == "succeeded"
    assert steps["call"].status == "succeeded" and steps["nurture"].status == "skipped"
    assert steps["gold"].status == "succeeded" and steps["other"].status == "skipped"
    run = run_now(ws, wf, {"score": 10, "tier": "bronze"})
    steps = step_map(ws, run.id)
    assert steps["call"].status == "skipped" and steps["nurture"].output == "nurture"
    assert steps["other"].status == "succeeded"


def test_the_workflow_failure_handler_runs_with_the_error(ws):
    wf = make(ws, """
name: handled
nodes:
  - {id: boom, type: transform, params: {value: "{{ inputs.nope }}"}}
on_failure:
  - {id: note, type: transform, params: {value: "handled {{ error.node }}"}}
""")
    run = run_now(ws, wf)
    assert run.status == "failed" and run.failed_node == "boom" and "nope" in run.error
    assert step_map(ws, run.id)["note"].output == "handled boom"


def test_idempotency_keys_make_a_repeated_trigger_a_no_op(ws):
    wf = make(ws, "name: once\nnodes:\n  - {id: a, type: transform, params: {value: 1}}\n")
    first = runs.trigger(ws, wf.id, idempotency_key="order-42")
    again = runs.trigger(ws, wf.id, idempotency_key="order-42")
    assert again.id == first.id
    assert len(runs.list_runs(ws)) == 1


def test_bad_inputs_are_refused_at_trigger_time_and_nothing_is_queued(ws):
    wf = make(ws, "name: typed\ninputs:\n  n: {type: integer}\nnodes:\n  - {id: a, type: transform, params: {value: 1}}\n")
    with pytest.raises(InvalidInput, match="'n' must be of type integer"):
        runs.trigger(ws, wf.id, {"n": "many"})
    with pytest.raises(InvalidInput, match="'n' .* is required"):
        runs.trigger(ws, wf.id, {})
    with pytest.raises(InvalidInput, match="no input 'm'"):
        runs.trigger(ws, wf.id, {"n": 1, "m": 2})
    store.set_active(ws, wf.id, False)
    with pytest.raises(InvalidInput, match="paused"):
        runs.trigger(ws, wf.id, {"n": 1})
    assert runs.list_runs(ws) == []


def test_a_viewer_cannot_run_a_workflow(ws):
    wf = make(ws, "name: v\nnodes:\n  - {id: a, type: transform, params: {value: 1}}\n")
    viewer = member(ws, "vic@example.com", "viewer")
    with pytest.raises(PermissionDenied):
        runs.trigger(viewer, wf.id)


def test_cancelling_a_running_run_stops_it(ws):
    wf = make(ws, "name: long\nnodes:\n  - {id: wait, type: delay, params: {seconds: 60}}\n"
                  "  - {id: after, type: transform, needs: [wait], params: {value: 1}}\n")
    run = runs.trigger(ws, wf.id)
    thread = threading.Thread(target=worker.work_once, args=("canceller",))
    thread.start()
    until(lambda: runs.get_run(ws, run.id).status == "running")
    runs.cancel(ws, run.id)
    thread.join(timeout=20)
    assert not thread.is_alive()
    done = runs.get_run(ws, run.id)
    assert done.status == "cancelled"
    assert step_map(ws, run.id)["wait"].status in ("failed", "cancelled")
    assert "after" not in step_map(ws, run.id) or step_map(ws, run.id)["after"].status != "succeeded"


def test_a_queued_run_is_cancelled_at_once(ws):
    wf = make(ws, "name: q\nnodes:\n  - {id: a, type: transform, params: {value: 1}}\n")
    run = runs.trigger(ws, wf.id)
    assert runs.cancel(ws, run.id).status == "cancelled"
    assert worker.work_once("w") == 0
    with pytest.raises(InvalidInput, match="already cancelled"):
        runs.cancel(ws, run.id)




KILLED_WORKER = """
import sys
from engine import db
db.use_engine(db.make_engine(sys.argv[1]))
from tests import scripted_provider
scripted_provider.install()
from engine.workflows import worker
worker.work_once("doomed", lease_s=6)
"""


def test_a_killed_worker_s_run_resumes_elsewhere_without_paying_twice(ws):
    """A real worker process is killed mid-run; another claims the run after the lease expires,
    keeps the paid LLM step's checkpoint and runs only what had not finished."""
    wf = make(ws, """
name: durable
nodes:
  - {id: ask, type: llm, params: {prompt: "write a haiku"}}
  - id: slow
    type: delay
    needs: [ask]
    params: {seconds: "{{ 60 if run.claims == 1 else 0 }}"}
  - {id: done, type: transform, needs: [slow], params: {value: "{{ ask.text }}!"}}
outputs: {poem: "{{ done }}"}
""")
    run = runs.trigger(ws, wf.id)
    url = db.get_engine().url.render_as_string(hide_password=False)
    child = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, url], cwd=PROJECT_ROOT, env=os.environ.copy())
    try:
        until(lambda: step_map(ws, run.id).get("slow") is not None
               and step_map(ws, run.id)["slow"].status == "running", timeout=60)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert step_map(ws, run.id)["ask"].status == "succeeded"
    assert runs.get_run(ws, run.id).status == "running"  # nobody knows the worker died…
    assert worker.claim("rescuer") is None  # …until its lease expires
    until(lambda: worker.work_once("rescuer") == 1, timeout=20)
    done = runs.get_run(ws, run.id)
    assert done.status == "succeeded", done.error
    assert done.outputs == {"poem": "ok!"}
    with db.read_session() as s:
        assert s.scalar(select(WorkflowRun.claims).where(WorkflowRun.id == run.id)) == 2
        assert len(s.scalars(select(LedgerEntry)).all()) == 1  # the LLM was paid once


def test_an_expired_lease_is_taken_over_and_the_old_worker_writes_nothing_more(ws):
    wf = make(ws, "name: lease\nnodes:\n  - {id: a, type: transform, params: {value: 1}}\n")
    run = runs.trigger(ws, wf.id)
    assert worker.claim("first", lease_s=60) == run.id
    assert worker.claim("second") is None
    with db.transaction() as s:
        s.execute(update(WorkflowRun).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert worker.claim("second") == run.id
    assert worker.execute(run.id, "first") == "lost"
    assert worker.execute(run.id, "second") == "succeeded"


def test_retry_from_the_failed_node_keeps_the_succeeded_steps(ws):
    scripted.SCRIPT[GPT] = [Result(text="draft", usage=Usage(10, 10))]
    wf = make(ws, """
name: retry_me
inputs:
  ok: {type: boolean, default: false}
nodes:
  - {id: ask, type: llm, params: {prompt: draft}}
  - {id: check, type: transform, needs: [ask], params: {value: "{{ inputs.ok or nodes.nope }}"}}
""")
    run = run_now(ws, wf)
    assert run.status == "failed" and run.failed_node == "check"
    assert runs.dead_letters(ws)[0].run_id == run.id
    with db.transaction() as s:  # fix what the step needs (here: the input), then retry the same run
        s.get(WorkflowRun, run.id).inputs = {"ok": True}
    runs.retry(ws, run.id)
    worker.work_once("w")
    again = runs.get_run(ws, run.id)
    assert again.status == "succeeded" and len(scripted.CALLS) == 1
    assert runs.dead_letters(ws) == []


def test_a_dead_letter_replays_as_a_new_run(ws):
    wf = make(ws, "name: dl\nnodes:\n  - {id: a, type: transform, params: {value: '{{ inputs.x }}'}}\n")
    run = run_now(ws, wf)
    [letter] = runs.dead_letters(ws)
    new = runs.replay(ws, letter.id)
    assert new.id != run.id and new.trigger == "replay"
    assert runs.dead_letters(ws) == []
    worker.work_once("w")
    assert len(runs.dead_letters(ws)) == 1  # it failed again, and is listed again


def test_an_approval_pauses_the_run_until_a_member_decides(ws):
    wf = make(ws, """
name: approve
nodes:
  - {id: ok, type: approval, params: {message: "Send it?"}}
  - {id: send, type: transform, needs: [ok], params: {value: "sent by {{ ok.by }}"}}
""")
    run = run_now(ws, wf)
    assert run.status == "waiting"
    [pending] = runs.pending_approvals(ws)
    assert pending.message == "Send it?" and pending.run_id == run.id
    assert worker.work_once("w") == 0  # no worker holds a waiting run
    runs.decide(ws, pending.id, True, "looks good")
    worker.work_once("w")
    done = runs.get_run(ws, run.id)
    assert done.status == "succeeded"
    assert step_map(ws, run.id)["send"].output == "sent by Olivia Owner"


def test_a_rejection_fails_the_approval_step(ws):
    wf = make(ws, "name: rej\nnodes:\n  - {id: ok, type: approval, params: {message: 'go?'}}\n")
    run = run_now(ws, wf)
    runs.decide(ws, runs.pending_approvals(ws)[0].id, False, "no")
    worker.work_once("w")
    done = runs.get_run(ws, run.id)
    assert done.status == "failed" and "Rejected by Olivia Owner: no" in done.error


def test_a_sub_workflow_runs_as_a_child_and_its_cost_counts(ws):
    scripted.SCRIPT[GPT] = [Result(text="inner", usage=Usage(1000, 0))]
    make(ws, "name: child\ninputs:\n  q: {type: string}\nnodes:\n  - {id: ask, type: llm, params: {prompt: '{{ inputs.q }}'}}\n"
             "outputs: {a: '{{ ask.text }}'}\n")
    wf = make(ws, "name: parent\nnodes:\n  - {id: sub, type: sub_workflow, params: {workflow: child, inputs: {q: hi}}}\n"
                  "outputs: {got: '{{ sub.a }}'}\n")
    run = run_now(ws, wf)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"got": "inner"} and run.cost == Decimal("0.00015")


def test_map_runs_a_chain_per_item_with_a_concurrency_limit(ws):
    wf = make(ws, """
name: mapper
inputs:
  words: {type: array, default: [a, b, c, d]}
nodes:
  - id: each
    type: map
    params:
      items: "{{ inputs.words }}"
      concurrency: 2
      steps:
        - {id: up, type: transform, params: {value: "{{ item | upper }}{{ index }}"}}
        - {id: wrap, type: transform, params: {value: "<{{ steps.up }}>"}}
outputs: {all: "{{ each }}"}
""")
    run = run_now(ws, wf)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"all": ["<A0>", "<B1>", "<C2>", "<D3>"]}


def test_large_outputs_go_to_files_and_prune_removes_old_runs(ws, data_dir):
    wf = make(ws, "name: big\nnodes:\n  - {id: a, type: transform, params: {value: \"{{ 'x' * 100000 }}\"}}\n")
    run = run_now(ws, wf)
    with db.read_session() as s:
        step = s.scalar(select(WorkflowStep).where(WorkflowStep.run_id == run.id))
    assert step.output is None and step.output_file and (data_dir / step.output_file).exists()
    assert step_map(ws, run.id)["a"].output == "x" * 100000
    assert runs.prune(30) == 0
    assert runs.prune(30, now=utcnow() + timedelta(days=31)) == 1
    assert not (data_dir / step.output_file).exists()
    assert runs.list_runs(ws) == []


def test_the_run_time_limit_fails_a_run(ws):
    wf = make(ws, "name: capped\ntimeout_s: 0.5\nnodes:\n  - {id: w, type: delay, params: {seconds: 30}, timeout_s: 60}\n")
    started = time.monotonic()
    run = run_now(ws, wf)
    assert run.status == "failed" and "time limit of 0.5 s" in run.error
    assert time.monotonic() - started < 15


def test_dry_run_estimates_ai_steps_and_calls_nothing(ws):
    wf = make(ws, """
name: dry
nodes:
  - {id: ask, type: llm, params: {prompt: "hello there", max_tokens: 100}}
  - {id: post, type: webhook, needs: [ask], params: {url: "http://127.0.0.1:9/hook", text: "{{ ask.text }}"}}
""")
    from engine.workflows import spec as specs

    with db.read_session() as s:
        source = store.get(ws, wf.id).source
    result = executor.dry_run(ws, specs.parse(source), {})
    assert result["status"] == "succeeded"
    assert scripted.CALLS == [] and runs.list_runs(ws) == []
    assert result["estimated_cost"] > 0
    by = {s["node_id"]: s for s in result["steps"]}
    assert by["post"]["output"]["dry_run"] is True
    with db.read_session() as s:
        assert s.scalars(select(LedgerEntry)).all() == []
        assert s.scalars(select(WorkflowDeadLetter)).all() == []


def test_another_workspace_cannot_see_or_touch_runs(ws):
    from engine import accounts
    from engine.errors import NotFound
    from engine.permissions import Actor

    wf = make(ws, "name: mine\nnodes:\n  - {id: ok, type: approval, params: {message: 'go?'}}\n")
    run = run_now(ws, wf)
    user = accounts.create_user("eve@example.com", "Eve", "a long enough passphrase")
    eve = Actor(user.id, accounts.create_workspace(user.id, "Elsewhere").id)
    approval = runs.pending_approvals(ws)[0]
    for attempt in (lambda: runs.get_run(eve, run.id), lambda: runs.cancel(eve, run.id),
                    lambda: runs.trigger(eve, wf.id), lambda: runs.decide(eve, approval.id, True),
                    lambda: store.get(eve, wf.id), lambda: store.delete(eve, wf.id)):
        with pytest.raises(NotFound):
            attempt()
    assert runs.list_runs(eve) == [] and runs.pending_approvals(eve) == [] and store.list_workflows(eve) == []
    assert runs.get_run(ws, run.id).status == "waiting"
