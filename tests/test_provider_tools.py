"""Tool calling in the OpenAI and Anthropic providers, through the real SDKs against the wire fakes.

Each test checks what the fake received (the tools offered, the tool calls and results sent
back in the vendor's own shape) as well as what the provider parsed from the answer.
"""

from __future__ import annotations

import json

import pytest

from providers import build
from providers.base import BadRequest, Config, Message, Request, ToolCall, ToolSpec
from tests.fakes import anthropic_server, openai_server
from tests.fakes.anthropic_server import FakeAnthropic, tool_use_reply
from tests.fakes.openai_server import FakeOpenAI, tool_call_reply

FORECAST = ToolSpec("weather__forecast", "The forecast for a city.",
                    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


def _request(model: str, *messages: Message) -> Request:
    return Request(kind="text", model=model, system="Be brief.", max_tokens=100, tools=(FORECAST,),
                   messages=messages or (Message("user", "Weather in Oslo?"),))


# --- OpenAI ------------------------------------------------------------------------------------


@pytest.fixture
def openai_fake():
    with FakeOpenAI() as fake:
        yield fake


def _openai(fake: FakeOpenAI):
    return build("openai", Config(api_key=openai_server.API_KEY, base_url=fake.base_url, timeout=5))


def test_openai_sends_tools_and_parses_the_calls(openai_fake):
    openai_fake.push(tool_call_reply(("call_1", "weather__forecast", {"city": "Oslo"}),
                                      ("call_2", "weather__forecast", "{not json")))
    result = _openai(openai_fake).generate(_request("gpt-4o-mini"))

    assert result.finish_reason == "tool_calls"
    assert result.text == ""
    assert result.tool_calls == (ToolCall("call_1", "weather__forecast", {"city": "Oslo"}, '{"city": "Oslo"}'),
                                 ToolCall("call_2", "weather__forecast", None, "{not json"))
    assert result.usage.input_tokens == 12  # a tool-call turn is billed like any other
    body = openai_fake.received[-1].body
    assert body["tools"] == [{"type": "function", "function": {
        "name": "weather__forecast", "description": "The forecast for a city.",
        "parameters": FORECAST.input_schema}}]


def test_openai_sends_tool_calls_and_results_back_in_its_shape(openai_fake):
    call = ToolCall("call_1", "weather__forecast", {"city": "Oslo"}, '{"city": "Oslo"}')
    openai_fake.push(openai_server.Reply(text="Sunny in Oslo."))
    result = _openai(openai_fake).generate(_request(
        "gpt-4o-mini", Message("user", "Weather in Oslo?"), Message("assistant", "", tool_calls=(call,)),
        Message("tool", "sunny, 21 C", tool_call_id="call_1"),
        Message("tool", "the server did not answer", tool_call_id="call_0", is_error=True)))

    assert result.text == "Sunny in Oslo." and result.tool_calls == ()
    sent = openai_fake.received[-1].body["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather__forecast",
                                                          "arguments": '{"city": "Oslo"}'}}]}
    assert sent[3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}
    assert sent[4] == {"role": "tool", "tool_call_id": "call_0", "content": "Error: the server did not answer"}


def test_openai_refuses_to_stream_with_tools(openai_fake):
    with pytest.raises(BadRequest, match="without streaming"):
        next(iter(_openai(openai_fake).stream(_request("gpt-4o-mini"))))
    assert openai_fake.received == []


def test_openai_compatible_gets_tools_too(openai_fake):
    openai_fake.push(tool_call_reply(("c1", "weather__forecast", {"city": "Rome"})))
    provider = build("openai-compatible", Config(api_key=openai_server.API_KEY, base_url=openai_fake.base_url))
    assert provider.generate(_request("llama3")).tool_calls[0].arguments == {"city": "Rome"}
    assert openai_fake.received[-1].body["tools"][0]["function"]["name"] == "weather__forecast"


# --- Anthropic ---------------------------------------------------------------------------------


@pytest.fixture
def anthropic_fake():
    with FakeAnthropic() as fake:
        yield fake


def _anthropic(fake: FakeAnthropic):
    return build("anthropic", Config(api_key=anthropic_server.API_KEY, base_url=fake.base_url, timeout=5))


def test_anthropic_sends_tools_and_parses_tool_use(anthropic_fake):
    anthropic_fake.push(tool_use_reply(("toolu_1", "weather__forecast", {"city": "Oslo"}), text="Let me look."))
    result = _anthropic(anthropic_fake).generate(_request("claude-haiku-4-5"))

    assert result.finish_reason == "tool_use"
    assert result.text == "Let me look."
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("toolu_1", "weather__forecast", {"city": "Oslo"})]
    assert json.loads(result.tool_calls[0].raw_arguments) == {"city": "Oslo"}
    body = anthropic_fake.received[-1].body
    assert body["tools"] == [{"name": "weather__forecast", "description": "The forecast for a city.",
                              "input_schema": FORECAST.input_schema}]


def test_anthropic_sends_tool_use_and_results_as_content_blocks(anthropic_fake):
    calls = (ToolCall("toolu_1", "weather__forecast", {"city": "Oslo"}),
             ToolCall("toolu_2", "weather__forecast", {"city": "Rome"}))
    anthropic_fake.push(anthropic_server.Reply(text="Oslo sunny; Rome unknown."))
    _anthropic(anthropic_fake).generate(_request(
        "claude-haiku-4-5", Message("user", "Oslo and Rome?"), Message("assistant", "Looking.", tool_calls=calls),
        Message("tool", "sunny", tool_call_id="toolu_1"),
        Message("tool", "timed out", tool_call_id="toolu_2", is_error=True)))

    body = anthropic_fake.received[-1].body
    assert body["system"] == "Be brief."
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather__forecast", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "toolu_2", "name": "weather__forecast", "input": {"city": "Rome"}}]}
    # Both results in one user turn: the API wants the roles to alternate.
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "timed out", "is_error": True}]}
    assert len(body["messages"]) == 3


def test_anthropic_refuses_to_stream_with_tools(anthropic_fake):
    with pytest.raises(BadRequest, match="without streaming"):
        next(iter(_anthropic(anthropic_fake).stream(_request("claude-haiku-4-5"))))
    assert anthropic_fake.received == []
