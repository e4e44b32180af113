"""OpenAI and OpenAI-compatible providers, through the real ``openai`` SDK against a local fake.

Every test checks what the fake received as well as what the provider returned, so a wrong
request fails as surely as a wrong parse.
"""

from __future__ import annotations

import socket
import traceback
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import yaml
from genai_prices import data as catalog

from providers import build
from providers.base import (
    AuthError,
    BadRequest,
    Chunk,
    Config,
    ContextTooLong,
    Message,
    Provider,
    RateLimited,
    Request,
    Result,
    Timeout,
    TruncatedStream,
    Unavailable,
    Usage,
)
from providers.openai import OpenAICompatibleProvider, OpenAIProvider
from tests.fakes.openai_server import API_KEY, PNG, FakeOpenAI, Reply, error_reply, serve

TEXT = "Hello from the fake OpenAI server."  # the fake's default answer: 6 content chunks
# The default stream's events: role, 6 content pieces, the finish chunk, the usage chunk, [DONE].
FINISH_EVENT = 7


def chat(**overrides) -> Request:
    fields = dict(kind="text", model="gpt-4o-mini", system="Answer briefly.",
                  messages=(Message("user", "Say hello."),), max_tokens=50, temperature=0.2,
                  request_id="mb-req-1")
    return Request(**(fields | overrides))


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def openai_provider(fake) -> OpenAIProvider:
    return build("openai", Config(api_key=API_KEY, base_url=fake.base_url, timeout=5))


def drain(provider, req: Request) -> list[Chunk | Result]:
    return list(provider.stream(req))


# --- OpenAI text ------------------------------------------------------------------------------


def test_generate_sends_the_request_and_reports_the_vendors_usage(fake, openai_provider):
    fake.push(Reply(model="gpt-4o-mini-2024-07-18", prompt_tokens=1500, completion_tokens=30, cached_tokens=1280))

    result = openai_provider.generate(chat())

    assert result.text == TEXT
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert result.finish_reason == "stop"
    assert result.vendor_request_id == "req_fake_1"
    # prompt_tokens is the whole prompt; the cached part is reported inside it, not on top.
    assert result.usage == Usage(input_tokens=1500, output_tokens=30, cached_input_tokens=1280)
    [sent] = fake.received
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.header("authorization") == f"Bearer {API_KEY}"
    assert sent.header("x-client-request-id") == "mb-req-1"
    assert sent.header("x-stainless-retry-count") == "0"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["messages"] == [{"role": "system", "content": "Answer briefly."},
                                     {"role": "user", "content": "Say hello."}]
    assert sent.body["max_completion_tokens"] == 50 and "max_tokens" not in sent.body
    assert sent.body["temperature"] == 0.2
    assert "stream" not in sent.body


def test_configured_headers_and_organization_are_sent(fake):
    provider = build("openai", Config(api_key=API_KEY, base_url=fake.base_url, headers={"X-Team": "analytics"},
                                      options={"organization": "org-42", "project": "proj_7"}))

    provider.generate(chat())

    sent = fake.received[0]
    assert sent.header("x-team") == "analytics"
    assert (sent.header("openai-organization"), sent.header("openai-project")) == ("org-42", "proj_7")


def test_a_bare_prompt_becomes_the_user_turn(fake, openai_provider):
    openai_provider.generate(Request(kind="text", model="gpt-4o", prompt="Just this."))

    body = fake.received[0].body
    assert body["messages"] == [{"role": "user", "content": "Just this."}]
    assert "max_completion_tokens" not in body and "temperature" not in body


