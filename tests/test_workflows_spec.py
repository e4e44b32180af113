"""Specs: YAML or JSON, errors that name the line and field, refused at save with nothing stored;
versions compared and restored; the CLI's run command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.config import PROJECT_ROOT
from engine.errors import Conflict
from engine.workflows import spec as specs, store
from engine.workflows.spec import SpecError
from tests.factories import owner

GOOD = """\
name: digest
description: a daily digest
inputs:
  days: {type: integer, default: 7}
nodes:
  - id: pick
    type: transform
    params: {value: "{{ inputs.days }} days"}
outputs:
  text: "{{ pick }}"
"""


@pytest.mark.parametrize("source, line, message", [
    ("name: x\nnodes:\n  - id: a\n    type: teleport\n", 4, "unknown node type 'teleport'"),
    ("name: x\nnodes:\n  - id: a\n    type: transform\n    needs: [ghost]\n    params: {value: 1}\n", 5,
     "'ghost' names no other node"),
    ("name: x\nnodes:\n  - {id: a, type: transform, needs: [b], params: {value: 1}}\n"
     "  - {id: b, type: transform, needs: [a], params: {value: 1}}\n", 2, "cycle: a → b → a"),
    ("name: x\nnodes:\n  - id: a\n    type: transform\n    params:\n      value: \"{{ inputs.x \"\n", 6,
     "template error"),
    ("name: x\nnodes:\n  - id: a\n    type: transform\n    params:\n      value: \"{{ nobody }}\"\n", 6,
     "uses nobody"),
    ("name: x\nnodes:\n  - id: a\n    type: http\n    params: {url: 'http://h', colour: red}\n", 5,
     "no param 'colour'"),
    ("name: x\nnodes:\n  - id: a\n    type: http\n", 3, "needs the param 'url'"),
    ("name: x\ninputs:\n  n: {type: integer, default: many}\nnodes:\n  - {id: a, type: transform, params: {value: 1}}\n",
     3, "not of type integer"),
    ("name: x\nnodes:\n  - {id: a, type: condition, params: {when: 'yes'}}\n"
     "  - {id: b, type: transform, needs: ['a:maybe'], params: {value: 1}}\n", 4, "has no branch 'maybe'"),
    ("name: x\nnodes:\n  - id: a\n    type: transform\n    retry: {max_attempts: 0}\n    params: {value: 1}\n", 5,
     "greater than or equal to 1"),
    ("name: x\nnodes: [\n", 3, "not valid YAML"),
    ("name: x\nnodes:\n  - {id: a, type: transform, params: {jsonpath: '$[', data: 1}}\n", 3, "JSONPath"),
])
def test_bad_specs_name_the_line_and_what_is_wrong(source, line, message):
    with pytest.raises(SpecError) as info:
        specs.parse(source)
    assert message in str(info.value)
    assert any(p[0] == line for p in info.value.problems), info.value.problems


def test_json_is_accepted_too():
    spec = specs.parse(json.dumps({"name": "j", "nodes": [{"id": "a", "type": "transform", "params": {"value": 1}}]}))
    assert spec.nodes[0].id == "a"


def test_a_bad_save_stores_nothing_and_versions_compare_and_restore(sqlite_database):
    actor = owner()
    wf = store.create(actor, GOOD)
    with pytest.raises(SpecError):
        store.save(actor, wf.id, GOOD.replace("transform", "nonsense"))
    assert [v.version for v in store.versions(actor, wf.id)] == [1]
    v2 = store.save(actor, wf.id, GOOD.replace("default: 7", "default: 30"))
    assert v2.version == 2
    diff = store.compare(actor, wf.id, 1, 2)
    assert "-  days: {type: integer, default: 7}" in diff and "+  days: {type: integer, default: 30}" in diff
    restored = store.restore(actor, wf.id, 1)
    assert restored.version == 3 and restored.source == GOOD
    with pytest.raises(Conflict):
        store.create(actor, GOOD)
    copy = store.clone(actor, wf.id)
    assert copy.name == "digest (copy)" and specs.parse(copy.source).nodes[0].id == "pick"
    assert [w.name for w in store.list_workflows(actor, "copy")] == ["digest (copy)"]
    store.delete(actor, copy.id)
    assert [w.name for w in store.list_workflows(actor)] == ["digest"]


def test_the_cli_runs_a_workflow_and_prints_its_outputs(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"METERBOOK_DATABASE_URL": url, "PATH": "/usr/bin:/bin", "METERBOOK_ARGON2_PROFILE": "test",
           "METERBOOK_DATA_DIR": str(tmp_path)}
    setup = ("from engine import migrate; migrate.upgrade(); from tests.factories import owner; "
             "from engine.workflows import store; import sys; store.create(owner(), sys.stdin.read())")
    subprocess.run([sys.executable, "-c", setup], input=GOOD, text=True, cwd=PROJECT_ROOT, env=env, check=True, timeout=120)
    out = subprocess.run([sys.executable, "-m", "engine", "run", "digest", "--input", "days=3"], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["outputs"] == {"text": "3 days"}
    bad = subprocess.run([sys.executable, "-m", "engine", "run", "digest", "--input", "days=lots"], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "integer" in bad.stderr
    assert "Traceback" not in bad.stderr
