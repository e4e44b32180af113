"""The Anthropic provider, through the real ``anthropic`` SDK against a local fake.

The usage tests are the point: Anthropic's ``input_tokens`` leaves out cache reads and
writes, ours includes them, and every tool in this field has got that wrong at least once.
"""

from __future__ import annotations

import socket
import traceback

import pytest

from providers import build
from providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider
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
    Timeout,
    TokenCounter,
    TruncatedStream,
    Unavailable,
    Usage,
)
from tests.fakes.anthropic_server import API_KEY, FakeAnthropic, Reply, error_reply, serve

TEXT = "Hello from the fake Anthropic server."  # the fake's default answer: 6 text deltas
# The default stream's events: message_start, content_block_start, ping, 6 deltas,
# content_block_stop, message_delta, message_stop.
MESSAGE_DELTA = 10


def chat(**overrides) -> Request:
    fields = dict(kind="text", model="claude-haiku-4-5", system="Answer briefly.",
                  messages=(Message("user", "Say hello."),), max_tokens=300, temperature=0.5)
    return Request(**(fields | overrides))


@pytest.fixture
def fake():
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def claude(fake) -> AnthropicProvider:
    return build("anthropic", Config(api_key=API_KEY, base_url=fake.base_url, timeout=5))


# --- usage: cache reads and writes ------------------------------------------------------------

CACHED = Reply(model="claude-haiku-4-5-20251001", input_tokens=100, cache_read_input_tokens=2000,
               cache_creation_input_tokens=500, output_tokens=42)
# 100 uncached + 2000 read from cache + 500 written to cache = 2600 prompt tokens in all.
CACHED_USAGE = Usage(input_tokens=2600, output_tokens=42, cached_input_tokens=2000, cache_write_tokens=500)


def test_generate_counts_cache_reads_and_writes_inside_input_tokens(fake, claude):
    fake.push(CACHED)

    result = claude.generate(chat())

    assert result.usage == CACHED_USAGE
    assert result.text == TEXT
    assert result.model == "claude-haiku-4-5-20251001"
    assert result.finish_reason == "end_turn"
    assert result.vendor_request_id == "req_fake_0001"


def test_stream_counts_cache_reads_and_writes_inside_input_tokens(fake, claude):
    fake.push(CACHED)

    *chunks, result = list(claude.stream(chat()))

    assert all(isinstance(c, Chunk) for c in chunks)
    assert "".join(c.text for c in chunks) == TEXT == result.text
    # Input from message_start, the final output count from message_delta (not message_start's 1).
    assert result.usage == CACHED_USAGE
    assert (result.model, result.finish_reason) == ("claude-haiku-4-5-20251001", "end_turn")


def test_stream_with_cumulative_counts_in_message_delta_is_not_double_counted(fake, claude):
    fake.push(Reply(input_tokens=100, cache_read_input_tokens=2000, cache_creation_input_tokens=500,
                    output_tokens=42, cumulative_delta_usage=True))

    assert list(claude.stream(chat()))[-1].usage == CACHED_USAGE


def test_no_cache_activity_leaves_input_as_reported(fake, claude):
    fake.push(Reply(input_tokens=321, output_tokens=12), Reply(input_tokens=321, output_tokens=12))

    assert claude.generate(chat()).usage == Usage(input_tokens=321, output_tokens=12)
    assert list(claude.stream(chat()))[-1].usage == Usage(input_tokens=321, output_tokens=12)


# --- the request ------------------------------------------------------------------------------


def test_the_system_prompt_goes_in_system_and_max_tokens_is_sent(fake, claude):
    claude.generate(chat())
    list(claude.stream(chat()))

    plain, streamed = fake.received
    assert (plain.method, plain.path) == ("POST", "/v1/messages")
    assert plain.header("authorization") == f"Bearer {API_KEY}"
    assert plain.header("anthropic-version")
    assert plain.header("x-stainless-retry-count") == "0"
    # No temperature (the request has one): this API version takes no sampling settings.
    assert plain.body == {"model": "claude-haiku-4-5", "system": "Answer briefly.", "max_tokens": 300,
                          "messages": [{"role": "user", "content": "Say hello."}]}
    assert streamed.body == plain.body | {"stream": True}


