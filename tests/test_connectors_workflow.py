"""The workflow mcp node in real runs (engine.workflows.worker.work_once) against the stdio fake, and the
catalog file: the shipped one loads, and a bad entry is a clear error at load."""

from __future__ import annotations

import sys

import pytest

from engine.connectors import catalog, connections
from engine.errors import InvalidInput
from engine.workflows import runs, store, worker
from tests.factories import owner
from tests.test_connectors import FAKE, assert_no_child_left


@pytest.fixture
def boss(database, data_dir):
    actor = owner()
    connections.create_custom(actor, name="Fake tools", command=FAKE)
    yield actor
    assert_no_child_left()


def run(actor, source: str, inputs=None):
    wf = store.create(actor, source)
    view = runs.trigger(actor, wf.id, inputs)
    worker.work_once("mcp-tests")
    return runs.get_run(actor, view.id), {s.node_id: s for s in runs.steps(actor, view.id)}


def test_the_node_calls_a_tool_with_templated_arguments(boss):
    done, steps = run(boss, """
name: sums
inputs: {n: {type: integer}}
nodes:
  - {id: add, type: mcp, params: {connection: fake-tools, tool: add, arguments: {a: "{{ inputs.n }}", b: 2}}}
  - {id: forecast, type: mcp, needs: add, params: {connection: Fake tools, tool: weather, arguments: {city: "Oslo {{ add }}"}}}
outputs: {sum: "{{ add }}", temp: "{{ forecast.temperature_c }}", city: "{{ forecast.city }}"}
""", {"n": 40})
    assert done.status == "succeeded", done.error
    assert done.outputs == {"sum": "42", "temp": 21.5, "city": "Oslo 42"}
    assert steps["add"].attempt == 1


NOT_RETRIED = " Not retried: the call had gone out, so the tool may have acted; check before running it again."


def test_a_tool_error_or_a_death_mid_call_is_not_retried_but_a_server_that_would_not_start_is(boss):
    done, steps = run(boss, """
name: fails
nodes:
  - {id: f, type: mcp, retry: {max_attempts: 3, backoff_s: 0}, params: {connection: fake-tools, tool: fail, arguments: {reason: nope}}}
""")
    assert done.status == "failed" and steps["f"].attempt == 1
    assert "The Fake tools tool 'fail' failed" in steps["f"].error and "nope" in steps["f"].error

    done, steps = run(boss, """
name: dies
nodes:
  - {id: d, type: mcp, retry: {max_attempts: 2, backoff_s: 0}, params: {connection: fake-tools, tool: die}}
""")
    assert done.status == "failed" and steps["d"].attempt == 1  # the tool may have acted before it died
    assert steps["d"].error == "The Fake tools server stopped in the middle of the call." + NOT_RETRIED

    connections.create_custom(boss, name="Crash", command=f"{sys.executable} -c \"import sys; sys.exit(2)\"")
    done, steps = run(boss, """
name: never starts
nodes:
  - {id: c, type: mcp, retry: {max_attempts: 2, backoff_s: 0}, params: {connection: crash, tool: echo}}
""")
    assert done.status == "failed" and steps["c"].attempt == 2  # nothing was sent: trying again is safe
    assert steps["c"].error == "The Crash server exited before it was ready."


def test_a_timeout_follows_on_error_continue(boss):
    done, steps = run(boss, """
name: slow
nodes:
  - {id: s, type: mcp, on_error: continue, params: {connection: fake-tools, tool: slow, arguments: {seconds: 30}, timeout_s: 1}}
  - {id: after, type: transform, needs: s, params: {value: "went on"}}
outputs: {after: "{{ after }}"}
""")
    assert done.status == "succeeded" and done.outputs == {"after": "went on"}
    assert steps["s"].error == "The Fake tools server did not answer within 1 s." + NOT_RETRIED


