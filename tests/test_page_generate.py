"""The Generate page through AppTest, against the fake OpenAI, fal and ElevenLabs servers on 127.0.0.1."""

from __future__ import annotations

import socket
from decimal import Decimal
from functools import partial

import pytest
from sqlalchemy import select

from engine import asset_library, assets, connections, db, generation, projects, routes
from engine.config import get_settings
from engine.errors import InvalidInput, NotFound, PermissionDenied
from engine.models import LedgerEntry
from engine.router import NoRoute
from tests import pages_helpers
from tests.factories import PASSWORD, member, owner
from tests.fakes import elevenlabs_server, fal_server
from tests.fakes.openai_server import API_KEY, PNG, FakeOpenAI, Reply, error_reply
from tests.pages_helpers import errors, no_exceptions, signed_in

PAGE = "pages/generate.py"
open_page = partial(pages_helpers.open_page, PAGE, title="Generate")
GPT = "gpt-4o-mini"


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_OLLAMA_URL", closed_port())  # never a real Ollama on this machine
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    generation._cached_provider.cache_clear()
    yield owner()
    get_settings.cache_clear()


@pytest.fixture
def openai(boss):
    """The fake OpenAI, connected and routed for text."""
    with FakeOpenAI() as fake:
        c = connections.create_connection(boss, name="openai", provider_type="openai", api_key=API_KEY,
                                          base_url=fake.base_url)
        routes.add_target(boss, "text", connection_id=c.id, model=GPT)
        yield fake


def markdown(at) -> list[str]:
    return [m.value for m in at.markdown]


def estimate_line(at) -> str:
    [line] = [m for m in markdown(at) if m.startswith("**Estimated cost")]
    return line


def cents(value: Decimal) -> str:
    """How the page writes a fraction of a cent: exactly, without trailing zeros."""
    assert value < Decimal("0.01")
    return f"${value.normalize():f}"


def captions(at) -> list[str]:
    return [c.value for c in at.caption]


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def chats(fake) -> list:
    return [r for r in fake.received if r.path == "/v1/chat/completions"]


def ledger() -> list[LedgerEntry]:
    with db.read_session() as s:
        return list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))


def run(at):
    at.button(key="gen_run").click().run()
    no_exceptions(at)
    return at


def test_without_keys_it_says_so_links_to_providers_and_offers_nothing_to_run(boss):
    at = open_page()
    assert any("No provider keys yet" in i.value for i in at.info)
    [link] = at.get("page_link")
    assert (link.proto.page, link.proto.label) == ("providers", "Go to Providers")
    assert not [b for b in at.button if b.key in ("gen_run", "gen_add_ollama")]

    with FakeOpenAI() as fake:  # a key, but no model routed yet
        connections.create_connection(boss, name="openai", provider_type="openai", api_key=API_KEY,
                                      base_url=fake.base_url)
        at.run()
    assert any("No model is routed yet" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "gen_run"]


def test_a_local_ollama_is_offered_and_then_generates_unpriced(boss, monkeypatch):
    with FakeOpenAI(api_key=None, models=[{"id": "llama3.2:latest", "object": "model", "created": 1,
                                           "owned_by": "library"}]) as ollama:
        monkeypatch.setenv("METERBOOK_OLLAMA_URL", ollama.base_url.removesuffix("/v1"))
        get_settings.cache_clear()
        at = open_page()
        assert any("Ollama is running" in m for m in markdown(at))
        at.button(key="gen_add_ollama").click().run()
        no_exceptions(at)
        assert at.success[0].value == "Added local-ollama with 1 model."
        at.text_area(key="gen_prompt").input("Why is the sky blue?").run()
        # Self-hosted: no price, and its tokens are counted with an approximate tokenizer.
        assert estimate_line(at).startswith("**Estimated cost: unpriced.**")
        assert any("(approximate count)" in c.value for c in at.caption)
        ollama.push(Reply(text="Rayleigh scattering."))
        run(at)
        assert "Rayleigh scattering." in markdown(at)
        assert metrics(at)["Cost"] == "unpriced"
        [row] = ledger()
        assert (row.priced, row.cost, row.model) == (False, None, "llama3.2:latest")