def test_stream_yields_the_text_then_one_result_with_usage_from_the_final_chunk(fake, openai_provider):
    fake.push(Reply(model="gpt-4o-mini-2024-07-18", prompt_tokens=2048, completion_tokens=6, cached_tokens=1024))

    items = drain(openai_provider, chat())

    *chunks, result = items
    assert all(isinstance(c, Chunk) for c in chunks) and len(chunks) == 6
    assert "".join(c.text for c in chunks) == TEXT == result.text
    assert result.usage == Usage(input_tokens=2048, output_tokens=6, cached_input_tokens=1024)
    assert (result.model, result.finish_reason, result.vendor_request_id) == (
        "gpt-4o-mini-2024-07-18", "stop", "req_fake_1")
    body = fake.received[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 50


@pytest.mark.parametrize("cut", ["abort", "clean"])
def test_a_stream_cut_mid_answer_is_a_failure_carrying_the_partial_text(fake, openai_provider, cut):
    fake.push(Reply(cut_after=3, cut=cut))

    stream = openai_provider.stream(chat())
    received = [next(stream), next(stream)]
    with pytest.raises(TruncatedStream) as caught:
        next(stream)

    assert [c.text for c in received] == ["Hello ", "from "]
    err = caught.value
    assert err.retryable and err.fallback and err.provider == "openai"
    assert err.partial.text == "Hello from "
    assert err.partial.finish_reason is None
    assert err.partial.usage == Usage()  # nothing was reported before the cut


def test_openai_stream_that_finishes_but_never_sends_usage_is_truncated(fake, openai_provider):
    fake.push(Reply(cut_after=FINISH_EVENT + 1, cut="clean"))

    with pytest.raises(TruncatedStream, match="no usage") as caught:
        drain(openai_provider, chat())

    assert caught.value.partial.text == TEXT
    assert caught.value.partial.finish_reason == "stop"


def test_an_error_event_inside_the_stream_is_typed_and_keeps_the_partial(fake, openai_provider):
    fake.push(Reply(cut_after=3, cut="error", error={"message": "The server had an error while processing",
                                                     "type": "server_error", "param": None, "code": None}))

    with pytest.raises(Unavailable, match="The server had an error while processing") as caught:
        drain(openai_provider, chat())

    assert caught.value.partial.text == "Hello from "


def test_a_stream_that_goes_quiet_mid_answer_times_out_with_the_partial(fake):
    provider = build("openai", Config(api_key=API_KEY, base_url=fake.base_url, timeout=0.3))
    fake.push(Reply(cut_after=3, cut="stall"))

    with pytest.raises(Timeout) as caught:
        drain(provider, chat())

    assert caught.value.partial.text == "Hello from "


def test_abandoning_a_stream_releases_the_connection(fake, openai_provider):
    stream = openai_provider.stream(chat())
    next(stream)
    stream.close()  # the caller walked away after the first chunk

    assert openai_provider.generate(chat()).text == TEXT
    assert len(fake.received) == 2


# --- OpenAI images ----------------------------------------------------------------------------


def test_gpt_image_returns_png_bytes_and_counts_images_and_tokens(fake, openai_provider):
    fake.push(Reply(prompt_tokens=40, completion_tokens=4160))

    result = openai_provider.generate(Request(kind="image", model="gpt-image-1", prompt="A red bicycle",
                                              params={"n": 2, "size": "1024x1024", "quality": "low"}))

    assert [a.data for a in result.assets] == [PNG, PNG]
    assert {a.mime for a in result.assets} == {"image/png"}
    assert result.usage == Usage(images=2, input_tokens=40, output_tokens=4160)
    assert result.vendor_request_id == "req_fake_1"
    [sent] = fake.received
    assert (sent.method, sent.path) == ("POST", "/v1/images/generations")
    assert sent.body == {"model": "gpt-image-1", "prompt": "A red bicycle", "n": 2, "size": "1024x1024",
                         "quality": "low"}  # no response_format: gpt-image models refuse it


def test_dall_e_is_asked_for_bytes_rather_than_a_url(fake, openai_provider):
    result = openai_provider.generate(Request(kind="image", model="dall-e-3", prompt="A lighthouse"))

    assert fake.received[0].body["response_format"] == "b64_json"
    assert result.assets[0].data == PNG
    assert result.usage == Usage(images=1)


# --- OpenAI models and health -----------------------------------------------------------------


def test_openai_models_are_a_static_list_with_kinds_and_context_windows(fake, openai_provider):
    models = openai_provider.models()

    assert fake.received == []
    assert {m.kind for m in models} == {"text", "image"}
    assert all(m.context_window for m in models if m.kind == "text")
    assert "gpt-4o-mini" in {m.id for m in models}


def test_health_lists_models_and_times_the_call(fake, openai_provider):
    health = openai_provider.health()

    assert health.ok and isinstance(health.latency_ms, int)
    assert [(r.method, r.path) for r in fake.received] == [("GET", "/v1/models")]


def test_health_with_a_bad_key_says_why_without_the_key(fake):
    provider = build("openai", Config(api_key="sk-wrong-key-1234", base_url=fake.base_url))

    health = provider.health()

    assert not health.ok
    assert "Incorrect API key" in health.detail and "sk-wrong-key-1234" not in health.detail


# --- errors -----------------------------------------------------------------------------------


def _in(seconds: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(("reply", "expected", "status"), [
    (error_reply(403, "You are not allowed to sample from this model.", kind="permission_error"), AuthError, 403),
    (error_reply(429, "You exceeded your current quota, please check your plan and billing details.",
                 kind="insufficient_quota", code="insufficient_quota"), AuthError, 429),
    (error_reply(400, "This model's maximum context length is 128000 tokens. However, your messages resulted "
                      "in 130001 tokens.", code="context_length_exceeded", param="messages"), ContextTooLong, 400),
    (error_reply(400, "Invalid value for 'temperature': must be at most 2.", param="temperature"), BadRequest, 400),
    (error_reply(404, "The model `gpt-9` does not exist or you do not have access to it.",
                 code="model_not_found"), BadRequest, 404),
    (error_reply(500, "The server had an error while processing your request.", kind="server_error"),
     Unavailable, 500),
    (error_reply(503, "The engine is currently overloaded, please try again later.", kind="server_error"),
     Unavailable, 503),
])
def test_http_errors_map_to_typed_errors_with_the_vendors_reason(fake, openai_provider, reply, expected, status):
    fake.push(reply)

    with pytest.raises(expected) as caught:
        openai_provider.generate(chat())

    err = caught.value
    assert type(err) is expected
    assert err.status == status and err.provider == "openai"
    assert reply.error["message"][:40] in str(err)
    assert len(fake.received) == 1  # the SDK did not retry on its own: the router decides


@pytest.mark.parametrize(("headers", "low", "high"), [
    (lambda: {"retry-after": "7"}, 7, 7),
    (lambda: {"retry-after-ms": "1500", "retry-after": "2"}, 1.5, 1.5),
    (lambda: {"retry-after": _in(60)}, 50, 60),  # an HTTP date, made when the test runs
])
def test_rate_limits_carry_retry_after(fake, openai_provider, headers, low, high):
    fake.push(error_reply(429, "Rate limit reached for gpt-4o-mini on requests per min (RPM).",
                          kind="requests", code="rate_limit_exceeded", headers=headers()))

    with pytest.raises(RateLimited) as caught:
        openai_provider.generate(chat())

    assert low <= caught.value.retry_after <= high
    assert caught.value.retryable and caught.value.status == 429


def test_a_delay_past_the_timeout_is_a_timeout(fake):
    provider = build("openai", Config(api_key=API_KEY, base_url=fake.base_url, timeout=0.3))
    fake.push(Reply(delay=5), Reply(delay=5))

    with pytest.raises(Timeout):
        provider.generate(chat())
    with pytest.raises(Timeout):
        drain(provider, chat())


def test_the_request_timeout_caps_the_configured_one(fake, openai_provider):
    fake.push(Reply(delay=5))

    with pytest.raises(Timeout):
        openai_provider.generate(chat(timeout=0.3))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_refused_connection_is_unavailable():
    provider = build("openai", Config(api_key=API_KEY, base_url=f"http://127.0.0.1:{_closed_port()}/v1"))

    with pytest.raises(Unavailable, match="Could not reach OpenAI"):
        provider.generate(chat())
    with pytest.raises(Unavailable):
        drain(provider, chat())


def test_the_key_never_appears_in_errors_tracebacks_or_repr(fake):
    key = "sk-proj-very-secret-key-0042"
    provider = build("openai", Config(api_key=key, base_url=fake.base_url))

    with pytest.raises(AuthError) as caught:
        provider.generate(chat())

    assert "Incorrect API key provided" in str(caught.value)  # the fake echoed the key in that message
    assert key not in "".join(traceback.format_exception(caught.value))
    assert key not in repr(provider)


def test_a_missing_key_is_refused_before_any_call():
    with pytest.raises(AuthError, match="needs an API key"):
        build("openai", Config(api_key=None))


def test_one_provider_reuses_its_connection(fake, openai_provider):
    for _ in range(5):
        openai_provider.generate(chat())
    drain(openai_provider, chat())

    assert len(fake.received) == 6
    assert fake.connections == 1


def test_serve_gives_a_base_url_the_sdk_can_use():
    with serve() as base_url:
        provider = build("openai", Config(api_key=API_KEY, base_url=base_url))
        assert provider.generate(chat()).text == TEXT


# --- OpenAI-compatible ------------------------------------------------------------------------


def compatible(fake: FakeOpenAI, **config) -> OpenAICompatibleProvider:
    return build("openai-compatible", Config(**({"base_url": fake.base_url} | config)), name="local")


def test_build_maps_types_and_names():
    openai_provider = build("openai", Config(api_key="sk-x"))
    groq = build("openai-compatible", Config(api_key="gsk-x", base_url="https://api.groq.com/openai/v1"),
                 name="groq")

    assert type(openai_provider) is OpenAIProvider and openai_provider.id == "openai"
    assert type(groq) is OpenAICompatibleProvider and groq.id == "groq"
    assert isinstance(groq, Provider) and groq.kinds == frozenset({"text"})


def test_a_compatible_provider_needs_a_base_url():
    with pytest.raises(ValueError, match="base URL"):
        build("openai-compatible", Config(api_key="k"))


def test_a_keyless_server_gets_no_authorization_header_and_max_tokens():
    with FakeOpenAI(api_key=None) as fake:
        provider = compatible(fake)

        result = provider.generate(chat())

    assert result.text == TEXT
    [sent] = fake.received
    assert sent.header("authorization") is None
    assert sent.header("x-client-request-id") is None
    assert sent.body["max_tokens"] == 50 and "max_completion_tokens" not in sent.body


def test_a_server_that_sends_no_usage_in_streams_reports_zeros_and_finishes():
    with FakeOpenAI(api_key=None, stream_usage="never") as fake:
        *chunks, result = drain(compatible(fake), chat())

    assert "".join(c.text for c in chunks) == result.text == TEXT
    assert result.usage == Usage()  # not reported: the engine estimates, the provider does not guess
    assert result.finish_reason == "stop"


def test_a_server_that_reports_no_usage_at_all_reports_zeros(fake):
    fake.push(Reply(usage=False))

    result = compatible(fake, api_key=API_KEY).generate(chat())

    assert result.usage == Usage() and result.finish_reason == "stop"


def test_a_compatible_stream_without_a_finish_is_still_truncated():
    with FakeOpenAI(api_key=None, stream_usage="never") as fake:
        fake.push(Reply(cut_after=3, cut="clean"))
        with pytest.raises(TruncatedStream) as caught:
            drain(compatible(fake), chat())

    assert caught.value.partial.text == "Hello from " and caught.value.provider == "local"


def test_a_server_that_refuses_stream_options_is_asked_without_them_from_then_on():
    with FakeOpenAI(api_key=None, reject_stream_options=True) as fake:
        provider = compatible(fake)

        first = drain(provider, chat())[-1]
        second = drain(provider, chat())[-1]

    assert first.text == second.text == TEXT
    assert [("stream_options" in r.body) for r in fake.received] == [True, False, False]


def test_groq_style_usage_in_x_groq_is_read():
    with FakeOpenAI(stream_usage="x_groq") as fake:
        fake.push(Reply(prompt_tokens=77, completion_tokens=6))
        result = drain(compatible(fake, api_key=API_KEY), chat())[-1]

    assert result.usage == Usage(input_tokens=77, output_tokens=6)


def test_deepseek_cache_hit_tokens_are_cached_input(fake):
    usage = {"prompt_cache_hit_tokens": 900, "prompt_cache_miss_tokens": 100}
    fake.push(Reply(prompt_tokens=1000, completion_tokens=5, usage_extra=usage),
              Reply(prompt_tokens=1000, completion_tokens=5, usage_extra=usage))
    provider = compatible(fake, api_key=API_KEY)

    assert provider.generate(chat()).usage == Usage(input_tokens=1000, output_tokens=5, cached_input_tokens=900)
    assert drain(provider, chat())[-1].usage == Usage(input_tokens=1000, output_tokens=5,
                                                        cached_input_tokens=900)


def test_compatible_models_come_from_the_server_with_context_windows():
    listed = [
        {"id": "llama-3.3-70b-versatile", "object": "model", "owned_by": "Meta", "context_window": 131072},
        {"id": "qwen/qwen3-32b", "object": "model", "owned_by": "openrouter", "context_length": 40960},
        {"id": "my-local-model", "object": "model", "owned_by": "vllm", "max_model_len": 8192},
        {"id": "black-forest-labs/FLUX.1-schnell", "object": "model", "type": "image"},
        {"id": "mystery", "object": "model", "owned_by": "someone"},
    ]
    with FakeOpenAI(api_key=None, models=listed) as fake:
        models = compatible(fake).models()

    assert [(m.id, m.kind, m.context_window) for m in models] == [
        ("llama-3.3-70b-versatile", "text", 131072),
        ("qwen/qwen3-32b", "text", 40960),
        ("my-local-model", "text", 8192),
        ("black-forest-labs/FLUX.1-schnell", "image", None),
        ("mystery", "text", None),
    ]


def test_compatible_errors_name_the_server_and_read_its_context_wording(fake):
    fake.push(error_reply(400, "the request exceeds the available context size, try increasing it",
                          kind="exceed_context_size_error"))
    provider = build("openai-compatible", Config(api_key=API_KEY, base_url=fake.base_url), name="llamacpp")

    with pytest.raises(ContextTooLong, match=r"^llamacpp: the request exceeds"):
        provider.generate(chat())


def test_images_on_a_compatible_server_only_when_configured(fake):
    text_only = compatible(fake, api_key=API_KEY)
    with_images = compatible(fake, api_key=API_KEY, options={"kinds": ["text", "image"]})
    image = Request(kind="image", model="flux-schnell", prompt="A fox")

    with pytest.raises(BadRequest):
        text_only.generate(image)
    assert with_images.generate(image).usage.images == 1
    assert fake.received[-1].body["response_format"] == "b64_json"


# --- presets ----------------------------------------------------------------------------------


def test_presets_are_complete_and_priced_by_known_catalog_ids():
    presets = yaml.safe_load((Path(__file__).parents[1] / "data" / "openai_compatible.yaml").read_text())
    known = {p.id for p in catalog.providers}

    assert set(presets) == {"openrouter", "groq", "together", "mistral", "deepseek", "ollama", "vllm",
                            "llama-cpp", "lm-studio"}
    for key, preset in presets.items():
        assert set(preset) == {"name", "base_url", "key", "catalog", "docs"}, key
        assert preset["base_url"].startswith(("https://", "http://localhost:")), key
        assert preset["key"] in {"required", "optional", "none"}, key
        assert preset["catalog"] is None or preset["catalog"] in known, key
        assert preset["docs"].startswith("https://"), key
        # A hosted vendor is priced and keyed; a self-hosted server is neither.
        assert (preset["catalog"] is None) == preset["base_url"].startswith("http://localhost:"), key
        assert (preset["key"] == "required") == (preset["catalog"] is not None), key
