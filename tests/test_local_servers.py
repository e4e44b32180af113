"""Finding a local OpenAI-compatible server (Ollama) and adding it, against a fake on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from engine import connections, generation, local_servers, routes
from engine.config import get_settings
from engine.errors import Conflict, InvalidInput, PermissionDenied
from tests.factories import member, owner
from tests.fakes.openai_server import FakeOpenAI, Reply

OLLAMA_MODELS = [{"id": "llama3.2:latest", "object": "model", "created": 1, "owned_by": "library"},
                 {"id": "nomic-embed-text:latest", "object": "model", "created": 1, "owned_by": "library"},
                 {"id": "qwen2.5:7b", "object": "model", "created": 1, "owned_by": "library"}]


def origin(fake: FakeOpenAI) -> str:
    return fake.base_url.removesuffix("/v1")


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again when the block ends


@pytest.fixture
def ollama(monkeypatch):
    """A keyless fake answering like Ollama, where the settings say Ollama lives."""
    with FakeOpenAI(api_key=None, models=OLLAMA_MODELS) as fake:
        monkeypatch.setenv("METERBOOK_OLLAMA_URL", origin(fake))
        get_settings.cache_clear()
        yield fake
    get_settings.cache_clear()


def test_probe_lists_the_models_a_server_answers_with(ollama):
    server = local_servers.probe(origin(ollama), name="Ollama")
    assert server == local_servers.LocalServer("Ollama", ollama.base_url,
                                               ("llama3.2:latest", "nomic-embed-text:latest", "qwen2.5:7b"))
    assert local_servers.chat_models(server) == ["llama3.2:latest", "qwen2.5:7b"]
    assert ollama.received[-1].method == "GET" and ollama.received[-1].path == "/v1/models"
    # The configured address is used, with or without its /v1.
    assert local_servers.detect_ollama() == server
    assert local_servers.probe(ollama.base_url + "/", name="Ollama") == server


def test_nothing_listening_or_something_else_answering_is_no_server(monkeypatch):
    assert local_servers.probe(closed_port(), name="Ollama") is None
    monkeypatch.setenv("METERBOOK_OLLAMA_URL", closed_port())
    get_settings.cache_clear()
    try:
        assert local_servers.detect_ollama() is None
    finally:
        get_settings.cache_clear()
    with FakeOpenAI() as keyed:  # wants a key: answers 401, which is not an open local server
        assert local_servers.probe(origin(keyed), name="Ollama") is None
    with FakeOpenAI(api_key=None, models=[]) as empty:
        assert local_servers.probe(origin(empty), name="Ollama").models == ()


def test_presets_come_from_the_shipped_file_with_their_price_ids():
    presets = local_servers.presets()
    assert list(presets) == ["openrouter", "groq", "together", "mistral", "deepseek", "ollama", "vllm",
                             "llama-cpp", "lm-studio"]
    assert (presets["groq"].base_url, presets["groq"].key, presets["groq"].price_id) == (
        "https://api.groq.com/openai/v1", "required", "groq")
    # Self-hosted servers are priced under their own id, which the catalog does not know: unpriced.
    assert (presets["ollama"].key, presets["ollama"].catalog, presets["ollama"].price_id) == ("none", None, "ollama")


def test_add_ollama_connects_it_routes_its_chat_models_and_it_generates(database, ollama, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    boss = owner()
    view, routed = local_servers.add_ollama(boss)
    assert (view.name, view.provider_type, view.base_url, view.has_key, view.price_provider) == (
        "local-ollama", "openai-compatible", ollama.base_url, False, "ollama")
    assert routed == ["llama3.2:latest", "qwen2.5:7b"]
    assert routes.choices(boss, "text") == ["local-ollama/llama3.2:latest", "local-ollama/qwen2.5:7b"]
    assert local_servers.known_connection(boss, local_servers.detect_ollama()).id == view.id

    ollama.push(Reply(text="Hi from llama."))
    g = generation.generate(generation.GenerationRequest(prompt="Say hi"), boss)
    assert (g.text, g.target, g.cost) == ("Hi from llama.", "local-ollama/llama3.2:latest", None)
    chat = [r for r in ollama.received if r.path == "/v1/chat/completions"][-1]
    assert chat.header("authorization") is None and chat.body["model"] == "llama3.2:latest"

    with pytest.raises(Conflict, match="already has Ollama as the connection 'local-ollama'"):
        local_servers.add_ollama(boss)
    assert len(connections.list_connections(boss)) == 1


def test_add_ollama_refuses_when_it_stopped_or_for_non_admins(database, monkeypatch):
    boss = owner()
    editor = member(boss, "editor@example.com", "editor")
    with FakeOpenAI(api_key=None, models=OLLAMA_MODELS) as fake:
        monkeypatch.setenv("METERBOOK_OLLAMA_URL", origin(fake))
        get_settings.cache_clear()
        with pytest.raises(PermissionDenied):
            local_servers.add_ollama(editor)
    with pytest.raises(InvalidInput, match="No Ollama answers at"):
        local_servers.add_ollama(boss)  # the fake has stopped
    get_settings.cache_clear()
    assert connections.list_connections(boss) == [] and routes.choices(boss, "text") == []
