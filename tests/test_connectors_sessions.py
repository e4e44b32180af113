"""Kept-open stdio sessions (engine/connectors/sessions.py) against the real stdio fake server: calls
reuse one process, a changed credential or another connection gets its own, a failure discards the
session, idle ones are probed, reaped and capped, and closing leaves no process behind.

Which process answered is read from /proc (``fake_children``), not from the pool's own bookkeeping.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from engine.connectors import connections, sessions, toolbox
from tests.factories import owner
from tests.test_connectors import FAKE, assert_no_child_left, digest, fake_children
from tests.waiting import until


@pytest.fixture
def boss(sqlite_database):
    yield owner()
    assert_no_child_left()


def connector(actor, name="Fake tools", secret="first-secret-0001"):
    return connections.create_custom(actor, name=name, command=FAKE, env={"FAKE_SECRET": secret})


def echo(actor, conn, text="hi", **kw):
    outcome = toolbox.call_tool(actor, conn.id, "echo", {"text": text}, **kw)
    assert outcome.ok, outcome.error
    return outcome.text


def test_calls_and_listings_of_one_connection_share_one_process(boss):
    conn = connector(boss)
    assert [t.name for t in toolbox.tools_for(boss, [conn.id])][:2] == ["echo", "add"]
    first = fake_children()
    assert len(first) == 1
    for i in range(3):
        assert echo(boss, conn, f"call {i}") == f"call {i}"
    assert fake_children() == first and sessions.open_count() == 1


def test_another_connection_or_a_changed_credential_gets_its_own_process(boss):
    conn, twin = connector(boss), connector(boss, name="Same command")
    echo(boss, conn)
    echo(boss, twin)
    assert len(fake_children()) == 2  # the same command and values, yet not one process for both

    connections.update_values(boss, conn.id, {"FAKE_SECRET": "second-secret-0002"})
    assert toolbox.call_tool(boss, conn.id, "env_digest", {"name": "FAKE_SECRET"}).text == digest("second-secret-0002")
    assert len(fake_children()) == 3  # the old credential's process idles out; it is never used again
    assert sessions.close_all() == 3 and fake_children() == []


def test_a_timeout_or_a_death_discards_the_session_and_the_next_call_starts_afresh(boss):
    conn = connector(boss)
    echo(boss, conn)
    [before] = fake_children()

    slow = toolbox.call_tool(boss, conn.id, "slow", {"seconds": 30}, timeout_s=1)
    assert not slow.ok and slow.error == "The Fake tools server did not answer within 1 s."
    assert before not in fake_children()  # the busy server was shut down, not left sleeping
    echo(boss, conn)
    [after_timeout] = fake_children()
    assert after_timeout != before

    died = toolbox.call_tool(boss, conn.id, "die", {})
    assert died.error == "The Fake tools server stopped in the middle of the call."
    assert sessions.open_count() == 0
    assert echo(boss, conn, "again") == "again" and fake_children() != [after_timeout]


def test_a_tool_error_keeps_the_session(boss):
    conn = connector(boss)
    failed = toolbox.call_tool(boss, conn.id, "fail", {"reason": "no"})
    assert not failed.ok
    [pid] = fake_children()
    echo(boss, conn)
    assert fake_children() == [pid]


def test_a_server_that_exited_while_idle_is_noticed_by_the_probe(boss, monkeypatch):
    conn = connector(boss)
    echo(boss, conn)
    [pid] = fake_children()
    os.kill(pid, signal.SIGKILL)
    monkeypatch.setattr(sessions, "PROBE_AFTER_S", 0.0)
    assert echo(boss, conn, "after the kill") == "after the kill"  # not "stopped in the middle"
    assert pid not in fake_children() and len(fake_children()) == 1


def test_concurrent_callers_get_their_own_processes_and_the_idle_ones_are_capped(boss, monkeypatch):
    conn = connector(boss)
    seen: list[str] = []

    def slow_call():
        outcome = toolbox.call_tool(boss, conn.id, "slow", {"seconds": 1.5})
        seen.append(outcome.text)

    threads = [threading.Thread(target=slow_call) for _ in range(2)]
    for t in threads:
        t.start()
    until(lambda: len(fake_children()) == 2, timeout=30)
    for t in threads:
        t.join(60)
    assert seen == ["slept 1.5 s"] * 2 and sessions.open_count() == 2

    monkeypatch.setattr(sessions, "MAX_IDLE", 1)
    echo(boss, conn)  # checking a session in again trims the idle ones to the cap
    until(lambda: len(fake_children()) == 1, timeout=15)
    assert sessions.open_count() == 1


def test_an_old_or_chatty_server_is_started_afresh(boss, monkeypatch):
    conn = connector(boss)
    monkeypatch.setattr(sessions, "MAX_STDERR_BYTES", 10)
    toolbox.call_tool(boss, conn.id, "fail", {"reason": "the server logs this to stderr"})
    until(lambda: sessions.open_count() == 0 and fake_children() == [], timeout=15)
    monkeypatch.setattr(sessions, "MAX_STDERR_BYTES", 1 << 20)
    monkeypatch.setattr(sessions, "MAX_AGE_S", 0.0)
    echo(boss, conn)
    until(lambda: sessions.open_count() == 0 and fake_children() == [], timeout=15)


def test_idle_sessions_are_reaped(boss, monkeypatch):
    monkeypatch.setattr(sessions, "IDLE_S", 0.3)
    monkeypatch.setattr(sessions, "REAP_EVERY_S", 0.1)
    echo(boss, connector(boss))
    until(lambda: fake_children() == [], timeout=15)
    assert sessions.open_count() == 0


def test_a_server_that_cannot_start_says_why_and_keeps_nothing(boss):
    broken = connections.create_custom(boss, name="Crash", command="/nonexistent/mcp-server --stdio")
    outcome = toolbox.call_tool(boss, broken.id, "echo", {"text": "x"})
    assert not outcome.ok and "'/nonexistent/mcp-server' is not installed" in outcome.error
    assert sessions.open_count() == 0