def test_configured_headers_are_sent(fake):
    provider = build("anthropic", Config(api_key=API_KEY, base_url=fake.base_url,
                                         headers={"anthropic-beta": "some-feature-2026-01-01"}))

    provider.generate(chat())

    assert fake.received[0].header("anthropic-beta") == "some-feature-2026-01-01"


def test_max_tokens_defaults_when_the_request_has_none(fake, claude):
    claude.generate(Request(kind="text", model="claude-haiku-4-5", prompt="Hi"))

    assert fake.received[0].body == {"model": "claude-haiku-4-5", "max_tokens": DEFAULT_MAX_TOKENS,
                                     "messages": [{"role": "user", "content": "Hi"}]}


def test_system_turns_in_messages_join_the_system_prompt(fake, claude):
    claude.generate(chat(messages=(Message("system", "Use British spelling."), Message("user", "Colour?"),
                                   Message("assistant", "Colour."), Message("user", "Again."))))

    body = fake.received[0].body
    assert body["system"] == "Answer briefly.\n\nUse British spelling."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_count_tokens_asks_anthropics_counter(fake, claude):
    fake.push(Reply(input_tokens=1234))

    assert claude.count_tokens(chat()) == 1234
    [sent] = fake.received
    assert (sent.method, sent.path) == ("POST", "/v1/messages/count_tokens")
    # The counter takes the prompt only: no max_tokens.
    assert sent.body == {"model": "claude-haiku-4-5", "system": "Answer briefly.",
                         "messages": [{"role": "user", "content": "Say hello."}]}


def test_it_is_a_provider_and_a_token_counter(claude):
    assert isinstance(claude, Provider) and isinstance(claude, TokenCounter)
    assert claude.id == "anthropic" and claude.kinds == frozenset({"text"})
    assert build("anthropic", Config(api_key="k"), name="claude-team").id == "claude-team"


def test_other_kinds_are_refused_without_a_call(fake, claude):
    with pytest.raises(BadRequest, match="text only"):
        claude.generate(Request(kind="image", model="claude-haiku-4-5", prompt="A cat"))
    assert fake.received == []


# --- streams that end early -------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["abort", "clean"])
def test_a_stream_cut_mid_answer_fails_with_the_usage_known_so_far(fake, claude, cut):
    fake.push(Reply(input_tokens=100, cache_read_input_tokens=2000, cache_creation_input_tokens=500,
                    output_tokens=42, cut_after=5, cut=cut))

    stream = claude.stream(chat())
    received = [next(stream), next(stream)]
    with pytest.raises(TruncatedStream) as caught:
        next(stream)

    assert [c.text for c in received] == ["Hello ", "from "]
    err = caught.value
    assert err.retryable and err.fallback and err.provider == "anthropic"
    assert err.partial.text == "Hello from "
    # The input side was billed at message_start; the output count is message_start's placeholder.
    assert err.partial.usage == Usage(input_tokens=2600, output_tokens=1, cached_input_tokens=2000,
                                      cache_write_tokens=500)


def test_a_stream_cut_after_message_delta_but_before_message_stop_is_truncated(fake, claude):
    fake.push(Reply(output_tokens=42, cut_after=MESSAGE_DELTA + 1, cut="clean"))

    with pytest.raises(TruncatedStream, match="message_stop") as caught:
        list(claude.stream(chat()))

    assert caught.value.partial.text == TEXT
    assert caught.value.partial.usage.output_tokens == 42
    assert caught.value.partial.finish_reason == "end_turn"


def test_an_overloaded_error_event_inside_the_stream_is_unavailable_with_the_partial(fake, claude):
    fake.push(Reply(cut_after=5, cut="error", error_type="overloaded_error", error_message="Overloaded"))

    with pytest.raises(Unavailable, match="Overloaded") as caught:
        list(claude.stream(chat()))

    assert caught.value.partial.text == "Hello from "
    assert caught.value.partial.usage.input_tokens == 20


