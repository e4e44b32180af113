import json
import re
from argparse import Namespace
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import func, select

from engine import accounts, bench_demo, db, demo, demo_ledger, pricing
from engine.errors import Conflict
from engine.models import Client, LedgerEntry, Membership, Project, User, Workspace
from tests.conftest import POSTGRES_URL
from tests.factories import owner

NOW = datetime(2026, 11, 20, 16, 45, tzinfo=UTC)  # a Friday afternoon
SEED, DAYS, ROWS = 4242, 30, 3000


@pytest.fixture
def seeded(database):
    return demo.seed(seed=SEED, days=DAYS, rows=ROWS, now=NOW)


def _entries() -> list[LedgerEntry]:
    with db.read_session() as s:
        return list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))


def _generate(seed=SEED, rows=ROWS, days=DAYS, **ids):
    ids = {"workspace_id": 1, "people": (1, 2, 3, 4, 5), "projects": (1, 2, 3, 4, 5, 6), **ids}
    return demo_ledger.generate(seed, now=NOW, days=days, rows=rows, timezone=demo.TIMEZONE, **ids)


def _usage(e: LedgerEntry) -> pricing.Usage:
    return pricing.Usage(
        input_tokens=e.input_tokens, output_tokens=e.output_tokens, cached_input_tokens=e.cached_input_tokens,
        cache_write_tokens=e.cache_write_tokens, images=e.images,
    )


def test_demo_password_passes_the_password_rules():
    for email, _, _ in demo.PEOPLE:
        accounts.check_password(demo.DEMO_PASSWORD, email)


def test_seed_creates_the_team_through_the_services(seeded):
    with db.read_session() as s:
        roles = sorted(s.scalars(select(Membership.role).where(Membership.workspace_id == seeded.workspace_id)))
        workspace = s.get(Workspace, seeded.workspace_id)
        projects = list(s.scalars(select(Project).where(Project.workspace_id == seeded.workspace_id)))
        assert s.scalar(select(func.count()).select_from(User)) == 5
        assert s.scalar(select(func.count()).select_from(Client)) == 3
    assert roles == ["admin", "editor", "editor", "owner", "viewer"]
    assert (workspace.name, workspace.timezone) == ("Northwind Analytics", "Europe/London")
    assert len(projects) == 6
    assert sum(p.client_id is None for p in projects) == 1
    assert sum(p.budget_usd is not None for p in projects) >= 3
    # Set up before the first recorded call, not "today".
    assert workspace.created_at < NOW - timedelta(days=DAYS)
    assert all(p.created_at < NOW - timedelta(days=DAYS) for p in projects)

    _token, user = accounts.login(demo.DEMO_EMAIL, demo.DEMO_PASSWORD)
    assert user.email == demo.DEMO_EMAIL
    accounts.login("sam.okafor@meterbook.local", demo.DEMO_PASSWORD)
    assert demo.has_demo_user() and not demo.is_empty()
    text = seeded.describe()
    assert demo.DEMO_EMAIL in text and demo.DEMO_PASSWORD in text and "Northwind Analytics" in text
    assert f"{ROWS:,}" in text


def test_ledger_is_broad_and_inside_the_window(seeded):
    entries = _entries()
    assert len(entries) == seeded.rows == ROWS
    assert len({e.provider for e in entries}) >= 4
    assert len({(e.provider, e.model) for e in entries}) >= 10
    assert all(NOW - timedelta(days=DAYS) <= e.created_at < NOW for e in entries)
    assert {e.kind for e in entries} == {"text", "image"}
    assert all(e.images == 1 for e in entries if e.kind == "image" and e.status == "ok")
    assert ["support"] in [e.tags for e in entries]
    assert any(e.cached_input_tokens for e in entries if e.provider in ("openai", "anthropic"))
    assert {e.project_id for e in entries} == {*seeded.project_ids, None}
    assert all(e.api_key_id is None and e.workspace_id == seeded.workspace_id for e in entries)
    by_user = Counter(e.user_id for e in entries)
    assert set(by_user) == set(seeded.user_ids)
    assert 0 < by_user[seeded.user_ids[4]] < 0.05 * ROWS  # the viewer rarely calls a model
    assert all(e.latency_ms > 0 for e in entries)


def test_stored_cost_is_exactly_the_catalog_price(seeded):
    entries = _entries()
    sample = entries[::20] + [e for e in entries if e.status != "ok"]
    for e in sample:
        if e.cost is not None:
            assert e.cost == pricing.catalog_price(e.provider, e.model, _usage(e), e.created_at).total, e.id
    for e in entries:
        if e.status == "ok":
            assert e.estimated_cost >= e.cost > 0

    with db.read_session() as s:
        in_sql = s.scalar(select(func.sum(LedgerEntry.cost)))
    in_python = sum((e.cost for e in entries if e.cost is not None), Decimal(0))
    assert isinstance(in_sql, Decimal)
    assert in_sql == in_python == seeded.total_cost


def test_stored_rows_are_exactly_the_generated_rows(seeded):
    ledger = _generate(workspace_id=seeded.workspace_id, people=seeded.user_ids, projects=seeded.project_ids)
    entries = _entries()
    assert len(entries) == len(ledger)
    for i, e in enumerate(entries):
        expected = ledger.row(i)
        assert {k: getattr(e, k) for k in expected} == expected, i

    # Time-range filters in SQL agree with Python (on SQLite this depends on the stored text format).
    cutoff = NOW - timedelta(days=9, hours=5)
    with db.read_session() as s:
        in_sql = s.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.created_at >= cutoff))
    assert in_sql == sum(e.created_at >= cutoff for e in entries)


