"""ElevenLabs text to speech over its REST API: one request's text in, one audio file out.

``POST /v1/text-to-speech/{voice_id}?output_format=…`` answers with the audio bytes. ElevenLabs
bills by the characters of the text, so ``Usage.characters`` is the vendor's
``x-character-count`` header when it sends one, else the length of the text. (Its
``character-cost`` header counts credits, which some models charge at a fraction per character,
so it is not a character count.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from providers._http import VendorError, VendorHTTP, json_body, path_segment
from providers.base import Asset, BadRequest, Chunk, Config, Health, ModelInfo, Request, Result, Usage

DEFAULT_BASE_URL = "https://api.elevenlabs.io/v1"
DEFAULT_VOICE = "JBFqnCBsd6RMkjVDRZzb"  # "George", a premade voice every account has
DEFAULT_FORMAT = "mp3_44100_128"

# For speech the context window is the most characters one request may carry.
MODELS = (
    ModelInfo("eleven_multilingual_v2", "speech", 10_000),
    ModelInfo("eleven_v3", "speech", 5_000),
    ModelInfo("eleven_flash_v2_5", "speech", 40_000),
    ModelInfo("eleven_turbo_v2_5", "speech", 40_000),
    ModelInfo("eleven_flash_v2", "speech", 30_000),
    ModelInfo("eleven_turbo_v2", "speech", 30_000),
)

# output_format prefix → media type, for when the response does not say.
MIME = {"mp3": "audio/mpeg", "pcm": "audio/pcm", "ulaw": "audio/basic", "alaw": "audio/x-alaw-basic",
        "opus": "audio/ogg", "wav": "audio/wav"}
TOO_LONG = {"max_character_limit_exceeded", "text_too_long"}
# Voice knobs passed through to the body as given.
BODY_PARAMS = ("voice_settings", "language_code", "seed", "previous_text", "next_text")


class ElevenLabsProvider:
    """An ElevenLabs API key; speech only."""

    kinds = frozenset({"speech"})

    def __init__(self, config: Config, *, name: str | None = None):
        self.id = name or "elevenlabs"
        self._http = VendorHTTP(provider=self.id, label="ElevenLabs", config=config,
                                default_base_url=DEFAULT_BASE_URL, auth_header="xi-api-key",
                                describe=_describe)

    def __repr__(self) -> str:
        return f"<ElevenLabsProvider id={self.id!r} base_url={self._http.base_url!r}>"

    def close(self) -> None:
        self._http.close()

    def models(self) -> list[ModelInfo]:
        return list(MODELS)

    def health(self) -> Health:
        return self._http.health("models")

    def generate(self, req: Request) -> Result:
        if req.kind != "speech":
            raise BadRequest(f"ElevenLabs here makes speech, not {req.kind}.", provider=self.id)
        text = req.prompt or "\n".join(m.content for m in req.messages if m.role == "user")
        if not text.strip():
            raise BadRequest("There is no text to speak.", provider=self.id)
        voice = str(req.params.get("voice") or DEFAULT_VOICE)
        output_format = str(req.params.get("format") or DEFAULT_FORMAT)
        body: dict[str, Any] = {"text": text, "model_id": req.model}
        body.update({k: req.params[k] for k in BODY_PARAMS if req.params.get(k) is not None})
        response = self._http.request("POST", f"text-to-speech/{path_segment(voice)}",
                                      params={"output_format": output_format}, json=body,
                                      timeout=req.timeout)
        return Result(
            assets=(Asset(data=response.content, mime=_mime(response, output_format)),),
            usage=Usage(characters=_characters(response, text)),
            model=req.model,
            vendor_request_id=response.headers.get("request-id"),
        )

    def stream(self, req: Request) -> Iterator[Chunk | Result]:
        raise BadRequest("Speech is not streamed as text; use generate() for the audio.", provider=self.id)


def _characters(response: httpx.Response, text: str) -> int:
    reported = response.headers.get("x-character-count")
    if reported is not None and reported.strip().isdigit():
        return int(reported)
    return len(text)


def _mime(response: httpx.Response, output_format: str) -> str:
    said = response.headers.get("content-type", "").split(";")[0].strip()
    if said.startswith("audio/"):
        return said
    return MIME.get(output_format.split("_")[0], "application/octet-stream")


def _describe(response: httpx.Response) -> VendorError:
    """ElevenLabs errors: {"detail": {"status", "message"}}, or FastAPI's list of field errors."""
    body = json_body(response)
    detail = body.get("detail") if isinstance(body, dict) else None
    code = ""
    if isinstance(detail, dict):
        code = str(detail.get("status") or detail.get("code") or "")
        message = str(detail.get("message") or code)
    elif isinstance(detail, list):
        message = "; ".join(
            f"{'.'.join(str(p) for p in (d.get('loc') or [])[1:])}: {d.get('msg', '')}"
            for d in detail if isinstance(d, dict))
    elif isinstance(detail, str):
        message = detail
    else:
        message = response.text[:300] or response.reason_phrase
    return VendorError(message=message, too_long=code in TOO_LONG)
