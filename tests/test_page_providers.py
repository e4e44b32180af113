"""The Providers page through AppTest: keys (masked), Test connection, presets, routing, deletion, health."""

from __future__ import annotations

import socket
from functools import partial

import pytest

from engine import connections, generation, local_servers, routes
from engine.config import get_settings
from engine.router import NoRoute
from tests import pages_helpers
from tests.factories import member, owner
from tests.fakes.openai_server import API_KEY, FakeOpenAI, Reply
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/providers.py"
open_page = partial(pages_helpers.open_page, PAGE, title="Providers")
WRONG_KEY = "sk-wrong-9876543210zyxwvu"


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    """An owner, with Ollama looked for where nothing listens (a test never sees a real one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("METERBOOK_OLLAMA_URL", closed)
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    generation._cached_provider.cache_clear()
    yield owner()
    get_settings.cache_clear()


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def shown(at) -> str:
    """Every piece of text the page put on screen, to look for things that must never be there."""
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "error", "warning")
             for e in getattr(at, kind)]
    parts += [str(t.value) for t in at.text_input]
    return "\n".join(parts)


def click(at, key):
    at.button(key=key).click().run()
    no_exceptions(at)
    return at


def test_a_fresh_workspace_says_what_to_do(boss):
    at = open_page()
    assert any("No provider is connected yet" in i.value for i in at.info)
    assert any("No model is routed for text yet" in i.value for i in at.info)
    assert any("No calls in the last 24 hours" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "add_ollama"]  # nothing answers where Ollama would be


def test_add_a_compatible_server_from_a_preset_then_test_it_without_ever_showing_the_key(boss, fake):
    at = open_page()
    at.selectbox(key="new_conn_type").select("openai-compatible").run()
    at.selectbox(key="new_conn_preset").select("groq").run()
    # The preset fills the form; everything stays editable.
    assert at.text_input(key="new_conn_name").value == "groq"
    assert at.text_input(key="new_conn_url").value == "https://api.groq.com/openai/v1"
    assert at.text_input(key="new_conn_price").value == "groq"
    assert at.text_input(key="new_conn_key").label == "API key (required)"

    at.text_input(key="new_conn_url").input(fake.base_url)
    at.text_input(key="new_conn_key").input(API_KEY)
    click(at, "new_conn_submit")
    assert not errors(at)
    assert [s.value for s in at.success] == ["Connection groq added. Test it, then route its models under Routing."]
    [view] = connections.list_connections(boss)
    assert (view.name, view.provider_type, view.base_url, view.price_provider, view.key_hint) == (
        "groq", "openai-compatible", fake.base_url, "groq", "sk-…cdef")
    assert at.text_input(key="new_conn_key").value == ""  # the form is emptied
    assert "sk-…cdef" in shown(at) and API_KEY not in shown(at)

    click(at, f"test_{view.id}")
    assert [s.value for s in at.success][-1].startswith("Test passed (")
    assert "models endpoint answered (1 listed)" in at.success[-1].value
    assert fake.received[-1].path == "/v1/models" and fake.received[-1].header("authorization") == f"Bearer {API_KEY}"
    assert connections.get_connection(boss, view.id).last_test_ok is True
    assert any("Connected" in m.value for m in at.markdown)


def test_a_rejected_key_is_explained_without_repeating_it_then_replaced(boss, fake):
    view = connections.create_connection(boss, name="openai", provider_type="openai", api_key=WRONG_KEY,
                                         base_url=fake.base_url)
    at = open_page()
    click(at, f"test_{view.id}")
    [failure] = errors(at)
    assert failure.startswith("Test failed") and "Incorrect API key" in failure
    assert WRONG_KEY not in shown(at)  # the fake echoes the key it was given; the page must not

    click(at, f"edit_{view.id}")
    at.text_input(key=f"edit_key_{view.id}").input(API_KEY)
    at.button(key=f"edit_save_{view.id}").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Connection openai saved. Its key was replaced."]
    assert connections.get_connection(boss, view.id).key_hint == "sk-…cdef"
    assert connections.provider_config(None, boss.workspace_id, view.id)[1].api_key == API_KEY
    click(at, f"test_{view.id}")
    assert at.success[-1].value.startswith("Test passed")
    assert API_KEY not in shown(at) and WRONG_KEY not in shown(at)


def test_bad_input_is_refused_near_the_form_and_nothing_is_stored(boss):
    at = open_page()
    at.text_input(key="new_conn_name").input("Open AI!")
    at.text_input(key="new_conn_key").input("sk-abc")
    click(at, "new_conn_submit")
    assert errors(at) == ["A connection name is 1–64 characters of letters, digits, '.', '_' or '-', starting with a "
                          "letter or digit (for example 'openai' or 'local-ollama')."]
    at.text_input(key="new_conn_name").input("openai")
    at.text_input(key="new_conn_key").input("")
    click(at, "new_conn_submit")
    assert errors(at) == ["A openai connection needs an API key."]
    assert connections.list_connections(boss) == []


def test_routing_add_order_limits_disable_policy_and_remove(boss, fake):
    connections.create_connection(boss, name="local", provider_type="openai-compatible", api_key=API_KEY,
                                  base_url=fake.base_url)
    at = open_page()
    # The model list comes from the server itself.
    assert at.selectbox(key="new_target_model").options == ["gpt-4o-mini"]
    at.selectbox(key="new_target_model").select("gpt-4o-mini")
    at.text_input(key="new_target_rpm").input("60")
    click(at, "new_target_submit")
    assert [s.value for s in at.success] == ["local/gpt-4o-mini added to the text route."]
    at.text_input(key="new_target_typed").input("llama-3.3-70b")
    click(at, "new_target_submit")
    first, second = routes.get_route(boss, "text").targets
    assert (first.model, first.rpm_limit, second.model) == ("gpt-4o-mini", 60, "llama-3.3-70b")
    assert any(m.value.startswith("**1. local/gpt-4o-mini**") and "not called yet" in m.value for m in at.markdown)
    assert at.button(key=f"up_{first.id}").disabled and at.button(key=f"down_{second.id}").disabled

    click(at, f"up_{second.id}")
    assert [t.model for t in routes.get_route(boss, "text").targets] == ["llama-3.3-70b", "gpt-4o-mini"]
    click(at, f"toggle_{first.id}")
    assert routes.choices(boss, "text") == ["local/llama-3.3-70b"]
    at.text_input(key=f"limit_window_{second.id}").input("8192")
    click(at, f"limit_save_{second.id}")
    assert routes.get_route(boss, "text").targets[0].context_window == 8192
    at.text_input(key=f"limit_tpm_{second.id}").input("lots")
    click(at, f"limit_save_{second.id}")
    assert errors(at) == ["Tokens per minute must be a whole number."]

    at.selectbox(key="policy_strategy_text").select("cost")
    at.number_input(key="policy_attempts_text").set_value(3)
    click(at, "policy_save_text")
    route = routes.get_route(boss, "text")
    assert (route.strategy, route.max_attempts, route.retries_per_target) == ("cost", 3, 2)

    click(at, f"remove_{second.id}")
    assert any("Remove **local/llama-3.3-70b** from the text route?" in m.value for m in at.markdown)
    click(at, "confirm_ok")
    assert [t.model for t in routes.get_route(boss, "text").targets] == ["gpt-4o-mini"]

    # Another kind has its own route.
    at.radio(key="route_kind").set_value("image").run()
    assert any("No model is routed for image yet" in i.value for i in at.info)
    assert at.selectbox(key="new_target_model").options == []  # the server lists no image models


def test_a_server_that_cannot_list_its_models_still_takes_a_typed_model(boss):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    connections.create_connection(boss, name="down", provider_type="openai-compatible", base_url=down)
    at = open_page()
    assert any(c.value.startswith(":orange[Could not list the models of 'down'") for c in at.caption)
    assert at.selectbox(key="new_target_model").options == []
    at.text_input(key="new_target_typed").input("mistral:7b")
    click(at, "new_target_submit")
    assert routes.choices(boss, "text") == ["down/mistral:7b"]


def test_deleting_a_connection_in_use_says_so_and_takes_its_targets_with_it(boss, fake):
    used = connections.create_connection(boss, name="openai", provider_type="openai", api_key=API_KEY,
                                         base_url=fake.base_url)
    spare = connections.create_connection(boss, name="spare", provider_type="openai-compatible",
                                          base_url=fake.base_url)
    routes.add_target(boss, "text", connection_id=used.id, model="gpt-4o-mini")
    routes.add_target(boss, "image", connection_id=used.id, model="gpt-image-1")
    at = open_page()

    click(at, f"delete_{used.id}")
    [warning] = [w.value for w in at.warning]
    assert "2 route targets use this connection: text: gpt-4o-mini, image: gpt-image-1" in warning
    assert at.button(key="confirm_ok").label == "Delete and remove from routes"
    click(at, "confirm_cancel")
    assert len(connections.list_connections(boss)) == 2

    click(at, f"delete_{used.id}")
    click(at, "confirm_ok")
    assert [s.value for s in at.success] == [
        "Deleted connection 'openai' and removed it from 2 route target(s). Past usage keeps its ledger rows."]
    assert [c.name for c in connections.list_connections(boss)] == ["spare"]
    assert routes.get_route(boss, "text").targets == [] and routes.get_route(boss, "image").targets == []

    click(at, f"delete_{spare.id}")
    assert not at.warning and at.button(key="confirm_ok").label == "Delete connection"
    click(at, "confirm_ok")
    assert connections.list_connections(boss) == []


def test_health_shows_the_last_day_of_calls_per_target(boss, fake):
    view = connections.create_connection(boss, name="openai", provider_type="openai", api_key=API_KEY,
                                         base_url=fake.base_url)
    routes.add_target(boss, "text", connection_id=view.id, model="gpt-4o-mini")
    fake.push(Reply(text="one"), Reply(status=400, error={"message": "Invalid 'temperature'", "type": "x"}))
    generation.generate(generation.GenerationRequest(prompt="hi"), boss)
    with pytest.raises(NoRoute, match="Invalid 'temperature'"):
        generation.generate(generation.GenerationRequest(prompt="hi"), boss)

    at = open_page()
    row = at.dataframe[0].value.iloc[0]
    assert (row["Target"], row["Calls"], row["Succeeded"], row["Failed"], row["Success rate"]) == (
        "openai/gpt-4o-mini", 2, 1, 1, "50%")
    assert "Invalid 'temperature'" in row["Last error"]
    assert at.selectbox(key="health_pick").options == ["All targets", "openai/gpt-4o-mini"]
    # The route shows the live state with the price.
    [target] = [m.value for m in at.markdown if m.value.startswith("**1. openai/gpt-4o-mini**")]
    assert "healthy, 1 recent failure" in target
    assert any("$0.15 in / $0.6 out per M tokens" in c.value for c in at.caption)


def test_viewers_see_masked_keys_and_no_controls(boss, fake):
    member(boss, "viewer@example.com", "viewer")
    view = connections.create_connection(boss, name="openai", provider_type="openai", api_key=API_KEY,
                                         base_url=fake.base_url)
    routes.add_target(boss, "text", connection_id=view.id, model="gpt-4o-mini")
    at = open_page("viewer@example.com")
    assert "sk-…cdef" in shown(at) and API_KEY not in shown(at)
    keys = {b.key for b in at.button}
    assert not keys & {f"test_{view.id}", f"edit_{view.id}", f"delete_{view.id}", "new_conn_submit",
                       "new_target_submit"}
    assert not any(k.startswith(("up_", "down_", "toggle_", "remove_")) for k in keys if k)
    assert any("Only admins and owners can add or change provider keys" in c.value for c in at.caption)


def test_a_running_ollama_is_offered_and_added_in_one_click(boss, monkeypatch):
    with FakeOpenAI(api_key=None, models=[{"id": "llama3.2:latest", "object": "model", "created": 1,
                                           "owned_by": "library"}]) as ollama:
        monkeypatch.setenv("METERBOOK_OLLAMA_URL", ollama.base_url.removesuffix("/v1"))
        get_settings.cache_clear()
        at = open_page()
        assert any("Ollama is running" in m.value and "llama3.2:latest" in m.value for m in at.markdown)
        click(at, "add_ollama")
        assert at.success[0].value.startswith("Added local-ollama: 1 model routed for text.")
        assert routes.choices(boss, "text") == ["local-ollama/llama3.2:latest"]
        assert not [b for b in at.button if b.key == "add_ollama"]  # offered only while it is not added
        assert local_servers.known_connection(boss, local_servers.detect_ollama()) is not None
