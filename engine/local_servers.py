"""OpenAI-compatible servers a workspace can add: the shipped presets, and a local Ollama found running.

A fresh install has no provider keys. If an Ollama answers at its usual address
(``METERBOOK_OLLAMA_URL``), the Providers and Generate pages offer to add it, with its models
routed for text, so there is something real to generate with. The probe is one short GET of
``/v1/models``; anything else at that address (nothing listening, another program, an error)
reads as "no server".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx
import yaml

from engine import connections, routes
from engine.config import PROJECT_ROOT, get_settings
from engine.connections import ConnectionView
from engine.errors import Conflict, InvalidInput
from engine.permissions import Actor

PRESETS_FILE = PROJECT_ROOT / "data" / "openai_compatible.yaml"
PROBE_TIMEOUT = 1.0  # seconds; a local server answers in milliseconds, and pages wait for this
OLLAMA_CONNECTION = "local-ollama"
# Ollama lists its embedding models alongside chat models; they cannot answer a prompt.
NOT_CHAT = ("embed",)


@dataclass(frozen=True)
class Preset:
    id: str
    name: str
    base_url: str
    key: str  # required | optional | none
    catalog: str | None  # genai-prices provider id; None for self-hosted servers
    docs: str

    @property
    def price_id(self) -> str:
        """What the connection's calls are priced under: the catalog's id, else the preset's own.

        A self-hosted model's name can match a cloud model in the catalog; pricing it under
        the preset's id ("ollama") keeps it unpriced until the workspace sets its own price.
        """
        return self.catalog or self.id


@lru_cache(maxsize=1)
def presets() -> dict[str, Preset]:
    """The presets of data/openai_compatible.yaml, in file order."""
    raw: dict[str, dict[str, Any]] = yaml.safe_load(PRESETS_FILE.read_text())
    return {
        key: Preset(key, p["name"], p["base_url"], p["key"], p.get("catalog"), p.get("docs", ""))
        for key, p in raw.items()
    }


@dataclass(frozen=True)
class LocalServer:
    name: str
    base_url: str  # the OpenAI-style API root, ending in /v1
    models: tuple[str, ...]


def api_root(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def probe(url: str, *, name: str, timeout: float = PROBE_TIMEOUT) -> LocalServer | None:
    """The server at ``url`` if it answers GET /v1/models the OpenAI way, else None."""
    root = api_root(url)
    try:
        # trust_env off: a proxy from the environment must not stand in for a local server.
        with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
            response = client.get(f"{root}/models")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        data = response.json().get("data")
        models = tuple(str(m["id"]) for m in data if isinstance(m, dict) and m.get("id"))
    except (ValueError, AttributeError, TypeError):
        return None
    return LocalServer(name, root, models)


def detect_ollama(timeout: float = PROBE_TIMEOUT) -> LocalServer | None:
    """A local Ollama at the configured address, if one answers."""
    return probe(get_settings().ollama_url, name="Ollama", timeout=timeout)


def chat_models(server: LocalServer) -> list[str]:
    return [m for m in server.models if not any(word in m.lower() for word in NOT_CHAT)]


def known_connection(actor: Actor, server: LocalServer) -> ConnectionView | None:
    """The workspace's connection to this server, if it already has one."""
    return next((c for c in connections.list_connections(actor) if c.base_url == server.base_url), None)


def add_ollama(actor: Actor) -> tuple[ConnectionView, list[str]]:
    """Connect the local Ollama (no key) and route its chat models for text; returns the models routed.

    The server is asked again here rather than trusting what a page saw earlier.
    """
    server = detect_ollama()
    if server is None:
        raise InvalidInput(f"No Ollama answers at {get_settings().ollama_url} any more. Start it "
                           "(`ollama serve`) and try again.")
    if (existing := known_connection(actor, server)) is not None:
        raise Conflict(f"This workspace already has Ollama as the connection {existing.name!r}.")
    preset = presets()["ollama"]
    view = connections.create_connection(actor, name=OLLAMA_CONNECTION, provider_type="openai-compatible",
                                         base_url=server.base_url, price_provider=preset.price_id)
    models = chat_models(server)
    for model in models:
        routes.add_target(actor, "text", connection_id=view.id, model=model)
    return view, models
