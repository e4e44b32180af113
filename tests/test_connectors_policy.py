"""What a workspace may run on the host (METERBOOK_MCP_STDIO, engine/connectors/policy.py), connections
that became unusable (deleted, refused, unreadable credentials) in a conversation's tool list, and a
connection's secrets scrubbed from what its tools answer."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from engine import db, vault
from engine.connectors import connections, policy, toolbox
from engine.connectors.models import McpConnection
from engine.billing.limits import PlanLimitReached
from engine.errors import PermissionDenied
from tests.factories import owner
from tests.test_connectors import ENV_SECRET, FAKE, assert_no_child_left


@pytest.fixture
def boss(sqlite_database):
    yield owner()
    assert_no_child_left()


@pytest.fixture
def stdio_mode(settings_env):
    def set_mode(value: str | None, *, billing: bool = False):
        settings_env(MCP_STDIO=value, STRIPE_SECRET_KEY="sk_test_x" if billing else None)

    return set_mode


def rows() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(McpConnection))


def test_the_default_follows_billing(stdio_mode):
    stdio_mode(None)
    assert policy.mode() == "any"  # self-hosted: the admins are the operator's own team
    stdio_mode(None, billing=True)
    assert policy.mode() == "catalog"  # hosted: admins are customers, and a command line is the host
    stdio_mode("off", billing=False)
    assert policy.mode() == "off"


def test_catalog_mode_runs_the_catalogs_commands_only(boss, stdio_mode):
    stdio_mode("catalog")
    with pytest.raises(PermissionDenied, match="not custom commands"):
        connections.create_custom(boss, name="Mine", command=FAKE)
    with pytest.raises(PermissionDenied, match="reaches this host's files"):
        connections.connect(boss, "filesystem", {"ALLOWED_DIRECTORY": "/"})
    assert rows() == 0
    assert connections.connect(boss, "time").transport == "stdio"  # a catalog command without host access
    assert connections.create_custom(boss, name="Remote", url="https://mcp.example.com/mcp").transport == "http"


def test_off_runs_no_stdio_server_but_remote_ones_still_connect(boss, stdio_mode):
    stdio_mode("off")
    with pytest.raises(PermissionDenied, match="METERBOOK_MCP_STDIO=off"):
        connections.connect(boss, "time")
    assert connections.connect(boss, "linear", {"Authorization": "lin_api_0123456789"}).transport == "http"


def test_tightening_the_setting_stops_connections_made_before(boss, stdio_mode):
    stdio_mode("any")
    conn = connections.create_custom(boss, name="Fake tools", command=FAKE)
    assert toolbox.call_tool(boss, conn.id, "echo", {"text": "before"}).text == "before"
    stdio_mode("catalog")
    with pytest.raises(PermissionDenied, match="not custom commands"):
        toolbox.call_tool(boss, conn.id, "echo", {"text": "after"})
    with pytest.raises(PermissionDenied, match="not custom commands"):
        connections.test(boss, conn.id)
    assert toolbox.tools_for(boss, [conn.id]) == []  # a chat goes on without them


def test_a_deleted_or_unreadable_connection_is_left_out_of_a_chats_tools(boss):
    kept = connections.create_custom(boss, name="Kept", command=FAKE)
    gone = connections.create_custom(boss, name="Gone", command=FAKE)
    broken = connections.create_custom(boss, name="Broken", command=FAKE, env={"FAKE_SECRET": ENV_SECRET})
    connections.delete(boss, gone.id)
    with db.transaction() as s:
        s.execute(update(McpConnection).where(McpConnection.id == broken.id).values(secret_nonce=b"\0" * 12))

    tools = toolbox.tools_for(boss, [kept.id, gone.id, broken.id])
    assert {t.connection_id for t in tools} == {kept.id} and tools
    with pytest.raises(vault.SecretUnreadable, match="Change credentials on the Connectors page"):
        connections.test(boss, broken.id)


def test_a_tool_that_echoes_the_connections_secret_is_scrubbed(boss):
    conn = connections.create_custom(boss, name="Fake tools", command=FAKE, env={"FAKE_SECRET": ENV_SECRET})
    echoed = toolbox.call_tool(boss, conn.id, "echo", {"text": f"your key is {ENV_SECRET}"})
    assert echoed.ok and ENV_SECRET not in echoed.text and echoed.text == "your key is [REDACTED]"
    failed = toolbox.call_tool(boss, conn.id, "fail", {"reason": f"invalid key {ENV_SECRET}"})
    assert not failed.ok and ENV_SECRET not in failed.error and ENV_SECRET not in failed.text
    assert "invalid key [REDACTED]" in failed.error


def test_a_plan_without_connectors_stops_existing_ones_at_use(boss, stdio_mode):
    conn = connections.create_custom(boss, name="Fake tools", command=FAKE)
    stdio_mode("any", billing=True)  # billing on; the workspace has no subscription, so it is on Free
    with pytest.raises(PlanLimitReached, match="does not include MCP connectors"):
        toolbox.call_tool(boss, conn.id, "echo", {"text": "x"})
    with pytest.raises(PlanLimitReached, match="does not include MCP connectors"):
        toolbox.tools_for(boss, [conn.id])
