"""Meterbook's own MCP server, driven by the ``mcp`` SDK's client over stdio and streamable HTTP.

``python -m engine mcp`` runs as a child process against this test's database (SQLite file or
PostgreSQL schema) and data directory; its workflow's AI step calls the fake OpenAI server on
127.0.0.1, so the run's cost is a real ledger row priced by the catalog.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from sqlalchemy import func, select

from engine import accounts, api_keys, budgets, connections, db, routes
from engine.config import PROJECT_ROOT
from engine.dbtypes import utcnow
from engine.models import LedgerEntry
from engine.permissions import Actor
from engine.workflows import store
from engine.workflows.models import WorkflowRun
from tests.factories import member
from tests.fakes.openai_server import API_KEY, FakeOpenAI

WORKFLOW = """
name: summarise
inputs:
  topic: {type: string}
nodes:
  - {id: write, type: llm, params: {prompt: "Two lines on {{ inputs.topic }}", max_tokens: 50}}
outputs: {text: "{{ write.text }}"}
"""
TOOLS = {"list_workflows", "run_workflow", "get_run", "spend_summary", "check_budget"}


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def ws(database, data_dir, fake):
    user, workspace = accounts.create_first_owner("owner@example.com", "Olivia Owner", "correct horse battery", "Acme")
    actor = Actor(user.id, workspace.id)
    c = connections.create_connection(actor, name="openai", provider_type="openai", api_key=API_KEY,
                                      base_url=fake.base_url)
    routes.add_target(actor, "text", connection_id=c.id, model="gpt-4o-mini")
    store.create(actor, WORKFLOW)
    budgets.create_budget(actor, name="Monthly", scope="workspace", period="monthly", limit_usd="25")
    keys = {
        "all": api_keys.create_api_key(actor, "agent", ["workflows:read", "workflows:run", "usage:read",
                                                        "budgets:read"])[1],
        "read": api_keys.create_api_key(actor, "reader", ["workflows:read"])[1],
    }
    revoked, keys["revoked"] = api_keys.create_api_key(actor, "old", ["workflows:read", "workflows:run"])
    api_keys.revoke_api_key(actor, revoked.id)
    keys["expiring"] = api_keys.create_api_key(actor, "soon", ["usage:read"], utcnow() + timedelta(days=1))[1]
    return actor, keys, database, data_dir


def _env(database, data_dir) -> dict[str, str]:
    return {"METERBOOK_DATABASE_URL": database.url.render_as_string(hide_password=False),
            "METERBOOK_DATA_DIR": str(data_dir), "METERBOOK_SECRET_KEY_FILE": os.environ["METERBOOK_SECRET_KEY_FILE"],
            "PYTHONPATH": str(PROJECT_ROOT)}


def _stdio(database, data_dir, key: str | None) -> Client:
    env = _env(database, data_dir) | ({"METERBOOK_API_KEY": key} if key else {})
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "engine", "mcp"], env=env,
                                        cwd=str(PROJECT_ROOT)), read_timeout_seconds=60)


def _ledger() -> tuple[int, Decimal]:
    with db.read_session() as s:
        return s.scalar(select(func.count(LedgerEntry.id))), s.scalar(select(func.sum(LedgerEntry.cost)))


def _runs() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count(WorkflowRun.id)))


async def _exercise(client: Client) -> dict:
    """The agent's journey: list, run and wait, read the run, ask what it cost and what is left."""
    listed = await client.list_tools()
    assert {t.name for t in listed.tools} == TOOLS
    workflows = (await client.call_tool("list_workflows", {})).structured_content["workflows"]
    assert [w["name"] for w in workflows] == ["summarise"]
    assert workflows[0]["inputs"]["topic"]["type"] == "string"
    ran = await client.call_tool("run_workflow", {"workflow": "summarise", "inputs": {"topic": "otters"},
                                                  "wait_seconds": 30})
    assert not ran.is_error, ran.content
    run = ran.structured_content
    fetched = (await client.call_tool("get_run", {"run_id": run["run_id"]})).structured_content
    spend = (await client.call_tool("spend_summary", {"period": "month", "by": "model"})).structured_content
    budget = (await client.call_tool("check_budget", {"budget": "Monthly"})).structured_content
    bad = await client.call_tool("spend_summary", {"period": "month", "by": "colour"})
    return {"run": run, "fetched": fetched, "spend": spend, "budget": budget, "bad": bad}


