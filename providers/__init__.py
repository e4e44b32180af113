"""Vendor modules behind one protocol (``providers.base``); ``build`` makes one from its type and config.

Modules are imported on first use so that a page which never calls Gemini never imports it.
"""

from __future__ import annotations

import importlib

from providers.base import Config, Provider

# provider type → "module:class"
TYPES = {
    "openai": "providers.openai:OpenAIProvider",
    "openai-compatible": "providers.openai:OpenAICompatibleProvider",
    "anthropic": "providers.anthropic:AnthropicProvider",
    "gemini": "providers.gemini:GeminiProvider",
    "elevenlabs": "providers.elevenlabs:ElevenLabsProvider",
    "fal": "providers.fal:FalProvider",
}


def build(provider_type: str, config: Config, *, name: str | None = None) -> Provider:
    """A provider instance; ``name`` is the id it reports (an openai-compatible "groq", say)."""
    try:
        module, cls = TYPES[provider_type].split(":")
    except KeyError:
        raise ValueError(f"Unknown provider type {provider_type!r}; known: {', '.join(TYPES)}.") from None
    return getattr(importlib.import_module(module), cls)(config, name=name)
