"""Connectors end to end against real MCP servers (tests/fakes/mcp_servers.py, written with the SDK's
server API): over stdio as a child process and over streamable HTTP on 127.0.0.1. Listing,
calling, tool errors, timeouts, a server that dies mid-call, no child left behind, credentials
that reach the server but never the database in plaintext, bad input that stores nothing."""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from engine import db
from engine.connectors import client, connections, sessions, toolbox
from engine.connectors.models import McpConnection
from engine.errors import InvalidInput, NotFound, PermissionDenied
from engine.models import AuditEvent, Base
from tests.factories import member, owner
from tests.fakes.mcp_servers import http_server

FAKE = f"{sys.executable} -m tests.fakes.mcp_servers stdio"
ENV_SECRET = "fake-env-secret-4c1d9e7a2b"
HEADER_SECRET = "fake-header-token-77aa31f0"


def fake_children() -> list[int]:
    """Our child processes still running (or unreaped) that are an MCP server of these tests."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and "tests.fakes.mcp_servers stdio" in cmdline:
            found.append(int(entry.name))
    return found


def assert_no_child_left() -> None:
    """Once the kept-open sessions are closed, no server of these tests is left running or unreaped."""
    sessions.close_all()
    assert fake_children() == [], "an MCP server child outlived its session"


@pytest.fixture(autouse=True)
def _no_child_left():
    yield
    assert_no_child_left()


@pytest.fixture
def boss(database):
    return owner()


@pytest.fixture(scope="module")
def remote():
    with http_server(token=HEADER_SECRET) as server:
        yield server


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def stdio_connector(actor, name="Fake tools", **env):
    return connections.create_custom(actor, name=name, command=FAKE, env=env or {"FAKE_SECRET": ENV_SECRET})


def rows() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(McpConnection))


# --- stdio ------------------------------------------------------------------------------------


def test_a_stdio_server_lists_its_tools_and_answers_calls(boss):
    conn = stdio_connector(boss)
    assert conn.transport == "stdio" and conn.slug == "fake-tools" and conn.fields[0].shown == "fak…7a2b"

    result = connections.test(boss, conn.id)
    assert result.ok and result.message == "Connected: 8 tools."
    by_name = {t.name: t for t in result.tools}
    assert by_name["add"].input_schema["properties"]["a"]["type"] == "integer"
    assert by_name["add"].input_schema["required"] == ["a", "b"]

    tools = toolbox.tools_for(boss, [conn.id])
    assert {t.qualified for t in tools} >= {"fake-tools__echo", "fake-tools__add", "fake-tools__weather"}
    assert all(t.connection_id == conn.id for t in tools)

    added = toolbox.call_tool(boss, conn.id, "add", {"a": 2, "b": 40})
    assert added == toolbox.ToolOutcome(True, "42", None, None)
    weather = toolbox.call_tool(boss, conn.id, "weather", {"city": "Oslo"})
    assert weather.ok and weather.data == {"city": "Oslo", "temperature_c": 21.5, "conditions": "sunny"}
    assert '"city": "Oslo"' in weather.text

    view = connections.get(boss, conn.id)
    assert view.last_used_at is not None and view.last_error is None and view.tool_count == 8


def test_a_tool_error_a_timeout_and_a_server_that_dies_are_outcomes_not_exceptions(boss):
    conn = stdio_connector(boss)

    failed = toolbox.call_tool(boss, conn.id, "fail", {"reason": "the sky fell"})
    assert not failed.ok and "the sky fell" in failed.error and failed.error.startswith("The Fake tools tool 'fail' failed")

    slow = toolbox.call_tool(boss, conn.id, "slow", {"seconds": 30}, timeout_s=1)
    assert slow == toolbox.ToolOutcome(False, "", None, "The Fake tools server did not answer within 1 s.")
    assert connections.get(boss, conn.id).last_error == slow.error

    died = toolbox.call_tool(boss, conn.id, "die", {})
    assert not died.ok and died.error == "The Fake tools server stopped in the middle of the call."

    # The next call starts a fresh server and clears the error.
    assert toolbox.call_tool(boss, conn.id, "echo", {"text": "still here"}).text == "still here"
    assert connections.get(boss, conn.id).last_error is None


def test_a_server_that_cannot_start_says_why(boss):
    missing = connections.create_custom(boss, name="Missing", command="/nonexistent/mcp-server --stdio")
    result = connections.test(boss, missing.id)
    assert not result.ok and "'/nonexistent/mcp-server' is not installed" in result.message
    crash = connections.create_custom(boss, name="Crash", command=f"{sys.executable} -c \"import sys; "
                                      "sys.stderr.write('no API key given\\n'); sys.exit(2)\"")
    result = connections.test(boss, crash.id)
    assert result.message == "The Crash server exited before it was ready. It said: no API key given"
    assert connections.get(boss, crash.id).last_error == result.message


def test_env_credentials_reach_the_child_but_never_the_database(boss, database):
    conn = stdio_connector(boss)
    assert toolbox.call_tool(boss, conn.id, "env_digest", {"name": "FAKE_SECRET"}).text == digest(ENV_SECRET)
    # Our own environment is not passed on: only the SDK's safe defaults and the connector's values.
    os.environ["METERBOOK_NOT_FOR_CHILDREN"] = "leak"
    try:
        assert toolbox.call_tool(boss, conn.id, "env_digest", {"name": "METERBOOK_NOT_FOR_CHILDREN"}).text == ""
    finally:
        del os.environ["METERBOOK_NOT_FOR_CHILDREN"]
    assert_not_stored(database, ENV_SECRET, hint="fak…7a2b")


def test_remote_server_gets_its_header_from_the_vault(boss, database, remote):
    conn = connections.create_custom(boss, name="Remote", url=remote.url, headers={"Authorization": f"Bearer {HEADER_SECRET}"})
    result = connections.test(boss, conn.id)
    assert result.ok and len(result.tools) == 8
    assert toolbox.call_tool(boss, conn.id, "auth_digest", {}).text == digest(f"Bearer {HEADER_SECRET}")
    assert toolbox.call_tool(boss, conn.id, "weather", {"city": "Lima"}).data["city"] == "Lima"
    slow = toolbox.call_tool(boss, conn.id, "slow", {"seconds": 30}, timeout_s=1)
    assert slow.error == "The Remote server did not answer within 1 s."
    assert_not_stored(database, HEADER_SECRET, hint="Bea…31f0")


def test_a_catalog_entry_sends_its_header_with_the_scheme(boss, remote):
    conn = connections.connect(boss, "github", {"Authorization": HEADER_SECRET})
    assert conn.url == "https://api.githubcopilot.com/mcp/" and conn.fields[0].shown == "fak…31f0"
    with db.read_session() as s:
        _, spec = connections.server_spec(s, boss.workspace_id, conn.id)
    assert spec.headers == {"Authorization": f"Bearer {HEADER_SECRET}"}
    # The same scheme against the local server: the wrong token is refused in plain words.
    wrong = connections.create_custom(boss, name="Wrong key", url=remote.url, headers={"Authorization": "Bearer nope-nope"})
    outcome = toolbox.call_tool(boss, wrong.id, "echo", {"text": "x"})
    assert outcome.error == "The Wrong key server refused the credential (HTTP 401). Check the key or token, then test again."


def test_an_unreachable_url_is_plain_words(boss):
    conn = connections.create_custom(boss, name="Nobody", url="http://127.0.0.1:9/mcp")
    assert connections.test(boss, conn.id).message == "Cannot reach the Nobody server at 127.0.0.1:9."


def assert_not_stored(database, secret: str, *, hint: str) -> None:
    escaped = hint.encode("ascii", "backslashreplace")  # JSON columns hold \u2026
    hints = [hint.encode(), escaped, escaped.replace(b"\\", b"\\\\")]  # and a row cast to text doubles it
    value = secret.encode()
    forbidden = [value, base64.b64encode(value), base64.urlsafe_b64encode(value), value.hex().encode()]
    if database.dialect.name == "sqlite":
        path = database.url.database
        dumps = [b"".join(open(p, "rb").read() for p in (path, f"{path}-wal", f"{path}-shm") if os.path.exists(p))]
    else:
        with database.connect() as conn:
            dumps = ["\n".join(row[0] for row in conn.execute(text(f"SELECT CAST(t AS text) FROM {t.name} AS t"))).encode()
                     for t in Base.metadata.sorted_tables]
    assert any(h in d for h in hints for d in dumps), "the masked hint is stored, so the row really is in what was searched"
    for f in forbidden:
        assert not any(f in d for d in dumps), "a secret is in the database"


# --- catalog connections, updates, permissions ------------------------------------------------


def test_connecting_a_catalog_entry_needs_its_required_values(boss):
    with pytest.raises(InvalidInput, match="Personal access token is needed"):
        connections.connect(boss, "github", {})
    with pytest.raises(InvalidInput, match="no MCP server; use its preset"):
        connections.connect(boss, "asana", {"Authorization": "x"})
    with pytest.raises(InvalidInput, match="no catalog entry"):
        connections.connect(boss, "no-such-service", {})
    assert rows() == 0
    supa = connections.connect(boss, "supabase", {"SUPABASE_ACCESS_TOKEN": "sbp_0123456789abcdef",
                                                  "SUPABASE_PROJECT_REF": "abcdefghijklmnopqrst"})
    with db.read_session() as s:
        _, spec = connections.server_spec(s, boss.workspace_id, supa.id)
    assert spec.args[-1] == "--project-ref=abcdefghijklmnopqrst"
    assert spec.env == {"SUPABASE_ACCESS_TOKEN": "sbp_0123456789abcdef", "SUPABASE_PROJECT_REF": "abcdefghijklmnopqrst"}
    assert "sbp_0123456789abcdef" not in supa.where
    shown = {f.target: f.shown for f in supa.fields}
    assert shown == {"SUPABASE_ACCESS_TOKEN": "sbp…cdef", "SUPABASE_PROJECT_REF": "abcdefghijklmnopqrst"}

    # A blank secret keeps the stored one; a new one replaces it.
    connections.update_values(boss, supa.id, {"SUPABASE_ACCESS_TOKEN": "", "SUPABASE_PROJECT_REF": "zyxwvutsrqponmlkjihg"})
    with db.read_session() as s:
        _, spec = connections.server_spec(s, boss.workspace_id, supa.id)
    assert spec.env["SUPABASE_ACCESS_TOKEN"] == "sbp_0123456789abcdef" and spec.args[-1].endswith("zyxwvutsrqponmlkjihg")


def test_bad_input_stores_nothing(boss):
    cases = [
        (dict(name="x", command="   "), "a command to run"),
        (dict(name="x", command="''"), "The command is empty"),
        (dict(name="x", url="ftp://example.com/mcp"), "must start with http:// or https://"),
        (dict(name="x", url="https:///nohost"), "must start with http:// or https://"),
        (dict(name="x", url="https://user:pw@example.com/mcp"), "not in the URL"),
        (dict(name="x", command="npx a", url="https://example.com"), "one of the two"),
        (dict(name="", command="npx a"), "1 to 100 characters"),
        (dict(name="x", command="npx a", env={"lower": "v"}), "not an environment variable name"),
        (dict(name="x", command="npx a", env={"LD_PRELOAD": "/tmp/x.so"}), "cannot be set"),
        (dict(name="x", command="npx a", env={"TOKEN": "two\nlines"}), "one line"),
        (dict(name="x", command="npx a", headers={"Authorization": "x"}), "not headers"),
        (dict(name="x", url="https://example.com/mcp", headers={"Bad Header": "x"}), "not a header name"),
        (dict(name="x", url="https://example.com/mcp", env={"A": "b"}), "not environment variables"),
        # A credential in the URL or the command line would be stored in the clear and shown to members.
        (dict(name="x", url="https://example.com/mcp?region=eu&api_key=abc123"), r"credential \(api_key=…\)"),
        (dict(name="x", command="npx -y some-server --api-key abc123"), r"credential \(--api-key\)"),
        (dict(name="x", command="npx -y some-server --token=abc123"), r"credential \(--token\)"),
        (dict(name="x", command="npx -y some-server sk-live0123456789abcdef"), "a value shaped like a key"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInput, match=message):
            connections.create_custom(boss, **kwargs)
    assert rows() == 0
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action.like("connector.%"))) == 0


def test_roles_disabled_connections_and_deletion(boss):
    conn = stdio_connector(boss)
    editor = member(boss, "ed@example.com", "editor")
    viewer = member(boss, "vi@example.com", "viewer")
    with pytest.raises(PermissionDenied, match="manage connectors|connect, change or delete connectors"):
        stdio_connector(editor, name="Mine")
    with pytest.raises(PermissionDenied):
        connections.test(editor, conn.id)
    assert [c.id for c in connections.list_connections(viewer)] == [conn.id]
    with pytest.raises(PermissionDenied):
        toolbox.call_tool(viewer, conn.id, "echo", {"text": "x"})
    assert toolbox.call_tool(editor, conn.id, "echo", {"text": "hi"}).text == "hi"
    with pytest.raises(InvalidInput, match="JSON object"):
        toolbox.call_tool(editor, conn.id, "echo", ["not", "a", "dict"])

    connections.set_enabled(boss, conn.id, False)
    assert toolbox.tools_for(editor, [conn.id]) == []
    with pytest.raises(InvalidInput, match="disabled"):
        toolbox.call_tool(editor, conn.id, "echo", {"text": "x"})

    from engine import accounts
    from engine.permissions import Actor

    other = Actor(boss.user_id, accounts.create_workspace(boss.user_id, "Other Co").id)
    with pytest.raises(NotFound):
        toolbox.call_tool(other, conn.id, "echo", {"text": "x"})
    with pytest.raises(NotFound):
        connections.resolve(other.workspace_id, conn.id)

    assert connections.delete(boss, conn.id) == "Fake tools"
    assert rows() == 0
    with pytest.raises(NotFound):
        toolbox.call_tool(boss, conn.id, "echo", {"text": "x"})


def test_names_resolve_and_slugs_stay_unique(boss):
    a = connections.create_custom(boss, name="Fake tools", command=FAKE)
    b = connections.create_custom(boss, name="Fake tools", command=FAKE)
    assert (a.slug, b.slug) == ("fake-tools", "fake-tools-2")
    assert connections.resolve(boss.workspace_id, "fake-tools-2") == b.id
    assert connections.resolve(boss.workspace_id, str(a.id)) == a.id
    with pytest.raises(NotFound, match="no connector 'Fake tools'"):
        connections.resolve(boss.workspace_id, "Fake tools")  # two share the name: refuse to guess
    assert toolbox.qualify("x" * 24, "t" * 80) == ("x" * 24 + "__" + "t" * 80)[:64]
    assert toolbox.qualify("gh", "repo.list/all") == "gh__repo_list_all"


def test_the_client_bridge_works_from_many_threads(boss):
    """Streamlit script threads and worker threads call in at once; each gets its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    conn = stdio_connector(boss)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: toolbox.call_tool(boss, conn.id, "add", {"a": i, "b": 1}).text, range(4)))
    assert answers == ["1", "2", "3", "4"]


def test_flatten_names_blocks_that_are_not_text():
    import mcp_types

    blocks = [mcp_types.TextContent(type="text", text="hello"),
              mcp_types.ImageContent(type="image", data="aGk=", mime_type="image/png")]
    assert client.flatten(blocks) == "hello\n[image image/png]"
