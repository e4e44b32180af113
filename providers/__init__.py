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

# The types whose modules send ``Request.tools`` and read the model's tool calls back; the others
# refuse a request with tools (answering without them would be a silent degrade). The engine reads
# this before a call, so a route offering tools skips them without reaching the vendor.
TOOL_CALLING = frozenset({"openai", "openai-compatible", "anthropic"})
_LABELS = {"gemini": "Gemini", "elevenlabs": "ElevenLabs", "fal": "fal"}


def tools_refusal(provider_type: str) -> str | None:
    """Why a provider type cannot take a request that offers tools, in the user's words; None if it can."""
    if provider_type in TOOL_CALLING:
        return None
    label = _LABELS.get(provider_type, provider_type)
    return f"{label} models here do not call tools; pick an OpenAI or Anthropic model for chat with tools."


def build(provider_type: str, config: Config, *, name: str | None = None) -> Provider:
    """A provider instance; ``name`` is the id it reports (an openai-compatible "groq", say)."""
    try:
        module, cls = TYPES[provider_type].split(":")
    except KeyError:
        raise ValueError(f"Unknown provider type {provider_type!r}; known: {', '.join(TYPES)}.") from None
    return getattr(importlib.import_module(module), cls)(config, name=name)