def _check_journey(seen: dict, runs_before: int) -> None:
    count, total = _ledger()
    run, spend, budget = seen["run"], seen["spend"], seen["budget"]
    assert run["status"] == "succeeded" and run["trigger"] == "mcp"
    assert run["outputs"] == {"text": "Hello from the fake OpenAI server."}
    assert _runs() == runs_before + 1
    assert Decimal(run["cost_usd"]) == Decimal(seen["fetched"]["cost_usd"]) > 0
    assert seen["fetched"]["steps"][0]["node"] == "write"
    # The spend summary is the ledger's sum, exactly (every run so far is this month's).
    assert Decimal(spend["spend_usd"]) == total and spend["calls"] == count
    assert spend["breakdown"] == [{"provider": "openai", "model": "gpt-4o-mini", "spend_usd": spend["spend_usd"],
                                   "calls": count, "tokens": 19 * count, "unpriced_calls": 0}]
    assert Decimal(budget["spent_usd"]) == total
    assert Decimal(budget["remaining_usd"]) == Decimal(25) - total - Decimal(budget["held_usd"])
    assert budget["limit_usd"].startswith("25")
    assert seen["bad"].is_error and "colour" in seen["bad"].content[0].text


async def _refused(client: Client, tool: str, arguments: dict) -> MCPError:
    with pytest.raises(MCPError) as refused:
        await client.call_tool(tool, arguments)
    return refused.value


def test_stdio_serves_the_tools_as_the_keys_workspace(ws):
    actor, keys, database, data_dir = ws

    async def main():
        async with _stdio(database, data_dir, keys["all"]) as client:
            return await _exercise(client)

    _check_journey(anyio.run(main), 0)


def test_stdio_refuses_without_a_valid_key_or_scope(ws):
    actor, keys, database, data_dir = ws

    async def main():
        errors = {}
        async with _stdio(database, data_dir, None) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS  # listing needs no key
            errors["none"] = await _refused(client, "list_workflows", {})
        async with _stdio(database, data_dir, keys["read"]) as client:
            assert (await client.call_tool("list_workflows", {})).structured_content["workflows"]
            errors["scope"] = await _refused(client, "run_workflow", {"workflow": "summarise",
                                                                      "inputs": {"topic": "x"}})
            errors["budget"] = await _refused(client, "check_budget", {})
        async with _stdio(database, data_dir, keys["revoked"]) as client:
            errors["revoked"] = await _refused(client, "run_workflow", {"workflow": "summarise",
                                                                        "inputs": {"topic": "x"}})
        return errors

    errors = anyio.run(main)
    assert "No Meterbook API key was presented: set METERBOOK_API_KEY" in errors["none"].message
    assert "does not have the “workflows:run” scope" in errors["scope"].message
    assert "“budgets:read”" in errors["budget"].message
    assert "not valid (unknown, revoked or expired)" in errors["revoked"].message
    assert all(e.data == {"reason": "unauthorised"} for e in errors.values())
    assert _runs() == 0 and _ledger()[0] == 0  # nothing was done


def test_a_key_acts_with_its_creators_current_role(ws):
    actor, keys, database, data_dir = ws
    admin = member(actor, "ad@example.com", "admin")
    _, key = api_keys.create_api_key(admin, "admin's agent", ["workflows:read", "workflows:run"])
    accounts.change_role(actor, admin.user_id, "viewer")  # the key's scopes stay; its creator may no longer run

    async def main():
        async with _stdio(database, data_dir, key) as client:
            listed = (await client.call_tool("list_workflows", {})).structured_content["workflows"]
            refused = await _refused(client, "run_workflow", {"workflow": "summarise", "inputs": {"topic": "x"}})
            return listed, refused

    listed, refused = anyio.run(main)
    assert [w["name"] for w in listed] == ["summarise"]  # a viewer may still read
    assert refused.data == {"reason": "forbidden"} and "Refused:" in refused.message
    assert _runs() == 0 and _ledger()[0] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _http_server(database, data_dir, *extra: str):
    port = _free_port()
    log = open(data_dir / "mcp-http.log", "w+b")  # a file, not a pipe: nobody reads a pipe while the test runs
    proc = subprocess.Popen([sys.executable, "-m", "engine", "mcp", "--http", "--port", str(port), *extra],
                            env={**os.environ, **_env(database, data_dir)}, cwd=PROJECT_ROOT,
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise AssertionError(f"the MCP server did not start: {log.read().decode()[-2000:]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _http(url: str, key: str | None, **extra_headers: str) -> Client:
    headers = ({"Authorization": f"Bearer {key}"} if key else {}) | extra_headers or None
    return Client(streamable_http_client(url, http_client=create_mcp_http_client(headers=headers)),
                  read_timeout_seconds=60)


def test_streamable_http_serves_and_refuses_by_the_bearer_key(ws):
    actor, keys, database, data_dir = ws
    with _http_server(database, data_dir) as url:
        async def main():
            async with _http(url, keys["all"]) as client:
                seen = await _exercise(client)
            errors = {}
            async with _http(url, None) as client:
                errors["none"] = await _refused(client, "spend_summary", {})
            async with _http(url, "mb_deadbeef_not-a-key") as client:
                errors["wrong"] = await _refused(client, "spend_summary", {})
            async with _http(url, keys["read"]) as client:
                errors["scope"] = await _refused(client, "run_workflow", {"workflow": "summarise",
                                                                          "inputs": {"topic": "x"}})
            async with _http(url, keys["expiring"]) as client:
                today = (await client.call_tool("spend_summary", {"period": "today"})).structured_content
            return seen, errors, today

        runs_before = _runs()
        seen, errors, today = anyio.run(main)
    _check_journey(seen, runs_before)
    assert "send it as 'Authorization: Bearer <key>'" in errors["none"].message
    assert "not valid" in errors["wrong"].message
    assert "“workflows:run”" in errors["scope"].message
    assert _runs() == runs_before + 1  # the refused run never started
    assert Decimal(today["spend_usd"]) == _ledger()[1]


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}}


