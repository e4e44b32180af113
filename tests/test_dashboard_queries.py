"""Cost & Usage queries against hand-computed totals: periods at month ends and DST changes, the
previous period, every filter, the rollup path against the raw rows, cached-token savings,
drill-down and export. The warehouse is the real one (``analytics.warehouse.connect``) over
ledger rows written through the engine, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from analytics import figures, queries, warehouse
from analytics.queries import UNASSIGNED, Filters, period
from engine import accounts, clients, dashboards, db, pricing, projects, usage
from engine.config import get_settings
from engine.dashboards import View
from engine.errors import InvalidInput, PermissionDenied
from engine.permissions import Actor
from tests.factories import PASSWORD, member

LONDON = "Europe/London"
NOW = datetime(2026, 4, 2, 12, 30, tzinfo=UTC)  # 13:30 in London (BST); a Thursday


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- periods (pure) -------------------------------------------------------------------------


def test_last_7_days_are_local_calendar_days_compared_with_the_7_before_cut_at_the_same_time():
    p = period("7d", LONDON, NOW)
    assert (p.first, p.last) == (date(2026, 3, 27), date(2026, 4, 2))
    assert p.start == at("2026-03-27T00:00:00")  # GMT until 29 March
    assert p.end == NOW
    assert p.previous_start == at("2026-03-20T00:00:00")
    # 6 days and 13.5 wall-clock hours into the period; a DST change fell inside it, not before.
    assert p.previous_end == at("2026-03-26T13:30:00")
    assert p.grain == "day" and p.days == 7


def test_month_to_date_starts_at_local_midnight_and_the_previous_month_is_cut_like_for_like():
    p = period("month", LONDON, NOW)
    assert (p.first, p.last) == (date(2026, 4, 1), date(2026, 4, 30))
    assert p.start == at("2026-03-31T23:00:00")  # midnight BST
    assert p.previous_start == at("2026-03-01T00:00:00")
    assert p.previous_end == at("2026-03-02T13:30:00")  # 1 day 13.5 h into March, on March's clock (GMT)


def test_month_end_caps_the_previous_period_at_this_ones_start():
    # 31 March: 30 days in; February has 28, so the comparison is all of February.
    p = period("month", "UTC", at("2026-03-31T18:00:00"))
    assert p.previous_start == at("2026-02-01T00:00:00")
    assert p.previous_end == p.start == at("2026-03-01T00:00:00")
    # Last day of the year rolls over to January's month.
    p = period("month", "UTC", at("2026-12-31T23:59:59"))
    assert (p.first, p.last, p.previous_first) == (date(2026, 12, 1), date(2026, 12, 31), date(2026, 11, 1))


def test_quarters_and_timezones_at_the_turn_of_the_year():
    # 03:00 UTC on 1 January is still 31 December in New York: Q4 of the year before.
    p = period("quarter", "America/New_York", at("2026-01-01T03:00:00"))
    assert (p.first, p.last) == (date(2025, 10, 1), date(2025, 12, 31))
    assert p.start == at("2025-10-01T04:00:00")  # EDT
    assert p.previous_first == date(2025, 7, 1)
    p = period("quarter", "UTC", at("2026-01-01T03:00:00"))
    assert (p.first, p.previous_first) == (date(2026, 1, 1), date(2025, 10, 1))


def test_today_on_the_day_the_clocks_go_forward():
    now = at("2026-03-29T12:00:00")  # 13:00 BST; the day began at 00:00 GMT and lost an hour
    p = period("today", LONDON, now)
    assert (p.start, p.end, p.grain) == (at("2026-03-29T00:00:00"), now, "hour")
    # 13 wall-clock hours in: yesterday until 13:00 GMT.
    assert (p.previous_start, p.previous_end) == (at("2026-03-28T00:00:00"), at("2026-03-28T13:00:00"))
    assert queries.offset_changes(LONDON, p.start, p.end) == [(p.start, 0), (at("2026-03-29T01:00:00"), 3600)]


def test_custom_periods_compare_with_the_same_number_of_days_before_and_stop_at_now():
    p = period("custom", "UTC", NOW, date(2026, 3, 10), date(2026, 3, 12))
    assert (p.start, p.end) == (at("2026-03-10T00:00:00"), at("2026-03-13T00:00:00"))
    assert (p.previous_start, p.previous_end) == (at("2026-03-07T00:00:00"), at("2026-03-10T00:00:00"))
    future = period("custom", "UTC", NOW, date(2026, 4, 1), date(2026, 5, 1))
    assert future.end == NOW
    with pytest.raises(ValueError, match="must not be after"):
        period("custom", "UTC", NOW, date(2026, 3, 12), date(2026, 3, 10))
    with pytest.raises(ValueError, match="both"):
        period("custom", "UTC", NOW)
    with pytest.raises(ValueError, match="Unknown period"):
        period("fortnight", "UTC", NOW)


def test_a_repeated_hour_is_one_bucket_covering_both_occurrences():
    p = period("today", LONDON, at("2026-10-25T12:00:00"))  # clocks went back at 02:00 BST = 01:00 UTC
    f = Filters(p)
    assert queries.bucket_bounds(f, datetime(2026, 10, 25, 1)) == (at("2026-10-25T00:00:00"), at("2026-10-25T02:00:00"))
    assert queries.bucket_bounds(f, datetime(2026, 10, 25, 3)) == (at("2026-10-25T03:00:00"), at("2026-10-25T04:00:00"))


# --- a workspace with hand-made rows --------------------------------------------------------

# (name, created_at UTC, cost, fields); see test_totals for which period each belongs to.
ROWS = (
    ("A", "2026-03-31T23:30:00", "1.00", dict(project=0, user=0, provider="openai", model="gpt-4o-mini",
                                                tags=["support"], input_tokens=1000, output_tokens=200, latency_ms=400)),
    ("B", "2026-03-31T22:59:59", "2.00", dict(project=0, user=0, provider="openai", model="gpt-4o-mini",
                                                tags=["support"], input_tokens=10, output_tokens=1, latency_ms=100)),
    ("C", "2026-03-01T00:00:00", "0.50", dict(project=1, user=1, provider="anthropic", model="claude-sonnet-4-0",
                                                tags=["research"], input_tokens=300, output_tokens=30, latency_ms=900)),
    ("D", "2026-03-02T13:29:59", "0.25", dict(project=0, user=0, provider="openai", model="gpt-4o-mini",
                                                status="error", input_tokens=0, output_tokens=0, latency_ms=150)),
    ("E", "2026-03-02T13:30:00", "4.00", dict(project=0, user=0, provider="openai", model="gpt-4o-mini")),
    ("F", "2026-04-02T10:59:59", "0.1234567891", dict(project=1, user=1, provider="anthropic", model="claude-sonnet-4-0",
                                                        tags=["research", "finance"], input_tokens=5000, output_tokens=700,
                                                        latency_ms=2000)),
    ("G", "2026-04-02T12:29:59", "0.0000000001", dict(project=None, user=None, provider="gemini", model="gemini-2.5-flash",
                                                        kind="image", status="timeout", latency_ms=60000)),
    ("H", "2026-04-02T12:30:00", "9.00", dict(project=0, user=0, provider="openai", model="gpt-4o-mini")),
    ("I", "2026-04-02T12:00:00", None, dict(project=1, user=0, provider="mistral", model="my-finetune", priced=False,
                                             workflow_run_id=77, input_tokens=50, output_tokens=5, latency_ms=700)),
)


@pytest.fixture
def ws(database, tmp_path, monkeypatch):
    """A London workspace with two clients' projects, two people, the ROWS above, and a stranger's row."""
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    user, workspace = accounts.create_first_owner("owner@example.com", "Olivia Owner", PASSWORD, "Acme", LONDON)
    boss = Actor(user.id, workspace.id)
    colleague = member(boss, "ed@example.com", "editor")
    north = clients.create_client(boss, "Northwind")
    south = clients.create_client(boss, "Southwind")
    ids = [projects.create_project(boss, "Support bot", client_id=north.id).id,
           projects.create_project(boss, "Research desk", client_id=south.id).id]
    people = [boss.user_id, colleague.user_id]
    elsewhere = accounts.create_workspace(boss.user_id, "Elsewhere")
    with db.transaction() as s:
        for name, when, cost, fields in ROWS:
            fields = dict(fields)
            project, person = fields.pop("project"), fields.pop("user")
            usage.record(s, workspace_id=workspace.id, created_at=at(when), cost=None if cost is None else Decimal(cost),
                         project_id=None if project is None else ids[project],
                         user_id=None if person is None else people[person], **fields)
        usage.record(s, workspace_id=elsewhere.id, created_at=at("2026-04-02T09:00:00"), cost=Decimal("100"),
                     provider="openai", model="gpt-4o-mini", input_tokens=1, output_tokens=1, latency_ms=1)
    yield dict(actor=boss, colleague=colleague, projects=ids, people=people, clients=[north.id, south.id],
               workspace=workspace.id)
    get_settings.cache_clear()


def month(ws) -> Filters:
    return Filters(period("month", LONDON, NOW))


def test_totals_and_the_previous_period_to_the_cent(ws):
    con = warehouse.connect(ws["workspace"])
    result = queries.totals(con, month(ws))
    # Current (local April, until 12:30 UTC on the 2nd): A, F, G, I. Not B (31 March locally), not H (= now).
    now = result.current
    assert now.spend == Decimal("1.1234567892")
    assert (now.calls, now.tokens, now.errors, now.unpriced) == (4, 1200 + 5700 + 55, 1, 1)
    # Successful calls only, 400, 700 and 2000 ms: nearest-rank percentiles, within 1%.
    assert now.p50_ms == pytest.approx(700, rel=0.01) and now.p95_ms == pytest.approx(2000, rel=0.01)
    assert now.cost_per_call == Decimal("1.1234567892") / 4 and now.error_rate == 0.25
    # Previous: 1 March 00:00 to 2 March 13:30 (the same 1 day 13.5 h): C and D, not E.
    before = result.previous
    assert (before.spend, before.calls, before.errors, before.tokens) == (Decimal("0.75"), 2, 1, 330)
    assert before.p50_ms == before.p95_ms == pytest.approx(900, rel=0.01)


FILTER_CASES = {  # filter → names of the April rows that match
    "project 0": ({"project_id": 0}, {"A"}),
    "project 1": ({"project_id": 1}, {"F", "I"}),
    "no project": ({"project_id": UNASSIGNED}, {"G"}),
    "client south": ({"client_id": 1}, {"F", "I"}),
    "provider": ({"provider": "anthropic"}, {"F"}),
    "model": ({"model": "gemini-2.5-flash"}, {"G"}),
    "user 1": ({"user_id": 1}, {"F"}),
    "no user": ({"user_id": UNASSIGNED}, {"G"}),
    "kind": ({"kind": "image"}, {"G"}),
    "tag": ({"tag": "finance"}, {"F"}),
    "status": ({"status": "timeout"}, {"G"}),
    "workflow run": ({"workflow_run_id": 77}, {"I"}),
    "nothing": ({"provider": "nobody"}, set()),
}


def test_each_filter(ws):
    con = warehouse.connect(ws["workspace"])
    for case, (fields, names) in FILTER_CASES.items():
        fields = dict(fields)
        for key, table in (("project_id", ws["projects"]), ("user_id", ws["people"]), ("client_id", ws["clients"])):
            if key in fields and fields[key] != UNASSIGNED:
                fields[key] = table[fields[key]]
        f = Filters(period("month", LONDON, NOW), **fields)
        expected = sum((Decimal(c) for n, _, c, _ in ROWS if n in names and c is not None), Decimal(0))
        got = queries.totals(con, f).current
        assert (got.spend, got.calls) == (expected, len(names)), case
        listed = queries.rows(con, f, 50)
        assert listed.total == queries.count_rows(con, f) == len(names), case
        assert sum((c for c in listed.frame["cost"].to_list() if c is not None), Decimal(0)) == expected, case


def test_spend_over_time_buckets_by_local_day_and_hour(ws):
    con = warehouse.connect(ws["workspace"])
    days = queries.spend_over_time(con, month(ws), "provider")
    assert days.select("bucket", "provider", "spend", "calls").rows() == [
        (datetime(2026, 4, 1), "openai", Decimal("1.0000000000"), 1),  # A: 23:30 UTC on 31 March
        (datetime(2026, 4, 2), "anthropic", Decimal("0.1234567891"), 1),
        (datetime(2026, 4, 2), "gemini", Decimal("1E-10"), 1),
        (datetime(2026, 4, 2), "mistral", Decimal(0), 1),
    ]
    today = Filters(period("today", LONDON, NOW))
    hours = queries.spend_over_time(con, today, "model")
    assert hours.select("bucket", "model").rows() == [
        (datetime(2026, 4, 2, 11), "claude-sonnet-4-0"),  # F at 10:59:59 UTC is 11:59:59 BST
        (datetime(2026, 4, 2, 13), "gemini-2.5-flash"),
        (datetime(2026, 4, 2, 13), "my-finetune"),
    ]


def test_a_half_hour_timezone_buckets_its_own_days(cached):
    # Kolkata is UTC+5:30: its day starts at 18:30 UTC, in the middle of an hour of the rollup.
    write(cached, ("2026-04-01T18:29:00", "openai", "gpt-4o", 0, 0), ("2026-04-01T18:31:00", "openai", "gpt-4o", 0, 0))
    con = warehouse.connect(cached.workspace_id)
    days = queries.spend_over_time(con, Filters(period("7d", "Asia/Kolkata", NOW)), "provider")
    assert days.select("bucket", "calls").rows() == [(datetime(2026, 4, 1), 1), (datetime(2026, 4, 2), 1)]


def test_comparison_top_and_options(ws):
    con = warehouse.connect(ws["workspace"])
    f = month(ws)
    by_provider = queries.comparison(con, f, "provider")
    assert by_provider["provider"].to_list() == ["openai", "anthropic", "gemini", "mistral"]
    openai = by_provider.row(0, named=True)
    assert openai["spend"] == Decimal(1) and openai["tokens"] == 1200
    assert openai["cost_per_1k_tokens"] == (Decimal(1) * 1000 / 1200).quantize(Decimal("1e-10"))
    assert openai["p50_ms"] == pytest.approx(400, rel=0.01) and openai["error_rate"] == 0.0
    mistral = by_provider.row(3, named=True)
    assert mistral["unpriced"] == 1 and mistral["spend"] == 0
    gemini = by_provider.row(2, named=True)
    assert gemini["error_rate"] == 1.0 and gemini["p50_ms"] is None and gemini["cost_per_1k_tokens"] is None

    top = {d: queries.top(con, f, d).select("label", "spend", "calls").rows() for d in queries.TOP_DIMENSIONS}
    assert top["project"] == [("Support bot", Decimal(1), 1), ("Research desk", Decimal("0.1234567891"), 2),
                              ("Not charged to a project", Decimal("1E-10"), 1)]
    assert top["user"] == [("Olivia Owner", Decimal(1), 2), ("Ed", Decimal("0.1234567891"), 1),
                           ("No user (API key)", Decimal("1E-10"), 1)]
    assert top["tag"] == [("support", Decimal(1), 1), ("finance", Decimal("0.1234567891"), 1),
                          ("research", Decimal("0.1234567891"), 1)]
    assert top["workflow_run"] == [("Run #77", Decimal(0), 1)]
    with pytest.raises(ValueError):
        queries.top(con, f, "prompt")

    opts = queries.options(con)
    assert opts.providers == ["anthropic", "gemini", "mistral", "openai"]
    assert opts.tags == ["finance", "research", "support"] and opts.statuses == ["ok", "error", "timeout"]
    assert set(opts.projects.values()) == {"Support bot", "Research desk"} and opts.has_usage
    assert "gpt-4o-mini" in opts.models and opts.kinds == ["image", "text"]


def test_the_rollup_answers_exactly_what_the_raw_rows_do(ws, monkeypatch):
    """Whole hours come from the hourly rollup (of the tail, then of the exported files), the rest from rows."""

    def everything():
        con = warehouse.connect(ws["workspace"])
        out = []
        for key in ("month", "7d", "today", "quarter"):
            f = Filters(period(key, LONDON, NOW))
            out += [queries.totals(con, f), queries.spend_over_time(con, f, "model").rows(),
                    queries.comparison(con, f, "model").rows(), queries.cached_usage(con, f).rows(),
                    *[queries.top(con, f, d).rows() for d in queries.TOP_DIMENSIONS]]
        return out

    before = everything()
    assert warehouse.refresh(settle=timedelta(0)).rows == len(ROWS) + 1
    assert everything() == before
    with monkeypatch.context() as m:
        real = queries._facts
        m.setattr(queries, "_facts", lambda *a, **k: real(*a, **{**k, "hourly": False}))  # rows only
        assert everything() == before
    with monkeypatch.context() as m:  # percentiles from the full histogram, never the coarse ones
        m.setattr(queries, "_latency_source", lambda *a: "ledger_latency_daily")
        assert everything() == before


@pytest.mark.parametrize("exported", [False, True])
def test_newest_rows_and_their_count_match_a_scan_of_every_row(ws, exported):
    """A page of rows reads only the newest hours that hold it, and the count comes from the rollup."""
    if exported:
        warehouse.refresh(settle=timedelta(0))
    con = warehouse.connect(ws["workspace"])
    views = [{}, {"provider": "openai"}, {"project_id": ws["projects"][1]}, {"workflow_run_id": 77}, {"cached": True}]
    for key in ("today", "7d", "month", "quarter"):
        for narrowing in views:
            f = replace(Filters(period(key, LONDON, NOW)), **narrowing)
            where = " AND ".join(["created_at >= $lo", "created_at < $hi",
                                  *(f"{c} = ${c}" for c in narrowing if c != "cached")]
                                 + (["(cached_input_tokens > 0 OR cache_write_tokens > 0)"] if "cached" in narrowing else []))
            params = {"lo": f.period.start.replace(tzinfo=None), "hi": f.period.end.replace(tzinfo=None),
                      **{c: v for c, v in narrowing.items() if c != "cached"}}
            everything = [i for (i,) in con.execute(
                f"SELECT id FROM ledger WHERE {where} ORDER BY created_at DESC, id DESC", params).fetchall()]
            for limit, offset in ((1, 0), (2, 1), (3, 0), (2, 3), (50, 0)):
                page = queries.rows(con, f, limit, offset)
                assert page.frame["id"].to_list() == everything[offset:offset + limit], (key, narrowing, limit, offset)
                assert page.total == len(everything)


def test_a_workspace_sees_only_its_own_rows_and_viewers_may_read(ws):
    viewer = member(ws["actor"], "val@example.com", "viewer")
    with dashboards.open_dashboard(viewer) as board:
        summary = board.summary(board.filters(View("month"), NOW))
    assert summary.totals.current.spend == Decimal("1.1234567892")
    stranger = Actor(ws["actor"].user_id, ws["workspace"] + 1000)
    with pytest.raises(PermissionDenied):
        with dashboards.open_dashboard(stranger):
            pass


def test_drill_down_narrows_to_the_rows_behind_a_bar(ws):
    f = month(ws)
    con = warehouse.connect(ws["workspace"])
    day_bar = {"customdata": ['{"bucket": "2026-04-02T00:00:00", "provider": "anthropic"}']}
    narrowed, fields = dashboards.drill(f, day_bar)
    assert fields == {"bucket": datetime(2026, 4, 2), "provider": "anthropic"}
    assert (narrowed.period.start, narrowed.period.end) == (at("2026-04-01T23:00:00"), NOW)
    assert queries.rows(con, narrowed, 10).frame["cost"].to_list() == [Decimal("0.1234567891")]
    project_bar = {"customdata": [f'{{"project": {UNASSIGNED}}}']}
    narrowed, _ = dashboards.drill(f, project_bar)
    assert queries.rows(con, narrowed, 10).frame["provider"].to_list() == ["gemini"]
    # What a browser sends back is not trusted: nonsense means no drill-down, not an error.
    for forged in ({}, {"customdata": ["not json"]}, {"customdata": ['{"project": "x"}']},
                   {"customdata": ['{"bucket": "yesterday"}']}, {"customdata": ['{"colour": "red"}']}):
        assert dashboards.drill(f, forged) is None


def test_rows_are_newest_first_named_local_and_paginated(ws):
    con = warehouse.connect(ws["workspace"])
    f = month(ws)
    page1, page2 = queries.rows(con, f, 3), queries.rows(con, f, 3, 3)
    assert page1.total == page2.total == 4
    assert page1.frame.height == 3 and page2.frame.height == 1
    first = page1.frame.row(0, named=True)
    assert first["provider"] == "gemini" and first["user"] is None and first["project"] is None
    assert first["created_at"].isoformat() == "2026-04-02T13:29:59+01:00"
    research = page1.frame.row(1, named=True)
    assert (research["project"], research["client"], research["user"]) == ("Research desk", "Southwind", "Olivia Owner")
    assert page1.frame["tags"].to_list()[2] == ["research", "finance"]


def test_export_formats_round_trip(ws):
    f = month(ws)
    csv = dashboards.export(ws["actor"], f, "csv")
    frame = pl.read_csv(io.BytesIO(csv), schema_overrides={"cost": pl.String})
    assert frame.height == 4 and set(frame["provider"]) == {"openai", "anthropic", "gemini", "mistral"}
    assert sum(Decimal(c) for c in frame["cost"].to_list() if c) == Decimal("1.1234567892")
    assert frame.filter(pl.col("provider") == "anthropic")["tags"].to_list() == ["research, finance"]
    parquet = pl.read_parquet(io.BytesIO(dashboards.export(ws["actor"], f, "parquet")))
    assert parquet["cost"].sum() == Decimal("1.1234567892") and parquet["tags"].dtype == pl.List(pl.String)
    xlsx = dashboards.export(ws["actor"], f, "xlsx")
    assert xlsx[:2] == b"PK"  # a zip: the Office Open XML container
    with pytest.raises(InvalidInput):
        dashboards.export(ws["actor"], f, "pdf")


def test_bad_views_are_refused_with_a_message(ws):
    with dashboards.open_dashboard(ws["actor"]) as board:
        with pytest.raises(InvalidInput, match="must not be after"):
            board.filters(View("custom", date(2026, 3, 5), date(2026, 3, 1)), NOW)
        with pytest.raises(InvalidInput, match="Unknown period"):
            board.filters(View("decade"), NOW)


# --- cached-token savings -------------------------------------------------------------------


@pytest.fixture
def cached(database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    user, workspace = accounts.create_first_owner("owner@example.com", "Olivia Owner", PASSWORD, "Acme", "UTC")
    yield Actor(user.id, workspace.id)
    get_settings.cache_clear()


def write(actor: Actor, *rows: tuple[str, str, str, int, int]) -> None:
    with db.transaction() as s:
        for when, provider, model, cached_tokens, written in rows:
            usage.record(s, workspace_id=actor.workspace_id, created_at=at(when), provider=provider, model=model,
                         input_tokens=10_000, output_tokens=10, cached_input_tokens=cached_tokens,
                         cache_write_tokens=written, cost=Decimal("0.01"), latency_ms=100)


def savings(actor: Actor, now: datetime) -> dashboards.CacheSavings:
    with dashboards.open_dashboard(actor) as board:
        return board.summary(board.filters(View("today"), now)).savings


def rates(provider: str, model: str, when: str) -> pricing.Rates:
    return pricing.catalog_rates(provider, model, at(when))


def test_cache_reads_save_the_difference_to_the_input_rate_and_writes_cost_a_premium(cached):
    write(cached, ("2026-04-02T09:10:00", "openai", "gpt-4o-mini", 4096, 0),
          ("2026-04-02T09:20:00", "openai", "gpt-4o-mini", 1024, 0),
          ("2026-04-02T10:00:00", "anthropic", "claude-sonnet-4-0", 2048, 1024),
          ("2026-04-02T10:05:00", "openai", "gpt-4o", 0, 0))
    result = savings(cached, NOW)
    mini, sonnet = rates("openai", "gpt-4o-mini", "2026-04-02T09:00:00"), rates("anthropic", "claude-sonnet-4-0",
                                                                                  "2026-04-02T10:00:00")
    assert mini.input == Decimal("1.5E-7") and mini.cache_read == Decimal("7.5E-8")  # the rates this test assumes
    saved_mini = 5120 * (mini.input - mini.cache_read)
    saved_sonnet = 2048 * (sonnet.input - sonnet.cache_read)
    premium = 1024 * (sonnet.cache_write - sonnet.input)
    assert premium > 0
    assert result.saved == saved_mini + saved_sonnet
    assert result.write_premium == premium and result.net == saved_mini + saved_sonnet - premium
    assert result.cached_input_tokens == 5120 + 2048
    by_model = {r["model"]: r for r in result.by_model.iter_rows(named=True)}
    assert by_model["gpt-4o-mini"]["without_cache"] == 5120 * mini.input
    assert by_model["gpt-4o-mini"]["with_cache"] == 5120 * mini.cache_read
    assert set(by_model) == {"gpt-4o-mini", "claude-sonnet-4-0"}  # gpt-4o used no cache

    # A savings bar drills into the calls that used a cache, not every call of the model.
    write(cached, ("2026-04-02T09:30:00", "openai", "gpt-4o-mini", 0, 0))
    with dashboards.open_dashboard(cached) as board:
        f = board.filters(View("today"), NOW)
        bar = figures.cache_savings(board.summary(f).savings.by_model)
        point = {"customdata": bar.data[0].customdata[list(bar.data[0].y).index("gpt-4o-mini")]}
        narrowed, fields = dashboards.drill(f, point)
        assert fields == {"provider": "openai", "model": "gpt-4o-mini", "cached": True}
        assert board.rows(narrowed, 10).frame["cached_input_tokens"].to_list() == [1024, 4096]
        assert board.rows(replace(narrowed, cached=False), 10).total == 3


def test_a_price_that_changes_inside_an_hour_prices_each_call_at_its_own_rate(cached):
    # DeepSeek's off-peak price starts at 16:30 UTC.
    write(cached, ("2026-04-02T16:10:00", "deepseek", "deepseek-chat", 1000, 0),
          ("2026-04-02T16:50:00", "deepseek", "deepseek-chat", 3000, 0))
    peak, off_peak = rates("deepseek", "deepseek-chat", "2026-04-02T16:10:00"), rates("deepseek", "deepseek-chat",
                                                                                      "2026-04-02T16:50:00")
    assert peak != off_peak  # the case this test is about
    expected = 1000 * (peak.input - peak.cache_read) + 3000 * (off_peak.input - off_peak.cache_read)
    assert savings(cached, at("2026-04-02T20:00:00")).saved == expected


def test_a_workspace_override_applies_from_the_moment_it_takes_effect(cached):
    write(cached, ("2026-04-02T09:10:00", "openai", "gpt-4o-mini", 1000, 0),
          ("2026-04-02T09:40:00", "openai", "gpt-4o-mini", 1000, 0),
          ("2026-04-02T09:45:00", "custom", "house-model", 500, 0))
    pricing.set_override(cached, provider="openai", model="gpt-4o-mini", input_mtok="1.00", output_mtok="2",
                         cache_read_mtok="0.10", effective_from=at("2026-04-02T09:30:00"))
    mini = rates("openai", "gpt-4o-mini", "2026-04-02T09:10:00")
    result = savings(cached, NOW)
    assert result.saved == 1000 * (mini.input - mini.cache_read) + 1000 * (Decimal("0.90") / 1_000_000)
    assert result.unpriced_models == ("custom/house-model",)
