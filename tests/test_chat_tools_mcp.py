"""Chat with tools end to end: the fake OpenAI server asks for a tool, the real toolbox calls it on a real
MCP server (the SDK's server over stdio, a child process), and the answer comes back priced."""

from __future__ import annotations

import sys

from sqlalchemy import func, select

from engine import accounts, chat_tools, connections, conversations, db, routes
from engine.connectors import connections as mcp_connections
from engine.models import LedgerEntry
from engine.permissions import Actor
from tests.fakes import openai_server
from tests.fakes.openai_server import FakeOpenAI, tool_call_reply

FAKE = f"{sys.executable} -m tests.fakes.mcp_servers stdio"


def test_a_chat_turn_calls_a_tool_on_a_connected_mcp_server(database):
    with FakeOpenAI() as fake:
        user, ws = accounts.create_first_owner("owner@example.com", "Olivia Owner", "correct horse battery", "Acme")
        actor = Actor(user.id, ws.id)
        c = connections.create_connection(actor, name="openai", provider_type="openai", api_key=openai_server.API_KEY,
                                          base_url=fake.base_url)
        routes.add_target(actor, "text", connection_id=c.id, model="gpt-4o-mini")
        server = mcp_connections.create_custom(actor, name="Fake tools", command=FAKE,
                                               env={"FAKE_SECRET": "not-used-here-7a2b"})
        assert chat_tools.choices(actor) == {server.id: "Fake tools"}  # what the Chat page offers
        chat = conversations.create_conversation(actor, target="openai/gpt-4o-mini")
        chat_tools.set_tools(actor, chat.id, [server.id])
        fake.push(tool_call_reply(("call_1", "fake-tools__add", {"a": 2, "b": 40})),
                  openai_server.Reply(text="2 + 40 is 42."))

        turn = chat_tools.send(actor, chat.id, "What is 2 + 40? Use the tool.")

        assert (turn.status, turn.text) == ("ok", "2 + 40 is 42.")
        tool_message = [m for m in fake.received[-1].body["messages"] if m["role"] == "tool"]
        assert tool_message and tool_message[0]["content"] == "42"  # the server's own answer reached the model
        with db.read_session() as s:
            assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 2  # one priced row per model turn