def test_sqlite_storage_format_matches_the_column_types(sqlite_database):
    demo.seed(seed=SEED, days=3, rows=50, now=NOW)
    with sqlite_database.connect() as conn:
        created, cost, tags = conn.exec_driver_sql("SELECT created_at, cost, tags FROM usage_ledger LIMIT 1").one()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", created)
    assert isinstance(cost, int) and isinstance(json.loads(tags), list)


def test_generation_is_reproducible():
    first, again = _generate(), _generate()
    assert first.fingerprint() == again.fingerprint()
    for name, values in first.arrays.items():
        assert np.array_equal(values, again.arrays[name]), name
    assert _generate(seed=SEED + 1).fingerprint() != first.fingerprint()
    assert _generate(projects=(9, 8, 7, 6, 5, 4)).fingerprint() != first.fingerprint()


def test_generator_prices_agree_with_the_catalog_everywhere():
    ledger = _generate(rows=5000)
    ledger.check_prices(samples=len(ledger))


def test_weekdays_and_office_hours_are_busier():
    ledger = _generate(rows=20_000, days=56)
    tz = ZoneInfo(demo.TIMEZONE)
    local = [(demo_ledger.EPOCH + timedelta(microseconds=us)).astimezone(tz) for us in ledger.created_us.tolist()]
    per_day = Counter(t.date() for t in local)
    full_days = sorted(per_day)[1:-1]  # the first and last are partial
    weekday = [per_day[d] for d in full_days if d.weekday() < 5]
    weekend = [per_day[d] for d in full_days if d.weekday() >= 5]
    assert np.mean(weekday) > 2 * np.mean(weekend)
    on_weekdays = [t for t in local if t.weekday() < 5]
    assert sum(8 <= t.hour < 19 for t in on_weekdays) > 0.7 * len(on_weekdays)
    # Usage grows: the last four weeks are busier than the first four.
    half = sorted(per_day)[len(per_day) // 2]
    assert sum(per_day[d] for d in per_day if d >= half) > 1.1 * sum(per_day[d] for d in per_day if d < half)


def test_failures_look_like_failures(seeded):
    entries = _entries()
    failed = [e for e in entries if e.status != "ok"]
    assert {e.status for e in failed} == {"error", "timeout"}
    assert 0.005 * ROWS < len(failed) < 0.06 * ROWS
    assert any(e.error.startswith("429") for e in failed)
    for e in failed:
        assert e.error and e.output_tokens == 0 and e.ttft_ms is None
        assert e.cost == 0 if e.status == "error" else e.cost is None
    assert all(e.error is None for e in entries if e.status == "ok")


def test_seeding_twice_is_refused_and_changes_nothing(seeded):
    with pytest.raises(Conflict, match="already exists"):
        demo.seed(seed=SEED, days=DAYS, rows=100, now=NOW)
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == ROWS
        assert s.scalar(select(func.count()).select_from(User)) == 5


def test_demo_joins_an_installation_already_in_use(database):
    owner()
    assert not demo.is_empty() and not demo.has_demo_user()
    summary = demo.seed(seed=1, days=7, rows=200, now=NOW)
    assert [a.workspace.name for a in accounts.workspaces_for(summary.user_ids[0])] == ["Northwind Analytics"]
    with db.read_session() as s:
        assert s.scalar(select(func.count()).select_from(Workspace)) == 2


def test_default_volume_is_a_small_team():
    assert 40_000 <= demo_ledger.default_rows(90) <= 60_000


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_demo_data(backend, tmp_path):
    if backend == "postgresql" and not POSTGRES_URL:
        pytest.skip("set METERBOOK_TEST_POSTGRES_URL to run the PostgreSQL half")
    url = POSTGRES_URL if backend == "postgresql" else f"sqlite:///{tmp_path / 'bench.db'}"
    result = bench_demo.run(Namespace(rows=2000, database=url, seed=None))
    assert set(result) == {"area", "backend", "rows", "seconds", "rows_per_second", "total_cost"}
    assert (result["area"], result["backend"], result["rows"]) == ("demo-data", backend, 2000)
    assert result["seconds"] > 0 and result["rows_per_second"] > 0
    assert Decimal(result["total_cost"]) > 0
    json.dumps(result)


def _snapshot(engine) -> dict[str, list[tuple]]:
    """Every row of every table, to compare a database before and after."""
    from engine.models import Base

    with engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(t.select())), key=repr) for t in Base.metadata.sorted_tables}


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("in_use", [False, True], ids=["first-start", "in-use"])
def test_a_failure_in_the_ledger_leaves_the_database_as_it_was(database, in_use):
    if in_use:
        owner()
    before = _snapshot(database)

    def fail_after_first_batch(done, total):
        assert done > 0  # rows were written in the open transaction before this
        raise _Interrupted

    with pytest.raises(_Interrupted):
        demo.seed(seed=SEED, days=DAYS, rows=ROWS, now=NOW, progress=fail_after_first_batch)
    assert _snapshot(database) == before
    # Nothing is left to block a second try.
    summary = demo.seed(seed=SEED, days=DAYS, rows=ROWS, now=NOW)
    assert summary.rows == ROWS and demo.has_demo_user()


def test_a_failure_while_making_the_team_leaves_the_database_as_it_was(database, monkeypatch):
    before = _snapshot(database)
    real = demo.project_service.create_project
    made = []

    def create_project(*args, **kwargs):
        if len(made) == 2:
            raise KeyboardInterrupt  # Ctrl-C half way through the projects
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(demo.project_service, "create_project", create_project)
    with pytest.raises(KeyboardInterrupt):
        demo.seed(seed=SEED, days=DAYS, rows=ROWS, now=NOW)
    assert len(made) == 2
    assert _snapshot(database) == before
    assert demo.is_empty()