def test_the_call_fits_in_the_step_timeout_so_the_executor_never_abandons_it(boss):
    done, steps = run(boss, """
name: tight
nodes:
  - {id: s, type: mcp, timeout_s: 30, params: {connection: fake-tools, tool: slow, arguments: {seconds: 60}, timeout_s: 600}}
""")
    # 30 s for the step: 10 kept for closing a stuck server, the rest split between start and call.
    assert steps["s"].error == "The Fake tools server did not answer within 10 s." + NOT_RETRIED


def test_an_unknown_connector_fails_without_retry_and_a_dry_run_calls_nothing(boss):
    done, steps = run(boss, """
name: nowhere
nodes:
  - {id: x, type: mcp, retry: {max_attempts: 3, backoff_s: 0}, params: {connection: nope, tool: echo}}
""")
    assert done.status == "failed" and steps["x"].attempt == 1 and "no connector 'nope'" in steps["x"].error

    from engine.workflows import executor
    from engine.workflows import spec as specs

    preview = executor.dry_run(boss, specs.parse("""
name: dry
nodes:
  - {id: x, type: mcp, params: {connection: fake-tools, tool: echo, arguments: {text: hi}}}
"""), {})
    assert "'dry_run': True" in repr(preview) and "'tool': 'echo'" in repr(preview)
    view = connections.list_connections(boss)[0]
    assert view.last_used_at is None  # nothing was called


# --- the catalog --------------------------------------------------------------------------------


def test_the_shipped_catalog_loads_with_every_category():
    c = catalog.load()
    assert len(c.connectors) >= 40
    assert {e.category for e in c.connectors} == set(c.categories) == {
        "project management", "communication", "content", "development", "payment", "analytics",
        "automation", "AI models", "media"}
    mcp = [e for e in c.connectors if e.is_mcp]
    assert len(mcp) >= 30 and all(e.docs.startswith("https://") for e in c.connectors)
    assert c.get("github").mcp.url == "https://api.githubcopilot.com/mcp/"
    assert c.get("notion").mcp.args == ["-y", "@notionhq/notion-mcp-server"]
    assert c.get("asana").http_preset.base_url == "https://app.asana.com/api/1.0"
    assert [e.key for e in c.search("issues", "project management")][:1] == ["linear"]


GOOD = """
categories: [development]
connectors:
  - key: ok
    name: OK
    category: development
    description: fine
    docs: https://example.com
    mcp: {transport: stdio, command: npx, args: ["-y", "pkg"]}
"""


@pytest.mark.parametrize("change, message", [
    (("command: npx, ", ""), "bad entry (entry 'ok': mcp): Value error, a stdio server has a command"),
    (("category: development\n    desc", "category: design\n    desc"), "category 'design' is not one of"),
    (("docs: https://example.com", "docs: http://example.com"), "docs must be an https:// link"),
    (('args: ["-y", "pkg"]', 'args: ["${DIR}"]'), "${DIR}, which is not a setting"),
    (("transport: stdio, command: npx, args: [\"-y\", \"pkg\"]", "transport: http, url: not-a-url"), "is not an http(s) URL"),
    (("key: ok", "key: Not OK"), "key 'Not OK' must be"),
    (("    mcp:", "    http_preset: {base_url: https://x.example, header: X-Key, credential: key}\n    mcp:"), "exactly one of mcp or http_preset"),
    (("connectors:", "connectors: [\n"), "not valid YAML"),
])
def test_a_bad_catalog_entry_is_a_clear_error(change, message):
    catalog.parse(GOOD)
    with pytest.raises(InvalidInput) as err:
        catalog.parse(GOOD.replace(*change))
    assert message in str(err.value)


def test_a_duplicate_key_and_a_credential_without_target_are_refused():
    twice = GOOD + GOOD.split("connectors:")[1]
    with pytest.raises(InvalidInput, match="keys used twice: ok"):
        catalog.parse(twice)
    with pytest.raises(InvalidInput, match="give exactly one of env or header"):
        catalog.parse(GOOD.replace('args: ["-y", "pkg"]', 'args: [], credentials: [{label: Key}]'))
