from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from engine import db, pricing, usage
from engine.errors import InvalidInput, PermissionDenied
from engine.models import LedgerEntry
from tests.factories import member, owner

SEPT = datetime(2026, 9, 1, tzinfo=UTC)
LINEAR_MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("gemini", "gemini-2.5-flash"), ("deepseek", "deepseek-chat")]


@settings(max_examples=200, deadline=None)
@given(
    model=st.sampled_from(LINEAR_MODELS),
    inp=st.integers(0, 500_000),
    out=st.integers(0, 100_000),
    cached_share=st.floats(0, 1),
)
def test_fast_rates_agree_with_the_catalog_exactly(model, inp, out, cached_share):
    cached = int(inp * cached_share)
    u = pricing.Usage(input_tokens=inp, output_tokens=out, cached_input_tokens=cached)
    assert pricing.catalog_price(*model, u, SEPT) == pricing._catalog_price(*model, u, SEPT)


def test_known_price_of_gpt_4o():
    # $2.50 per million input, $1.25 cached, $10 per million output.
    p = pricing.price("openai", "gpt-4o", pricing.Usage(input_tokens=1_000, output_tokens=500, cached_input_tokens=100), at=SEPT)
    assert p.total == Decimal("0.007375") and p.source == "catalog"


def test_each_component_is_priced_on_its_own_and_they_add_up_to_the_total():
    # gpt-4o: 900 uncached × $2.50/M, 100 cached × $1.25/M, 500 output × $10/M.
    p = pricing.price("openai", "gpt-4o", pricing.Usage(input_tokens=1_000, output_tokens=500, cached_input_tokens=100), at=SEPT)
    assert (p.input, p.cached_input, p.cache_write, p.output) == (
        Decimal("0.00225"), Decimal("0.000125"), Decimal(0), Decimal("0.005"))
    assert p.total == sum(p.components().values())
    assert p.version.startswith("genai-prices ")


def test_anthropic_cache_reads_and_writes_have_their_own_components():
    # claude-sonnet-4-5 (tiered, below 200k): $3/M input, $0.30/M cache read, $3.75/M cache write, $15/M output.
    u = pricing.Usage(input_tokens=10_000, cached_input_tokens=6_000, cache_write_tokens=2_000, output_tokens=1_000)
    p = pricing.catalog_price("anthropic", "claude-sonnet-4-5", u, SEPT)
    assert (p.input, p.cached_input, p.cache_write, p.output) == (
        Decimal("0.006"), Decimal("0.0018"), Decimal("0.0075"), Decimal("0.015"))
    import genai_prices
    catalog = genai_prices.calc_price(pricing._catalog_usage(u), "claude-sonnet-4-5", provider_id="anthropic",
                                      genai_request_timestamp=SEPT)
    assert p.total == catalog.total_price


def test_crossing_a_tier_reprices_every_token_of_the_call():
    # Above 200k prompt tokens Sonnet 4.5 charges $6/M input and $22.50/M output on the whole call.
    p = pricing.catalog_price("anthropic", "claude-sonnet-4-5", pricing.Usage(input_tokens=300_000, output_tokens=1_000), SEPT)
    assert (p.input, p.output) == (Decimal("1.8"), Decimal("0.0225"))


def test_tiered_models_take_the_catalogs_own_path():
    assert pricing.catalog_rates("anthropic", "claude-sonnet-4-5", SEPT) is None
    small = pricing.catalog_price("anthropic", "claude-sonnet-4-5", pricing.Usage(input_tokens=1000), SEPT)
    assert small.total == Decimal("0.003")


def test_unknown_model_is_unpriced():
    with pytest.raises(pricing.UnpricedModel, match="Settings → Prices"):
        pricing.price("openai", "no-such-model-2099", pricing.Usage(input_tokens=1))


def test_workspace_override_wins_from_its_date(database):
    boss = owner()
    u = pricing.Usage(input_tokens=2_000_000, output_tokens=1_000_000)
    pricing.set_override(boss, provider="openai-compatible", model="llama-local", input_mtok="0.10",
                         output_mtok="0.20", effective_from=SEPT)
    assert pricing.price("openai-compatible", "llama-local", u, at=SEPT, workspace_id=boss.workspace_id).total == Decimal("0.40")
    with pytest.raises(pricing.UnpricedModel):
        pricing.price("openai-compatible", "llama-local", u, at=datetime(2026, 8, 1, tzinfo=UTC), workspace_id=boss.workspace_id)
    pricing.set_override(boss, provider="openai", model="gpt-4o", input_mtok="1", output_mtok="4", effective_from=SEPT)
    assert pricing.price("openai", "gpt-4o", u, at=SEPT, workspace_id=boss.workspace_id).total == Decimal("6")
    assert pricing.price("openai", "gpt-4o", u, at=SEPT).total == Decimal("15")


def test_override_input_is_validated_and_guarded(database):
    boss = owner()
    editor = member(boss, "editor@example.com", "editor")
    with pytest.raises(InvalidInput):
        pricing.set_override(boss, provider="openai", model="x", input_mtok="cheap", output_mtok="1")
    with pytest.raises(InvalidInput):
        pricing.set_override(boss, provider="openai", model="x", input_mtok="-1", output_mtok="1")
    with pytest.raises(InvalidInput, match="under"):  # too big for a Money column: refused, not a crash
        pricing.set_override(boss, provider="openai", model="x", input_mtok="1", output_mtok="1e30")
    with pytest.raises(InvalidInput, match="64 characters"):
        pricing.set_override(boss, provider="p" * 65, model="x", input_mtok="1", output_mtok="1")
    with pytest.raises(PermissionDenied):
        pricing.set_override(editor, provider="openai", model="x", input_mtok="1", output_mtok="1")
    assert pricing.list_overrides(boss) == []


@settings(max_examples=25, deadline=None)
@given(st.lists(st.decimals(min_value=0, max_value=1000, places=10, allow_nan=False), min_size=1, max_size=30))
def check_money_round_trips_and_sums_exactly_in_sql(costs):
    # Runs on whichever database the engine currently points at (set below per backend).
    with db.transaction() as s:
        s.query(LedgerEntry).delete()
        for c in costs:
            usage.record(s, workspace_id=_ws[0], provider="openai", model="gpt-4o", cost=c)
    with db.read_session() as s:
        assert s.scalar(select(func.sum(LedgerEntry.cost))) == sum(costs)
        assert sorted(s.scalars(select(LedgerEntry.cost)).all()) == sorted(costs)


_ws = [0]


def test_money_is_exact_on_each_backend(database):
    _ws[0] = owner().workspace_id
    check_money_round_trips_and_sums_exactly_in_sql()


def test_floats_are_refused_as_money(database):
    boss = owner()
    with pytest.raises(Exception, match="never float"):
        with db.transaction() as s:
            usage.record(s, workspace_id=boss.workspace_id, provider="openai", model="gpt-4o", cost=0.1)
