"""The Workflows and Runs pages through AppTest: create with inline validation, install a template,
run with inputs and watch the run, dry run, versions, pause, clone, delete with confirmation,
cancel, retry, approvals and dead letters."""

from __future__ import annotations


import pytest

from engine.config import get_settings
from engine.workflows import runs, store, worker
from providers.base import Result, Usage
from tests import scripted_provider as scripted
from tests.factories import member, owner, scripted_routes
from tests.pages_helpers import errors, no_exceptions, open_page

PAGE = "pages/workflows.py"
RUNS = "pages/runs.py"
GPT = "gpt-4o-mini"

SPEC = """\
name: Summarise
inputs:
  topic: {type: string, default: tea}
nodes:
  - id: ask
    type: llm
    params: {prompt: "Three facts about {{ inputs.topic }}", max_tokens: 100}
outputs:
  text: "{{ ask.text }}"
"""


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    actor = owner()
    scripted_routes(actor, ("primary", "openai", GPT))
    yield actor
    get_settings.cache_clear()


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_empty_list_then_create_with_inline_validation(boss):
    at = open_page(PAGE)
    assert at.title[0].value == "Workflows"
    assert any("No workflows yet" in i.value for i in at.info)
    at.button(key="wf_new").click().run()
    no_exceptions(at)
    assert at.title[0].value == "New workflow"
    at.text_area(key="wf_source_new").input(SPEC.replace("type: llm", "type: lmm")).run()
    assert any("unknown node type 'lmm'" in e and "line 6" in e for e in errors(at))
    assert store.list_workflows(boss) == []
    at.text_area(key="wf_source_new").input(SPEC).run()
    assert not errors(at) and any("Valid: 1 node(s)" in s.value for s in at.success)
    at.button(key="wf_save").click().run()
    no_exceptions(at)
    [wf] = store.list_workflows(boss)
    assert at.query_params["workflow"] == str(wf.id) and at.title[0].value == "Summarise"


def test_run_with_inputs_then_watch_it_finish_with_its_cost(boss):
    scripted.SCRIPT[GPT] = [Result(text="Tea is a leaf.", usage=Usage(input_tokens=1000, output_tokens=1000))]
    wf = store.create(boss, SPEC)
    at = open_page(PAGE, query={"workflow": str(wf.id)})
    at.text_input(key="wf_input_topic").input("green tea")
    at.button(key="FormSubmitter:wf_run_form-Run with inputs").click().run()
    no_exceptions(at)
    [run] = runs.list_runs(boss)
    assert run.status == "queued" and run.inputs == {"topic": "green tea"}
    assert any(f"Run #{run.id} is queued" in s.value for s in at.success)
    worker.work_once("page-test")
    at = open_page(RUNS, query={"run": str(run.id)})
    assert at.title[0].value == f"Run #{run.id}"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "succeeded" and metrics["Cost"] == "$0.0008"  # 1000×0.15/M + 1000×0.60/M
    assert "Tea is a leaf." in str(at.json[0].value)


def test_dry_run_estimates_without_calling(boss):
    wf = store.create(boss, SPEC)
    at = open_page(PAGE, query={"workflow": str(wf.id)})
    at.button(key="FormSubmitter:wf_run_form-Dry run").click().run()
    no_exceptions(at)
    assert "Dry run: succeeded" in markdown(at) and "AI steps at most $" in markdown(at)
    assert scripted.CALLS == [] and runs.list_runs(boss) == []


def test_install_a_template_pause_clone_and_delete_with_confirmation(boss):
    at = open_page(PAGE)
    at.button(key="wf_tpl_web_page_summary").click().run()
    no_exceptions(at)
    [wf] = store.list_workflows(boss)
    assert wf.name == "Web page summary" and at.title[0].value == "Web page summary"
    at.query_params.pop("workflow")
    at.run()
    at.toggle(key=f"wf_active_{wf.id}").set_value(False).run()
    assert not store.get(boss, wf.id).active
    at.button(key=f"wf_clone_{wf.id}").click().run()
    assert sorted(w.name for w in store.list_workflows(boss)) == ["Web page summary", "Web page summary (copy)"]
    at.button(key=f"wf_delete_{wf.id}").click().run()
    assert len(store.list_workflows(boss)) == 2  # nothing deleted before the confirmation
    at.button(key="wf_delete_confirm").click().run()
    no_exceptions(at)
    assert [w.name for w in store.list_workflows(boss)] == ["Web page summary (copy)"]


