"""n8n import on files in n8n's export format: what maps, what is named as not mapping, and files
that are not n8n workflows at all."""

from __future__ import annotations

import json

import pytest

from engine.config import PROJECT_ROOT
from engine.errors import InvalidInput
from engine.workflows import n8n, runs, spec as specs, store, worker
from tests.factories import owner

FLOW = (PROJECT_ROOT / "tests" / "data" / "n8n_lead_flow.json").read_text()


def test_the_mapped_nodes_become_a_valid_spec_and_the_rest_are_named():
    result = n8n.convert(FLOW)
    spec = specs.parse(result.source)
    by_id = {n.id: n for n in spec.nodes}
    assert set(by_id) == {"set_fields", "is_hot", "http_request", "openai", "switch", "code"}
    assert result.unmapped == ["Slack (n8n-nodes-base.slack)", "JS code (n8n-nodes-base.code)"]
    assert [t["type"] for t in result.triggers] == ["webhook", "schedule"]
    assert result.triggers[0]["path"] == "lead"
    assert spec.inputs["body"].type == "object"
    assert by_id["set_fields"].params["value"] == {"email": "{{ inputs.body.body.email }}",
                                                    "score": "{{ inputs.body.body.score }}"}
    assert by_id["is_hot"].type == "condition" and by_id["is_hot"].params["when"] == "{{ ((nodes.set_fields.score) > 50) }}"
    assert by_id["http_request"].needs == ["is_hot:then"] and by_id["openai"].needs == ["is_hot:else"]
    http = by_id["http_request"].params
    assert http["method"] == "POST" and http["url"] == "https://crm.example.com/leads/{{ nodes.set_fields.email }}"
    assert http["headers"] == {"X-Source": "n8n"} and http["body"] == {"stage": "hot"}
    assert by_id["openai"].params["system"] == "You are a friendly sales rep."
    assert "{{ nodes.set_fields.email }}" in by_id["openai"].params["prompt"]
    assert by_id["switch"].params == {"value": "{{ nodes.http_request.body.status }}", "cases": ["201", "409"]}
    assert by_id["code"].needs == ["switch:201"] and by_id["code"].type == "python"
    assert by_id["code"].params["code"].startswith("def main(data):")
    assert any("gpt-4o-mini" in note for note in result.notes)


def test_the_imported_workflow_saves_and_its_logic_runs(sqlite_database, data_dir):
    actor = owner()
    flow = json.loads(FLOW)
    flow["nodes"] = [n for n in flow["nodes"] if n["name"] in ("Webhook", "Set fields", "Is hot?")]
    flow["connections"] = {k: v for k, v in flow["connections"].items() if k in ("Webhook", "Set fields")}
    wf = store.create(actor, n8n.convert(json.dumps(flow)).source)
    run = runs.trigger(actor, wf.id, {"body": {"body": {"email": "a@b.c", "score": 80}}})
    worker.work_once("n8n")
    done = runs.get_run(actor, run.id)
    assert done.status == "succeeded", done.error
    steps = {s.node_id: s for s in runs.steps(actor, run.id)}
    assert steps["is_hot"].output["branch"] == "then"


def test_an_api_export_list_is_accepted():
    assert n8n.convert(json.dumps([json.loads(FLOW)])).unmapped


@pytest.mark.parametrize("text, message", [
    ("not json at all", "not JSON"),
    (json.dumps({"name": "x"}), "needs \"nodes\""),
    (json.dumps({"nodes": [{"name": "a"}], "connections": {}}), "needs \"nodes\""),
    (b"\xff\xfe", "not UTF-8"),
    (json.dumps({"nodes": [{"name": "S", "type": "n8n-nodes-base.slack", "parameters": {}}], "connections": {}}),
     "None of this workflow's nodes can be imported: S (n8n-nodes-base.slack)"),
])
def test_a_file_that_is_not_an_n8n_workflow_is_refused_clearly(text, message):
    with pytest.raises(InvalidInput) as info:
        n8n.convert(text)
    assert message in str(info.value)
