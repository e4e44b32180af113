"""The ElevenLabs provider over httpx against a fake ElevenLabs API on 127.0.0.1."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from providers import build
from providers.base import (
    AuthError,
    BadRequest,
    Config,
    ContextTooLong,
    RateLimited,
    Request,
    Timeout,
    Unavailable,
)
from providers.elevenlabs import DEFAULT_VOICE, ElevenLabsProvider
from tests.fakes.elevenlabs_server import API_KEY, FakeElevenLabs, Reply, audio_for, error_reply

MODEL = "eleven_multilingual_v2"
TEXT = "Héllo from Meterbook — the ledger speaks."


@pytest.fixture
def fake():
    with FakeElevenLabs() as server:
        yield server


@pytest.fixture
def eleven(fake):
    provider = ElevenLabsProvider(Config(api_key=API_KEY, base_url=fake.base_url, timeout=5))
    yield provider
    provider.close()


def speak(text: str = TEXT, model: str = MODEL, **params) -> Request:
    return Request(kind="speech", model=model, prompt=text, params=params)


def test_speech_request_and_its_audio_asset(fake, eleven):
    result = eleven.generate(speak())

    sent = fake.received[-1]
    assert sent.method == "POST"
    assert sent.path == f"/v1/text-to-speech/{DEFAULT_VOICE}?output_format=mp3_44100_128"
    assert sent.header("xi-api-key") == API_KEY
    assert sent.body == {"text": TEXT, "model_id": MODEL}
    (asset,) = result.assets
    assert asset.data == audio_for(TEXT, DEFAULT_VOICE, "mp3_44100_128")
    assert asset.mime == "audio/mpeg"
    assert result.usage.characters == len(TEXT)
    assert result.usage.input_tokens == result.usage.output_tokens == 0
    assert result.model == MODEL
    assert result.vendor_request_id and result.vendor_request_id.startswith("fake-request-")


def test_voice_format_and_voice_settings_are_sent(fake, eleven):
    settings = {"stability": 0.4, "similarity_boost": 0.8}
    result = eleven.generate(speak(voice="21m00Tcm4TlvDq8ikWAM", format="pcm_24000",
                                   voice_settings=settings, language_code="de", size="ignored"))
    sent = fake.received[-1]
    assert sent.path == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM?output_format=pcm_24000"
    assert sent.body == {"text": TEXT, "model_id": MODEL, "voice_settings": settings, "language_code": "de"}
    assert result.assets[0].mime == "audio/pcm"
    assert result.assets[0].data == audio_for(TEXT, "21m00Tcm4TlvDq8ikWAM", "pcm_24000")


def test_characters_are_the_characters_not_the_credit_cost(fake, eleven):
    # On flash models ElevenLabs' character-cost header is half the characters: not a character count.
    result = eleven.generate(speak(model="eleven_flash_v2_5"))
    assert result.usage.characters == len(TEXT)


def test_the_vendors_character_count_wins_when_it_sends_one(fake, eleven):
    fake.push(Reply(headers={"x-character-count": "12"}))
    assert eleven.generate(speak()).usage.characters == 12


def test_text_over_the_models_limit_is_context_too_long(fake, eleven):
    with pytest.raises(ContextTooLong) as caught:
        eleven.generate(speak("x" * 5_001, model="eleven_v3"))
    assert "maximum is 5000 characters" in str(caught.value)
    assert caught.value.fallback  # a model with a larger limit may take it


def test_wrong_key_is_an_auth_error_without_the_key():
    with FakeElevenLabs(api_key="sk_the_right_one") as fake:
        provider = ElevenLabsProvider(Config(api_key="sk_wrong_key_4242", base_url=fake.base_url))
        with pytest.raises(AuthError) as caught:
            provider.generate(speak())
    assert caught.value.status == 401 and "Invalid API key" in str(caught.value)
    assert "sk_wrong_key_4242" not in str(caught.value)


def test_unknown_voice_is_a_bad_request(fake, eleven):
    with pytest.raises(BadRequest, match="was not found"):
        eleven.generate(speak(voice="nobody"))


def test_field_errors_are_shown_by_field(fake, eleven):
    fake.push(Reply(status=422, detail=[{"type": "float_type", "loc": ["body", "voice_settings", "stability"],
                                         "msg": "Input should be a valid number"}]))
    with pytest.raises(BadRequest, match=r"voice_settings\.stability: Input should be a valid number"):
        eleven.generate(speak())


def test_rate_limit_with_an_http_date_retry_after(fake, eleven):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    fake.push(error_reply(429, "too_many_concurrent_requests",
                          "Too many concurrent requests for your subscription.", {"retry-after": when}))
    with pytest.raises(RateLimited) as caught:
        eleven.generate(speak())
    assert 20 < caught.value.retry_after <= 30
    assert "Too many concurrent requests" in str(caught.value)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_unavailable(fake, eleven, status):
    fake.push(error_reply(status, "system_busy", "Our services are experiencing high traffic."))
    with pytest.raises(Unavailable) as caught:
        eleven.generate(speak())
    assert caught.value.status == status


def test_a_slow_answer_times_out(fake, eleven):
    fake.push(Reply(delay=2))
    with pytest.raises(Timeout):
        eleven.generate(Request(kind="speech", model=MODEL, prompt=TEXT, timeout=0.2))


def test_only_speech_and_no_text_stream(eleven):
    with pytest.raises(BadRequest):
        eleven.generate(Request(kind="text", model=MODEL, prompt=TEXT))
    with pytest.raises(BadRequest):
        eleven.generate(speak("   "))
    with pytest.raises(BadRequest):
        next(iter(eleven.stream(speak())))


def test_health_models_and_keep_alive(fake, eleven):
    assert eleven.health().ok
    assert fake.received[-1].path == "/v1/models"
    eleven.generate(speak())
    eleven.generate(speak())
    assert fake.connections == 1
    models = {m.id: m for m in eleven.models()}
    assert {"eleven_multilingual_v2", "eleven_flash_v2_5", "eleven_turbo_v2_5"} <= set(models)
    assert all(m.kind == "speech" for m in models.values())


def test_build_and_the_key_never_leaks(fake, caplog):
    config = Config(api_key=API_KEY, base_url=fake.base_url)
    provider = build("elevenlabs", config, name="voices")
    assert isinstance(provider, ElevenLabsProvider) and provider.id == "voices"
    fake.push(error_reply(400, "bad_request", f"Key {API_KEY} may not use this model."))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(BadRequest) as caught:
            provider.generate(speak())
        provider.generate(speak())
    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(provider) and API_KEY not in repr(config)
    assert caplog.records and API_KEY not in caplog.text