def test_versions_compare_and_restore(boss):
    wf = store.create(boss, SPEC)
    store.save(boss, wf.id, SPEC.replace("default: tea", "default: coffee"))
    at = open_page(PAGE, query={"workflow": str(wf.id)})
    assert "+  topic: {type: string, default: coffee}" in at.code[0].value
    at.button(key="wf_restore").click().run()
    no_exceptions(at)
    assert store.get(boss, wf.id).version == 3 and "default: tea" in store.get(boss, wf.id).source


def test_a_viewer_sees_workflows_but_cannot_change_or_run_them(boss):
    wf = store.create(boss, SPEC)
    member(boss, "vera@example.com", "viewer")
    at = open_page(PAGE, "vera@example.com")
    assert "Summarise" in markdown(at)
    assert not [b for b in at.button if b.key in ("wf_new", f"wf_delete_{wf.id}", f"wf_clone_{wf.id}")]


def test_runs_page_filters_cancels_retries_and_replays(boss):
    wf = store.create(boss, "name: Fails\nnodes:\n  - {id: a, type: transform, params: {value: '{{ inputs.x }}'}}\n")
    failed = runs.trigger(boss, wf.id)
    worker.work_once("w")
    other = store.create(boss, "name: Waits\nnodes:\n  - {id: ok, type: approval, params: {message: 'Ship it?'}}\n")
    waiting = runs.trigger(boss, other.id)
    worker.work_once("w")
    at = open_page(RUNS)
    assert at.title[0].value == "Runs"
    assert "Ship it?" in markdown(at)
    table = at.dataframe[0].value
    assert list(table["run"]) == [waiting.id, failed.id]
    at.selectbox(key="runs_f_status").set_value("failed").run()
    assert list(at.dataframe[0].value["run"]) == [failed.id]
    assert "Fails" in markdown(at)  # the dead letter
    at.button(key=f"run_approve_{runs.pending_approvals(boss)[0].id}").click().run()
    no_exceptions(at)
    assert runs.get_run(boss, waiting.id).status == "queued"
    [letter] = runs.dead_letters(boss)
    at.button(key=f"run_dl_replay_{letter.id}").click().run()
    no_exceptions(at)
    assert [r.trigger for r in runs.list_runs(boss)][0] == "replay"
    at = open_page(RUNS, query={"run": str(failed.id)})
    assert any("inputs" in e or "x" in e for e in errors(at))
    at.button(key="run_retry").click().run()
    no_exceptions(at)
    assert runs.get_run(boss, failed.id).status == "queued"
    at.button(key="run_cancel").click().run()
    no_exceptions(at)
    assert runs.get_run(boss, failed.id).status == "cancelled"


def test_an_unknown_run_says_so(boss):
    at = open_page(RUNS, query={"run": "999"})
    assert any("does not exist" in e for e in errors(at))


def test_a_running_run_is_shown_live_and_can_be_cancelled(boss):
    wf = store.create(boss, "name: Slow\nnodes:\n  - {id: w, type: delay, params: {seconds: 60}}\n")
    run = runs.trigger(boss, wf.id)
    assert worker.claim("elsewhere") == run.id  # a worker in another process holds it
    at = open_page(RUNS, query={"run": str(run.id)})
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "running" and metrics["Cost"] == "$0.0000"
    at.button(key="run_cancel").click().run()
    no_exceptions(at)
    assert runs.get_run(boss, run.id).cancel_requested
    assert any("Cancelling" in w.value for w in at.warning)


def test_the_runs_page_without_runs_says_what_to_do(boss):
    at = open_page(RUNS)
    assert any("No runs match these filters" in i.value for i in at.info)
    assert any("No failed runs are waiting" in c.value for c in at.caption)


def test_an_admin_adds_a_credential_and_sees_only_its_last_four(boss):
    at = open_page(PAGE)
    inputs = {t.label: t for t in at.text_input}
    inputs["Name"].input("crm")
    inputs["Secret value"].input("sk-live-abcdefghijkl-4321")
    at.button(key="FormSubmitter:wf_new_credential-Add credential").click().run()
    no_exceptions(at)
    assert "`crm` · Authorization: Bearer sk-…4321" in markdown(at)
    assert "abcdefghijkl" not in markdown(at)