def test_text_estimate_shows_before_running_follows_the_parameters_and_the_cost_shows_after(boss, openai):
    project = projects.create_project(boss, "Launch")
    at = open_page()
    [option] = [o for o in at.selectbox(key="gen_target_text").options if o.startswith("openai/")]
    assert option == "openai/gpt-4o-mini · not called yet · $0.15 in / $0.6 out per M tokens"
    assert any("Write a prompt to see what the call will cost" in c.value for c in at.caption)

    prompt = "Write a haiku about invoices."
    at.text_area(key="gen_prompt").input(prompt).run()
    request = generation.GenerationRequest(prompt=prompt)
    first = generation.estimate(request, boss)
    assert estimate_line(at) == f"**Estimated cost: at most {cents(first.cost)}**"
    assert any(c.value == f"{first.input_tokens} prompt tokens + up to 4,096 answer tokens on openai/{GPT}"
               for c in at.caption)
    assert chats(openai) == []  # estimating calls nobody

    # The estimate follows the parameters: a smaller answer budget, a system prompt.
    at.number_input(key="gen_max_tokens").set_value(100)
    at.text_area(key="gen_system").input("You are terse.")
    at.number_input(key="gen_temperature").set_value(0.2)
    at.selectbox(key="gen_project").select(project.id)
    at.text_input(key="gen_tags").input("poetry, draft")
    at.run()
    second = generation.estimate(generation.GenerationRequest(prompt=prompt, system="You are terse.", max_tokens=100),
                                 boss)
    assert second.cost < first.cost
    assert estimate_line(at) == f"**Estimated cost: at most {cents(second.cost)}**"

    openai.push(Reply(text="Numbers in a row, / paid on time.", prompt_tokens=30, completion_tokens=11))
    run(at)
    assert not errors(at)
    assert "Numbers in a row, / paid on time." in markdown(at)
    [row] = ledger()
    assert row.cost == Decimal("0.0000111")  # 30 × $0.15/M + 11 × $0.60/M
    assert metrics(at) == {"Cost": "$0.0000111", "Latency": f"{row.latency_ms:,} ms"}
    assert f"30 in / 11 out tokens · openai/{GPT}" in captions(at)
    assert (row.project_id, row.tags, row.status) == (project.id, ["poetry", "draft"], "ok")
    assert row.estimated_cost == second.cost
    body = chats(openai)[0].body
    assert body["messages"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": prompt}]
    assert (body["temperature"], body["max_completion_tokens"], body["stream"]) == (0.2, 100, True)

    # The answer is kept as a text asset of that call.
    [caption] = [c.value for c in at.caption if c.value.startswith("Saved as asset #")]
    asset_id = int(caption.removeprefix("Saved as asset #").split(".")[0])
    saved = asset_library.get_asset(boss, asset_id)
    assert (saved.kind, saved.mime, saved.prompt, saved.project_id) == ("text", "text/plain", prompt, project.id)
    assert asset_library.read_content(boss, asset_id) == b"Numbers in a row, / paid on time."


def test_a_failed_call_shows_the_providers_reason_and_retry_runs_it_again(boss, openai):
    at = open_page()
    at.text_area(key="gen_prompt").input("Hello").run()
    openai.push(error_reply(400, "The model `gpt-4o-mini` does not exist or you do not have access to it.",
                            code="model_not_found"))
    run(at)
    [message] = errors(at)
    assert message.startswith("The call did not succeed. openai/gpt-4o-mini:")
    assert "does not exist or you do not have access to it" in message
    assert not at.metric
    at.button(key="gen_retry").click().run()
    no_exceptions(at)
    assert not errors(at)
    assert "Hello from the fake OpenAI server." in markdown(at)
    assert [r.status for r in ledger()] == ["error", "ok"]
    assert ledger()[0].cost == 0  # the refused call used nothing


def test_bad_input_is_explained_near_the_fields_and_nothing_is_sent(boss, openai):
    at = open_page()
    run(at)  # no prompt
    assert errors(at) == ["Write a prompt first."]
    assert not [b for b in at.button if b.key == "gen_retry"]  # nothing a retry would fix

    at.text_area(key="gen_prompt").input("Hi")
    at.number_input(key="gen_max_tokens").set_value(2_000_000).run()
    assert errors(at) == ["Max tokens must be a whole number between 1 and 1,000,000."]

    [target] = routes.get_route(boss, "text").targets
    routes.update_target(boss, target.id, context_window=8000)
    at.number_input(key="gen_max_tokens").set_value(9000).run()
    assert errors(at) == ["Max tokens (9,000) is above the largest context window in the route (8,000 tokens). "
                          "Lower it, or choose a model with a larger window."]
    assert at.button(key="gen_run").disabled
    at.selectbox(key="gen_target_text").select(f"openai/{GPT}").run()
    assert errors(at) == [f"Max tokens (9,000) is above openai/{GPT}'s context window (8,000 tokens). Lower it, or "
                          "choose a model with a larger window."]
    assert chats(openai) == [] and ledger() == []


def test_an_image_job_shows_its_progress_then_the_image_with_its_cost(boss):
    with fal_server.FakeFal() as fal:
        c = connections.create_connection(boss, name="fal", provider_type="fal", api_key=fal_server.API_KEY,
                                          base_url=fal.base_url)
        routes.add_target(boss, "image", connection_id=c.id, model="fal-ai/flux/schnell")
        image = {"images": [{"url": fal.file("cat.png", PNG, "image/png"), "content_type": "image/png"}]}
        fal.plan(fal_server.Plan(steps=[fal_server.queued(1), fal_server.running("Loading model")], output=image))
        at = open_page()
        at.radio(key="gen_kind").set_value("image")
        at.text_area(key="gen_prompt").input("A cat in a hat").run()
        assert estimate_line(at).startswith("**Estimated cost: unpriced.**")
        run(at)
        [progress] = at.get("progress")
        assert progress.proto.text == "Waiting for fal/fal-ai/flux/schnell, position 2 in the queue…"
        assert at.button(key="gen_run").disabled and at.button(key="gen_cancel")
        at.run()  # the next poll: running, with the vendor's log
        assert at.get("progress")[0].proto.text == "fal/fal-ai/flux/schnell is working on it…"
        assert any(c.value == "Loading model" for c in at.caption)
        at.run()  # done
        no_exceptions(at)
        assert not at.get("progress") and len(at.get("image")) == 1
        assert metrics(at)["Cost"] == "unpriced" and "1 image · fal/fal-ai/flux/schnell" in captions(at)
        [row] = ledger()
        assert (row.kind, row.status, row.images) == ("image", "ok", 1)
        submitted = [r for r in fal.received if r.method == "POST"][0]
        assert submitted.body == {"prompt": "A cat in a hat", "num_images": 1,
                                  "image_size": {"width": 1024, "height": 1024}}


def test_a_queued_image_job_can_be_cancelled_and_costs_nothing(boss):
    with fal_server.FakeFal() as fal:
        c = connections.create_connection(boss, name="fal", provider_type="fal", api_key=fal_server.API_KEY,
                                          base_url=fal.base_url)
        routes.add_target(boss, "image", connection_id=c.id, model="fal-ai/flux/schnell")
        fal.plan(fal_server.Plan(steps=[fal_server.queued(3)] * 10))
        at = open_page()
        at.radio(key="gen_kind").set_value("image")
        at.text_area(key="gen_prompt").input("A slow cat").run()
        run(at)
        at.button(key="gen_cancel").click().run()
        no_exceptions(at)
        assert errors(at) == ["You cancelled the job before it finished; nothing was charged."]
        assert not at.get("progress") and not at.button(key="gen_run").disabled
        assert [r.method for r in fal.received if r.path.endswith("/cancel")] == ["PUT"]
        [row] = ledger()
        assert (row.status, row.cost) == ("cancelled", None)


def test_speech_uses_the_chosen_voice_and_plays_the_audio(boss):
    with elevenlabs_server.FakeElevenLabs() as fake:
        c = connections.create_connection(boss, name="elevenlabs", provider_type="elevenlabs",
                                          api_key=elevenlabs_server.API_KEY, base_url=fake.base_url)
        routes.add_target(boss, "speech", connection_id=c.id, model="eleven_multilingual_v2")
        at = open_page()
        at.radio(key="gen_kind").set_value("speech").run()
        at.selectbox(key="gen_voice").select("21m00Tcm4TlvDq8ikWAM")
        at.text_area(key="gen_prompt").input("Your invoice is ready.").run()
        run(at)
        assert not errors(at)
        assert len(at.get("audio")) == 1
        assert "22 characters · elevenlabs/eleven_multilingual_v2" in captions(at)
        [spoken] = [r for r in fake.received if r.method == "POST"]
        assert spoken.path.startswith("/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM?")
        [row] = ledger()
        [caption] = [c.value for c in at.caption if c.value.startswith("Saved as asset #")]
        saved = asset_library.read_content(boss, int(caption.removeprefix("Saved as asset #").split(".")[0]))
        assert saved == elevenlabs_server.audio_for("Your invoice is ready.", "21m00Tcm4TlvDq8ikWAM",
                                                         "mp3_44100_128")
        assert (row.kind, row.characters) == ("speech", 22)


def test_viewers_see_why_they_cannot_generate(boss, openai):
    member(boss, "viewer@example.com", "viewer")
    at = open_page("viewer@example.com")
    assert any("cannot run AI calls" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "gen_run"]


def test_the_overview_points_a_fresh_install_to_providers(boss):
    at = signed_in("owner@example.com", PASSWORD)
    no_exceptions(at)
    assert any("No AI provider is connected yet" in i.value for i in at.info)
    assert [link.proto.label for link in at.get("page_link") if link.proto.page == "providers"] == ["Add a provider key"]
    with FakeOpenAI() as fake:
        connections.create_connection(boss, name="openai", provider_type="openai", api_key=API_KEY,
                                      base_url=fake.base_url)
        at.run()
    assert not any("No AI provider is connected yet" in i.value for i in at.info)


def test_a_text_answer_is_saved_once_and_only_by_whoever_made_it(boss, openai):
    g = generation.generate(generation.GenerationRequest(prompt="Hi"), boss)
    first = assets.save_text(boss, g.ledger_id, g.text, "Hi")
    assert assets.save_text(boss, g.ledger_id, g.text, "Hi") == first  # a second save finds the first
    editor = member(boss, "editor@example.com", "editor")
    with pytest.raises(NotFound):
        assets.save_text(editor, g.ledger_id, "not mine", "Hi")
    viewer = member(boss, "viewer@example.com", "viewer")
    with pytest.raises(PermissionDenied):
        assets.save_text(viewer, g.ledger_id, g.text, "Hi")
    openai.push(error_reply(400, "Bad request."))
    with pytest.raises(NoRoute):
        generation.generate(generation.GenerationRequest(prompt="Hi"), boss)
    failed = ledger()[-1]
    with pytest.raises(InvalidInput):
        assets.save_text(boss, failed.id, "anything", "Hi")
    assert [a.id for a in asset_library.list_assets(boss).items] == [first]