def test_http_answers_the_host_names_allowed_and_refuses_others(ws):
    """A client behind a proxy names the proxy's host, not the address the server listens on."""
    actor, keys, database, data_dir = ws
    with _http_server(database, data_dir, "--allowed-host", "mcp.example.com") as url:
        async def main():
            async with _http(url, keys["all"], Host="mcp.example.com") as client:
                listed = await client.list_tools()
                spend = await client.call_tool("spend_summary", {"period": "today"})
            return listed, spend

        listed, spend = anyio.run(main)
        probe = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        with httpx.Client(timeout=30) as http:
            proxied = http.post(url, json=INITIALIZE, headers=probe | {"Host": "mcp.example.com:443",
                                                                       "Origin": "https://mcp.example.com"})
            local = http.post(url, json=INITIALIZE, headers=probe)  # 127.0.0.1:port, as before
            rebound = http.post(url, json=INITIALIZE, headers=probe | {"Host": "attacker.example"})
    assert {t.name for t in listed.tools} == TOOLS and not spend.is_error
    assert proxied.status_code == 200 and local.status_code == 200
    assert rebound.status_code == 421  # the SDK's DNS-rebinding protection still names only these hosts


def test_a_non_loopback_http_bind_needs_allowed_host_and_warns_that_keys_travel_in_clear(monkeypatch, capsys):
    from engine import cli, migrate
    from engine.mcp_server import server

    served, migrated = [], []
    monkeypatch.setattr(server, "serve", lambda **kwargs: served.append(kwargs))
    monkeypatch.setattr(migrate, "upgrade", lambda: migrated.append(True))

    assert cli.main(["mcp", "--http", "--host", "0.0.0.0"]) == 1
    refused = capsys.readouterr().err
    assert "--allowed-host" in refused and served == [] and migrated == []  # refused before touching anything

    assert cli.main(["mcp", "--http", "--host", "0.0.0.0", "--allowed-host", "mcp.example.com",
                     "--allowed-host", "10.0.0.5:8766"]) == 0
    warned = capsys.readouterr().err
    assert "in clear" in warned and "TLS" in warned
    assert served == [{"http": True, "host": "0.0.0.0", "port": 8766,
                       "allowed_hosts": ("mcp.example.com", "10.0.0.5:8766")}]
    security = server.transport_security("0.0.0.0", 8766, ("mcp.example.com", "10.0.0.5:8766"))
    assert {"mcp.example.com", "mcp.example.com:*", "10.0.0.5:8766"} <= set(security.allowed_hosts)
    assert "10.0.0.5:*" not in security.allowed_hosts  # a name given with its port allows only that port
    assert {"https://mcp.example.com", "https://mcp.example.com:*"} <= set(security.allowed_origins)

    served.clear()
    assert cli.main(["mcp", "--http"]) == 0  # loopback needs neither and is not warned about
    assert "in clear" not in capsys.readouterr().err
    assert served[0]["host"] == "127.0.0.1" and served[0]["allowed_hosts"] == ()
    assert set(server.transport_security("127.0.0.1", 8766, ()).allowed_hosts) == {
        "127.0.0.1", "127.0.0.1:8766", "localhost", "localhost:8766"}

    for bad in ("https://mcp.example.com", "mcp.example.com/mcp", ""):
        assert cli.main(["mcp", "--http", "--host", "0.0.0.0", "--allowed-host", bad]) == 1
        assert "--allowed-host" in capsys.readouterr().err