def test_a_stream_that_goes_quiet_mid_answer_times_out_with_the_partial(fake):
    provider = build("anthropic", Config(api_key=API_KEY, base_url=fake.base_url, timeout=0.3))
    fake.push(Reply(cut_after=5, cut="stall"))

    with pytest.raises(Timeout) as caught:
        list(provider.stream(chat()))

    assert caught.value.partial.text == "Hello from "


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "expected"), [
    (error_reply(403, "permission_error", "Your API key does not have permission to use the specified resource."),
     AuthError),
    (error_reply(400, "invalid_request_error", "prompt is too long: 208471 tokens > 200000 maximum"),
     ContextTooLong),
    (error_reply(400, "invalid_request_error",
                 "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000"), ContextTooLong),
    (error_reply(400, "invalid_request_error", "messages: roles must alternate between \"user\" and \"assistant\""),
     BadRequest),
    (error_reply(404, "not_found_error", "model: claude-9"), BadRequest),
    (error_reply(413, "request_too_large", "Request exceeds the maximum allowed number of bytes."), BadRequest),
    (error_reply(500, "api_error", "Internal server error"), Unavailable),
    (error_reply(529, "overloaded_error", "Overloaded"), Unavailable),
])
def test_http_errors_map_to_typed_errors_with_the_vendors_reason(fake, claude, reply, expected):
    fake.push(reply)

    with pytest.raises(expected) as caught:
        claude.generate(chat())

    err = caught.value
    assert type(err) is expected
    assert err.status == reply.status and err.provider == "anthropic"
    assert str(err) == f"Anthropic: {reply.error_message} (HTTP {reply.status})"
    assert len(fake.received) == 1  # the SDK did not retry on its own: the router decides


def test_rate_limits_carry_retry_after(fake, claude):
    fake.push(error_reply(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit",
                          headers={"retry-after": "13"}))

    with pytest.raises(RateLimited) as caught:
        claude.generate(chat())

    assert caught.value.retry_after == 13 and caught.value.status == 429


def test_errors_opening_a_stream_are_typed_too(fake, claude):
    fake.push(error_reply(529, "overloaded_error", "Overloaded"))

    with pytest.raises(Unavailable, match="HTTP 529"):
        list(claude.stream(chat()))


def test_a_delay_past_the_timeout_is_a_timeout(fake):
    provider = build("anthropic", Config(api_key=API_KEY, base_url=fake.base_url, timeout=0.3))
    fake.push(Reply(delay=5), Reply(delay=5))

    with pytest.raises(Timeout):
        provider.generate(chat())
    with pytest.raises(Timeout):
        list(provider.stream(chat()))


def test_a_refused_connection_is_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = build("anthropic", Config(api_key=API_KEY, base_url=f"http://127.0.0.1:{port}"))

    with pytest.raises(Unavailable, match="Could not reach Anthropic"):
        provider.generate(chat())


def test_the_key_never_appears_in_errors_tracebacks_or_repr(fake):
    key = "sk-ant-api03-very-secret-0042"
    provider = build("anthropic", Config(api_key=key, base_url=fake.base_url))

    with pytest.raises(AuthError, match="invalid x-api-key"):
        provider.generate(chat())
    health = provider.health()

    assert not health.ok and "invalid x-api-key" in health.detail and key not in health.detail
    with pytest.raises(AuthError) as caught:
        provider.count_tokens(chat())
    assert key not in "".join(traceback.format_exception(caught.value))
    assert key not in repr(provider)


def test_a_missing_key_is_refused_before_any_call():
    with pytest.raises(AuthError, match="needs an API key"):
        build("anthropic", Config())


# --- models, health, connections --------------------------------------------------------------


def test_models_are_a_static_list_with_context_windows(fake, claude):
    models = claude.models()

    assert fake.received == []
    assert models and all(m.kind == "text" and m.context_window for m in models)


def test_health_lists_models_and_times_the_call(fake, claude):
    health = claude.health()

    assert health.ok and isinstance(health.latency_ms, int)
    assert [(r.method, r.path.split("?")[0]) for r in fake.received] == [("GET", "/v1/models")]


def test_one_provider_reuses_its_connection(fake, claude):
    for _ in range(4):
        claude.generate(chat())
    list(claude.stream(chat()))
    claude.count_tokens(chat())

    assert len(fake.received) == 6
    assert fake.connections == 1


def test_serve_gives_a_base_url_the_sdk_can_use():
    with serve() as base_url:
        assert build("anthropic", Config(api_key=API_KEY, base_url=base_url)).generate(chat()).text == TEXT
