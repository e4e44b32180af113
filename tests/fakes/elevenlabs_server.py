"""A fake ElevenLabs API (v1) on 127.0.0.1: text to speech and the models list.

``POST /v1/text-to-speech/{voice_id}?output_format=…`` answers with audio bytes that spell out
what was asked (so a test can tell they belong to its request) and ElevenLabs' response
headers (``request-id``, ``character-cost``; a test adds ``x-character-count`` to a ``Reply``).
It checks ``xi-api-key``, knows two voices, refuses text over a model's character limit the
way ElevenLabs does, and takes queued ``Reply``s for errors, 429s and delays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.wire import Exchange, QueuedFake, Received

API_KEY = "sk_test_0123456789abcdef0123456789abcdef"
VOICES = {"JBFqnCBsd6RMkjVDRZzb": "George", "21m00Tcm4TlvDq8ikWAM": "Rachel"}
CHARACTER_LIMITS = {"eleven_multilingual_v2": 10_000, "eleven_flash_v2_5": 40_000, "eleven_v3": 5_000}
# Credits per character: the flash and turbo models cost half.
CREDIT_RATE = {"eleven_flash_v2_5": 0.5}
CONTENT_TYPES = {"mp3": "audio/mpeg", "pcm": "audio/pcm", "opus": "audio/ogg", "ulaw": "audio/basic"}


@dataclass
class Reply:
    """How the fake answers one request; the defaults are a successful answer."""

    status: int = 200
    detail: Any = None  # the error body's "detail" when status is not 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def error_reply(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    """An error in ElevenLabs' shape: ``{"detail": {"status", "message"}}``."""
    return Reply(status=status, detail={"status": code, "message": message}, headers=headers or {})


def audio_for(text: str, voice: str, output_format: str) -> bytes:
    """The bytes the fake speaks for a request."""
    return b"ID3" + f"|{voice}|{output_format}|{text}".encode()


class FakeElevenLabs(QueuedFake):
    """``with FakeElevenLabs() as fake:`` point a provider at ``fake.base_url``; see ``fake.received``."""

    path = "/v1"

    def __init__(self, api_key: str = API_KEY):
        self.api_key = api_key
        super().__init__(Reply())

    def _route(self, req: Received, ex: Exchange) -> None:
        reply, serial = self.next_reply()
        request_id = f"fake-request-{serial}"
        headers = {"request-id": request_id, **reply.headers}
        if reply.delay:
            ex.wait(reply.delay)
        if req.header("xi-api-key") != self.api_key:
            return ex.json(401, _detail("invalid_api_key", "Invalid API key"), headers)
        if reply.status != 200:
            return ex.json(reply.status, {"detail": reply.detail}, headers)
        path, _, query = req.path.partition("?")
        if req.method == "GET" and path == "/v1/models":
            return ex.json(200, [{"model_id": m, "can_do_text_to_speech": True,
                                  "maximum_text_length_per_request": n} for m, n in CHARACTER_LIMITS.items()],
                           headers)
        match = re.fullmatch(r"/v1/text-to-speech/([^/]+)", path)
        if req.method != "POST" or not match:
            return ex.json(404, {"detail": "Not Found"}, headers)
        self._speak(match.group(1), dict(p.split("=", 1) for p in query.split("&") if "=" in p),
                    req.body or {}, ex, headers)

    def _speak(self, voice: str, query: dict[str, str], body: dict[str, Any], ex: Exchange,
               headers: dict[str, str]) -> None:
        text = body.get("text")
        if not isinstance(text, str):
            return ex.json(422, {"detail": [{"type": "missing", "loc": ["body", "text"], "msg": "Field required",
                                             "input": body}]}, headers)
        if voice not in VOICES:
            return ex.json(404, _detail("voice_not_found", f"A voice with the voice_id {voice} was not found."),
                           headers)
        model = body.get("model_id", "eleven_multilingual_v2")
        limit = CHARACTER_LIMITS.get(model, 10_000)
        if len(text) > limit:
            return ex.json(400, _detail("max_character_limit_exceeded",
                                        f"You are sending {len(text)} characters with a single request, but the "
                                        f"maximum is {limit} characters."), headers)
        output_format = query.get("output_format", "mp3_44100_128")
        headers = {"content-type": CONTENT_TYPES.get(output_format.split("_")[0], "audio/mpeg"),
                   "character-cost": str(int(len(text) * CREDIT_RATE.get(model, 1))), **headers}
        ex.body(200, audio_for(text, voice, output_format), headers)


def _detail(status: str, message: str) -> dict[str, Any]:
    return {"detail": {"status": status, "message": message}}
