"""The Compare page through AppTest: two fake vendors on 127.0.0.1 answer through the real SDKs, side by side."""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy import select

from engine import connections, db, generation, routes
from engine.chat_models import AnswerRating
from engine.config import get_settings
from engine.models import LedgerEntry
from tests import pages_helpers
from tests.factories import member, owner
from tests.fakes import anthropic_server
from tests.fakes.openai_server import API_KEY, FakeOpenAI, Reply, error_reply
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/compare.py"
open_page = partial(pages_helpers.open_page, PAGE)
GPT, HAIKU = "openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    generation._cached_provider.cache_clear()
    yield owner()
    get_settings.cache_clear()


@pytest.fixture
def two_vendors(boss):
    """OpenAI and Anthropic connections, each pointed at its fake, with one text model each routed."""
    with FakeOpenAI() as openai_fake, anthropic_server.FakeAnthropic() as anthropic_fake:
        o = connections.create_connection(boss, name="openai", provider_type="openai", api_key=API_KEY,
                                          base_url=openai_fake.base_url)
        a = connections.create_connection(boss, name="anthropic", provider_type="anthropic",
                                          api_key=anthropic_server.API_KEY, base_url=anthropic_fake.base_url)
        routes.add_target(boss, "text", connection_id=o.id, model="gpt-4o-mini")
        routes.add_target(boss, "text", connection_id=a.id, model="claude-haiku-4-5")
        yield boss, openai_fake, anthropic_fake


def ledger() -> list[LedgerEntry]:
    with db.read_session() as s:
        return list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))


def test_without_models_the_page_says_so_and_links_to_providers(boss):
    at = open_page()
    assert any("No text model is set up" in i.value for i in at.info)
    assert [link.proto.page for link in at.get("page_link")] == ["providers"]
    assert not at.text_area and not at.multiselect  # no form to fill in


def test_two_models_answer_side_by_side_then_the_table_and_ratings(two_vendors):
    boss, openai_fake, anthropic_fake = two_vendors
    openai_fake.push(Reply(text="The blue whale.", prompt_tokens=11, completion_tokens=4))
    anthropic_fake.push(anthropic_server.Reply(text="Blue whales are the largest.", input_tokens=13,
                                               output_tokens=6))
    at = open_page()
    assert at.multiselect(key="compare_targets").value == [GPT, HAIKU]
    at.text_area(key="compare_prompt").input("What is the largest animal?")
    at.text_area(key="compare_system").input("One sentence.")
    at.button(key="compare_run").click().run()
    no_exceptions(at)
    assert not errors(at)

    texts = [m.value for m in at.markdown]
    assert "The blue whale." in texts and "Blue whales are the largest." in texts
    table = at.table[0].value
    assert list(table["Model"]) == [GPT, HAIKU] and list(table["Status"]) == ["Done", "Done"]
    assert list(table["Input tokens"]) == ["11", "13"] and list(table["Output tokens"]) == ["4", "6"]
    rows = ledger()
    assert {r.model for r in rows} == {"gpt-4o-mini", "claude-haiku-4-5"} and all(r.tags == ["compare"] for r in rows)
    by_model = {r.model: r for r in rows}
    assert table["Cost"][0] == f"${by_model['gpt-4o-mini'].cost:.10f}".rstrip("0")
    assert all(t.endswith(" s") for t in table["Time to first token"]) and all(t.endswith(" s") for t in table["Latency"])
    # both vendors were asked through their own SDKs, with the same prompt and system prompt
    [o_req] = [r for r in openai_fake.received if r.path.endswith("/chat/completions")]
    [a_req] = [r for r in anthropic_fake.received if r.path.endswith("/messages")]
    assert o_req.body["messages"][-1]["content"] == "What is the largest animal?" and o_req.body["stream"]
    assert a_req.body["system"] in ("One sentence.", [{"type": "text", "text": "One sentence."}]) and a_req.body["stream"]

    gpt_row = by_model["gpt-4o-mini"]
    at.feedback(key=f"compare_rate_{gpt_row.id}").set_value(1).run()
    no_exceptions(at)
    with db.read_session() as s:
        mark = s.scalar(select(AnswerRating))
    assert (mark.ledger_id, mark.rating, mark.source, mark.user_id) == (gpt_row.id, 1, "compare", boss.user_id)
    assert at.table[0].value.shape[0] == 2  # the results stay on the page while rating
    assert len(ledger()) == 2  # rating ran nothing


def test_a_rejected_key_fails_its_own_column_and_the_other_answers(two_vendors):
    boss, openai_fake, anthropic_fake = two_vendors
    openai_fake.push(error_reply(401, "Incorrect API key provided: sk-wrong.", code="invalid_api_key"))
    anthropic_fake.push(anthropic_server.Reply(text="Still here."))
    at = open_page()
    at.text_area(key="compare_prompt").input("hi")
    at.button(key="compare_run").click().run()
    no_exceptions(at)
    [failed] = errors(at)
    assert "Incorrect API key" in failed and API_KEY not in failed
    assert list(at.table[0].value["Status"]) == ["Failed", "Done"]
    assert "Still here." in [m.value for m in at.markdown]


def test_bad_input_is_refused_near_the_form_and_nothing_runs(two_vendors):
    boss, openai_fake, anthropic_fake = two_vendors
    at = open_page()
    at.button(key="compare_run").click().run()
    assert any("Write a prompt first" in e for e in errors(at))

    at.text_area(key="compare_prompt").input("hi")
    at.multiselect(key="compare_targets").set_value([GPT])
    at.button(key="compare_run").click().run()
    assert any("Choose 2 to 4 different models" in e for e in errors(at))

    at.multiselect(key="compare_targets").set_value([GPT, HAIKU])
    at.number_input(key="compare_max_tokens").set_value(500_000)
    at.button(key="compare_run").click().run()
    no_exceptions(at)
    assert any("context window of 128,000" in e for e in errors(at))
    assert ledger() == [] and not openai_fake.received and not anthropic_fake.received
    assert not at.table


def test_a_viewer_cannot_run_a_comparison(two_vendors):
    boss, *_ = two_vendors
    member(boss, "viewer@example.com", "viewer")
    at = open_page("viewer@example.com")
    assert any("cannot run comparisons" in i.value for i in at.info)
    assert at.button(key="compare_run").disabled
