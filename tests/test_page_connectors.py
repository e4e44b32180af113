"""The Connectors page through AppTest: the catalog filtered by search and category, HTTP presets shown as
presets, connecting a catalog entry (the secret stored masked), a custom stdio connector tested against
the fake MCP server with its tools and schemas, a refused bad URL, disable, delete with confirmation,
and a viewer who may only look."""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy import func, select

from engine import db
from engine.config import get_settings
from engine.connectors import connections
from engine.connectors.models import McpConnection
from tests import pages_helpers
from tests.factories import member, owner
from tests.pages_helpers import errors, no_exceptions
from tests.test_connectors import FAKE, assert_no_child_left

PAGE = "pages/connectors.py"
open_page = partial(pages_helpers.open_page, PAGE)


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield owner()
    get_settings.cache_clear()
    assert_no_child_left()


def words(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
                     + [s.value for s in at.success] + [w.value for w in at.warning] + [e.value for e in at.error])


def count() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(McpConnection))


def test_the_catalog_filters_and_shows_presets_as_presets(boss):
    at = open_page()
    assert "Nothing is connected yet" in words(at)
    at.text_input(key="cat_q").input("github").run()
    text = words(at)
    assert "**GitHub** · development · MCP server" in text and "https://api.githubcopilot.com/mcp/" in text
    assert "**Notion**" not in text
    at.text_input(key="cat_q").input("").run()
    at.selectbox(key="cat_cat").select("payment").run()
    text = words(at)
    assert "**Stripe** · payment · MCP server" in text
    assert "**Square** · payment · HTTP preset" in text and "workflow **http** node" in text
    assert "**GitHub**" not in text
    # A preset has no Connect form: only MCP servers can be connected.
    labels = [e.label for e in at.expander]
    assert "Connect Stripe" in labels and "Connect Square" not in labels


def test_connecting_a_catalog_entry_stores_the_key_masked(boss):
    at = open_page()
    at.text_input(key="cat_q").input("linear").run()
    at.text_input(key="new_linear_Authorization").input("lin_api_0123456789abcdef")
    [b for b in at.button if b.label == "Connect"][0].click().run()
    no_exceptions(at)
    assert count() == 1
    text = words(at)
    assert "Connected Linear." in text and "Authorization lin…cdef" in text
    assert "lin_api_0123456789abcdef" not in text


def test_a_custom_stdio_connector_is_tested_disabled_and_deleted(boss):
    at = open_page()
    at.text_input(key="custom_name").input("Fake tools")
    at.text_input(key="custom_command").input(FAKE)
    at.text_area(key="custom_env").input("FAKE_SECRET=abcdefgh12345678")
    [b for b in at.button if b.label == "Add connector"][0].click().run()
    no_exceptions(at)
    assert "Added Fake tools." in words(at) and count() == 1
    conn = connections.list_connections(boss)[0]

    at.button(key=f"test_{conn.id}").click().run()
    no_exceptions(at)
    text = words(at)
    assert "Connected: 8 tools." in text
    labels = [e.label for e in at.expander]
    assert any(label.startswith("`weather`") for label in labels)
    assert any('"city"' in j.value or "city" in str(j.value) for j in at.json)

    at.toggle(key=f"en_{conn.id}").set_value(False).run()
    assert connections.get(boss, conn.id).enabled is False and ":gray[disabled]" in words(at)

    at.button(key=f"del_{conn.id}").click().run()
    assert "Delete Fake tools" in words(at) and count() == 1
    at.button(key=f"del_yes_{conn.id}").click().run()
    no_exceptions(at)
    assert count() == 0 and "Deleted Fake tools." in words(at)


def test_a_bad_url_is_refused_and_nothing_is_stored(boss):
    at = open_page()
    at.radio(key="custom_kind").set_value("Remote URL").run()
    at.text_input(key="custom_name").input("Broken")
    at.text_input(key="custom_url").input("mcp.example.com")
    [b for b in at.button if b.label == "Add connector"][0].click().run()
    no_exceptions(at)
    assert any("must start with http:// or https://" in e for e in errors(at))
    assert count() == 0


def test_a_failed_test_shows_the_error_and_keeps_it(boss):
    conn = connections.create_custom(boss, name="Missing", command="/nonexistent/server")
    at = open_page()
    at.button(key=f"test_{conn.id}").click().run()
    no_exceptions(at)
    assert "'/nonexistent/server' is not installed" in words(at)
    assert "Last error" in words(at)


def test_a_viewer_sees_connections_but_cannot_change_them(boss):
    connections.create_custom(boss, name="Fake tools", command=FAKE)
    member(boss, "viewer@example.com", "viewer")
    at = open_page("viewer@example.com")
    assert "**Fake tools**" in words(at)
    assert not [b for b in at.button if b.label in ("Test", "Delete", "Connect", "Add connector")]
    assert "Admins and owners add connectors." in words(at)


def test_a_viewer_reads_the_tools_the_last_test_listed(boss):
    conn = connections.create_custom(boss, name="Fake tools", command=FAKE)
    assert connections.test(boss, conn.id).ok
    member(boss, "viewer@example.com", "viewer")
    at = open_page("viewer@example.com")
    assert "8 tools, as listed" in words(at) and "Test again" not in words(at)
    assert any(e.label.startswith("`weather`") for e in at.expander)


def test_with_catalog_only_stdio_the_page_offers_what_this_instance_runs(boss, monkeypatch):
    monkeypatch.setenv("METERBOOK_MCP_STDIO", "catalog")
    get_settings.cache_clear()
    at = open_page()
    at.text_input(key="cat_q").input("filesystem").run()
    assert "Not available here." in words(at) and "Connect Filesystem" not in [e.label for e in at.expander]
    at.text_input(key="cat_q").input("time").run()
    assert "Connect Time" in [e.label for e in at.expander]
    assert at.radio(key="custom_kind").options == ["Remote URL"]
    assert "a custom connector is a remote URL" in words(at)
