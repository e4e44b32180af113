"""The Gemini provider over httpx against a fake Gemini API on 127.0.0.1 (tests/fakes/gemini_server.py)."""

from __future__ import annotations

import logging
import socket

import pytest

from providers import build
from providers.base import (
    AuthError,
    BadRequest,
    Chunk,
    Config,
    ContextTooLong,
    Message,
    RateLimited,
    Request,
    Result,
    Timeout,
    ToolCall,
    ToolSpec,
    TruncatedStream,
    Unavailable,
)
from providers.gemini import GeminiProvider
from tests.fakes.gemini_server import API_KEY, FakeGemini, Reply, error_reply, retry_info

MODEL = "gemini-2.5-flash"


@pytest.fixture
def fake():
    with FakeGemini() as server:
        yield server


@pytest.fixture
def gemini(fake):
    provider = GeminiProvider(Config(api_key=API_KEY, base_url=fake.base_url, timeout=5))
    yield provider
    provider.close()


def ask(text: str = "Say hello.", **kwargs) -> Request:
    return Request(kind="text", model=MODEL, messages=(Message("user", text),), **kwargs)


def collect(provider, req: Request) -> tuple[list[str], Result]:
    pieces, results = [], []
    for item in provider.stream(req):
        (pieces if isinstance(item, Chunk) else results).append(item.text if isinstance(item, Chunk) else item)
    assert len(results) == 1, "a stream ends in exactly one Result"
    return pieces, results[0]


# --- requests as Gemini expects them --------------------------------------------------------


def test_generate_sends_gemini_request_and_reads_the_answer(fake, gemini):
    req = Request(kind="text", model=MODEL, system="Be brief.", temperature=0.2, max_tokens=64,
                  messages=(Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "And you?")))
    result = gemini.generate(req)

    sent = fake.received[-1]
    assert sent.method == "POST"
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.header("x-goog-api-key") == API_KEY
    assert "key=" not in sent.path  # the key travels in a header, never in a URL that gets logged
    assert sent.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "And you?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 64},
    }
    assert result.text == "Hello from the fake Gemini server."
    assert result.finish_reason == "stop"
    assert result.model == MODEL
    assert result.vendor_request_id and result.vendor_request_id.startswith("fake-response-")


def test_usage_counts_cached_input_and_bills_thinking_as_output(fake, gemini):
    fake.push(Reply(prompt_tokens=1000, cached_tokens=800, candidates_tokens=40, thoughts_tokens=300,
                    thought="Let me think about greetings."))
    result = gemini.generate(ask())

    assert result.usage.input_tokens == 1000  # promptTokenCount already includes the cached tokens
    assert result.usage.cached_input_tokens == 800
    assert result.usage.cache_write_tokens == 0
    assert result.usage.output_tokens == 340  # answer + thinking
    assert result.text == "Hello from the fake Gemini server."  # thought summaries are not the answer


def test_no_cache_means_no_cached_tokens(fake, gemini):
    result = gemini.generate(ask())
    assert (result.usage.input_tokens, result.usage.cached_input_tokens, result.usage.output_tokens) == (11, 0, 6)


def test_max_tokens_finish_is_reported_as_length(fake, gemini):
    fake.push(Reply(finish_reason="MAX_TOKENS"))
    assert gemini.generate(ask()).finish_reason == "length"


def test_a_prompt_field_and_system_messages_are_sent_too(fake, gemini):
    gemini.generate(Request(kind="text", model=MODEL, prompt="Write a haiku.",
                            messages=(Message("system", "You are a poet."),),
                            params={"stop": "END", "thinking_budget": 0}))
    body = fake.received[-1].body
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Write a haiku."}]}]
    assert body["systemInstruction"] == {"parts": [{"text": "You are a poet."}]}
    assert body["generationConfig"] == {"stopSequences": ["END"], "thinkingConfig": {"thinkingBudget": 0}}


def test_count_tokens_asks_gemini_for_the_whole_request(fake, gemini):
    count = gemini.count_tokens(Request(kind="text", model=MODEL, system="Be very brief.",
                                        messages=(Message("user", "How are you today?"),), max_tokens=10))
    sent = fake.received[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:countTokens"
    inner = sent.body["generateContentRequest"]
    assert inner["model"] == f"models/{MODEL}"
    assert inner["systemInstruction"] == {"parts": [{"text": "Be very brief."}]}
    assert "generationConfig" not in inner
    assert count == 7  # the fake counts words: 3 of system, 4 of the message


# --- streaming ------------------------------------------------------------------------------


def test_stream_yields_chunks_then_one_result_with_usage(fake, gemini):
    fake.push(Reply(text="One two three four.", prompt_tokens=20, candidates_tokens=5, thoughts_tokens=2))
    pieces, result = collect(gemini, ask())

    assert fake.received[-1].path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert len(pieces) == 4 and "".join(pieces) == "One two three four."
    assert result.text == "One two three four."
    assert (result.usage.input_tokens, result.usage.output_tokens) == (20, 7)
    assert result.finish_reason == "stop"


def test_stream_cut_off_mid_answer_is_a_truncated_stream_with_what_arrived(fake, gemini):
    fake.push(Reply(text="One two three four.", cut_after=2, cut="abort"))
    pieces = []
    with pytest.raises(TruncatedStream) as caught:
        for item in gemini.stream(ask()):
            pieces.append(item)
    assert all(isinstance(p, Chunk) for p in pieces)
    assert caught.value.partial is not None
    assert caught.value.partial.text == "One two "
    assert caught.value.partial.usage.input_tokens == 11  # the prompt was billed: the engine records it
    assert caught.value.retryable and caught.value.fallback


def test_stream_that_ends_without_a_finish_reason_is_not_a_success(fake, gemini):
    fake.push(Reply(text="One two three four.", cut_after=3, cut="clean"))
    with pytest.raises(TruncatedStream) as caught:
        collect(gemini, ask())
    assert caught.value.partial.text == "One two three "


def test_answer_without_finish_reason_is_truncated_even_unstreamed(fake, gemini):
    fake.push(Reply(finish_reason=None))
    with pytest.raises(TruncatedStream):
        gemini.generate(ask())


def test_error_event_inside_the_stream_raises_its_typed_error_with_the_partial(fake, gemini):
    fake.push(Reply(text="One two three four.", cut_after=1, cut="error"))
    with pytest.raises(Unavailable) as caught:
        collect(gemini, ask())
    assert "overloaded" in str(caught.value)
    assert caught.value.partial.text == "One "


def test_stream_stopped_for_safety_is_a_bad_request_keeping_the_usage(fake, gemini):
    fake.push(Reply(text="Here is how to", finish_reason="SAFETY"))
    with pytest.raises(BadRequest) as caught:
        collect(gemini, ask("Something unsafe"))
    assert "unsafe" in str(caught.value) and "SAFETY" in str(caught.value)
    assert caught.value.partial.usage.input_tokens == 11
    assert not isinstance(caught.value, ContextTooLong)


def test_blocked_prompt_is_a_bad_request_in_plain_words(fake, gemini):
    fake.push(Reply(block_reason="SAFETY"))
    with pytest.raises(BadRequest, match=r"Gemini blocked the prompt \(SAFETY\); rephrase it"):
        gemini.generate(ask("Something unsafe"))


# --- errors ---------------------------------------------------------------------------------


def test_wrong_key_is_an_auth_error_though_google_answers_400():
    with FakeGemini(api_key="the-right-key") as fake:
        provider = GeminiProvider(Config(api_key="a-wrong-key-123", base_url=fake.base_url))
        with pytest.raises(AuthError) as caught:
            provider.generate(ask())
    assert caught.value.status == 400
    assert "API key not valid" in str(caught.value)
    assert "a-wrong-key-123" not in str(caught.value)


def test_missing_key_fails_before_calling(fake):
    provider = GeminiProvider(Config(base_url=fake.base_url))
    with pytest.raises(AuthError, match="No API key"):
        provider.generate(ask())
    assert fake.received == []


def test_rate_limit_honours_retry_after_header(fake, gemini):
    fake.push(error_reply(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED",
                          headers={"retry-after": "7"}))
    with pytest.raises(RateLimited) as caught:
        gemini.generate(ask())
    assert caught.value.retry_after == 7
    assert "Resource has been exhausted" in str(caught.value)


def test_rate_limit_reads_google_retry_info_when_there_is_no_header(fake, gemini):
    fake.push(error_reply(429, "You exceeded your current quota.", "RESOURCE_EXHAUSTED",
                          details=[retry_info("37s")]))
    with pytest.raises(RateLimited) as caught:
        gemini.generate(ask())
    assert caught.value.retry_after == 37


def test_input_over_the_context_window_is_context_too_long(fake, gemini):
    fake.push(error_reply(400, "The input token count (1196266) exceeds the maximum number of tokens "
                               "allowed (1048576).", "INVALID_ARGUMENT"))
    with pytest.raises(ContextTooLong) as caught:
        gemini.generate(ask())
    assert caught.value.fallback


def test_other_400_is_a_bad_request(fake, gemini):
    fake.push(error_reply(400, "* GenerationConfig.temperature: must be between 0 and 2", "INVALID_ARGUMENT"))
    with pytest.raises(BadRequest) as caught:
        gemini.generate(ask())
    assert type(caught.value) is BadRequest and "temperature" in str(caught.value)


@pytest.mark.parametrize("status,name", [(500, "INTERNAL"), (503, "UNAVAILABLE")])
def test_server_errors_are_unavailable(fake, gemini, status, name):
    fake.push(error_reply(status, "The model is overloaded. Please try again later.", name))
    with pytest.raises(Unavailable) as caught:
        gemini.generate(ask())
    assert caught.value.status == status and caught.value.retryable


def test_server_errors_on_a_stream_request_are_raised_before_any_chunk(fake, gemini):
    fake.push(error_reply(503, "The model is overloaded.", "UNAVAILABLE"))
    with pytest.raises(Unavailable):
        next(iter(gemini.stream(ask())))


def test_a_slow_answer_times_out(fake, gemini):
    fake.push(Reply(delay=2))
    with pytest.raises(Timeout):
        gemini.generate(ask(timeout=0.2))


def test_nothing_listening_is_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = GeminiProvider(Config(api_key=API_KEY, base_url=f"http://127.0.0.1:{port}/v1beta"))
    with pytest.raises(Unavailable, match="Could not reach Gemini"):
        provider.generate(ask())


def test_non_text_kinds_are_refused(gemini):
    with pytest.raises(BadRequest):
        gemini.generate(Request(kind="image", model=MODEL, prompt="a cat"))


def test_tools_are_refused_in_plain_words_before_calling(fake, gemini):
    # Tool calling is not built for Gemini: answering without the tools would be a silent degrade.
    forecast = ToolSpec("weather__forecast", "The forecast for a city.", {"type": "object"})
    call = ToolCall("call_1", "weather__forecast", {"city": "Oslo"}, '{"city": "Oslo"}')
    with_tools = ask(tools=(forecast,))
    tool_turns = Request(kind="text", model=MODEL, messages=(
        Message("user", "Weather in Oslo?"), Message("assistant", "", tool_calls=(call,)),
        Message("tool", "Sunny.", tool_call_id="call_1")))
    for req in (with_tools, tool_turns):
        for call_it in (gemini.generate, lambda r: list(gemini.stream(r))):
            with pytest.raises(BadRequest, match="Gemini models here do not call tools; pick an OpenAI or "
                                                 "Anthropic model for chat with tools"):
                call_it(req)
    assert fake.received == []  # refused here, never sent


# --- the instance -----------------------------------------------------------------------------


def test_calls_reuse_one_kept_alive_connection(fake, gemini):
    gemini.generate(ask())
    collect(gemini, ask())
    gemini.generate(ask())
    assert fake.connections == 1


def test_health_and_models(fake, gemini):
    health = gemini.health()
    assert health.ok and health.latency_ms is not None
    assert fake.received[-1].path == "/v1beta/models"
    models = {m.id: m for m in gemini.models()}
    assert models[MODEL].kind == "text" and models[MODEL].context_window == 1_048_576


def test_health_reports_a_bad_key():
    with FakeGemini(api_key="the-right-key") as fake:
        health = GeminiProvider(Config(api_key="wrong", base_url=fake.base_url)).health()
    assert not health.ok and "API key not valid" in health.detail


def test_build_names_the_instance(fake):
    provider = build("gemini", Config(api_key=API_KEY, base_url=fake.base_url), name="gemini-eu")
    assert isinstance(provider, GeminiProvider) and provider.id == "gemini-eu"
    assert build("gemini", Config(api_key=API_KEY)).id == "gemini"


def test_the_key_never_shows_in_reprs_errors_or_logs(fake, caplog):
    config = Config(api_key=API_KEY, base_url=fake.base_url)
    provider = GeminiProvider(config)
    fake.push(error_reply(429, f"Quota exceeded for key {API_KEY}.", "RESOURCE_EXHAUSTED"))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(RateLimited) as caught:
            provider.generate(ask())
        provider.generate(ask())
        collect(provider, ask())
    assert API_KEY not in str(caught.value)  # even when the vendor echoes it
    assert API_KEY not in repr(provider) and API_KEY not in repr(config)
    assert caplog.records and API_KEY not in caplog.text
