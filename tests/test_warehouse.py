"""The Parquet warehouse: exact totals after normal, repeated and interrupted exports; the fresh
tail; month partitions at their edges; one workspace per connection; columns added later."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select

from analytics import warehouse
from analytics.views import LATENCY_COARSE
from engine import accounts, db
from engine import clients as client_service
from engine import projects as project_service
from engine.dbtypes import to_money
from engine.models import Client, LedgerEntry, Project, Workspace
from engine.permissions import Actor
from tests.factories import PASSWORD, member, owner

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PROVIDERS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"), ("gemini", "gemini-2.5-flash"))


def add_rows(workspace_id: int, user_id: int | None, n: int, *, seed: int = 1, start: datetime | None = None,
             project_id: int | None = None, **fixed) -> list[int]:
    """``n`` ledger rows spread over the 60 days before ``start``, with awkward money values."""
    rng = random.Random(seed)
    start = start or NOW
    rows = []
    for i in range(n):
        provider, model = PROVIDERS[i % len(PROVIDERS)]
        failed = rng.random() < 0.1
        cost = None if i % 17 == 0 else to_money(Decimal(rng.randrange(0, 10**12)).scaleb(-10))
        values = dict(
            workspace_id=workspace_id, user_id=user_id, project_id=project_id, tags=["t", f"w{i % 3}"],
            provider=provider, model=model, kind="text", input_tokens=rng.randrange(0, 50_000),
            output_tokens=rng.randrange(0, 5_000), cached_input_tokens=rng.randrange(0, 1_000),
            images=0, characters=0, seconds=Decimal("1.25") if i % 5 == 0 else None,
            estimated_cost=Decimal("0.0000000001") * (i + 1), cost=cost,
            cost_input=cost, latency_ms=rng.randrange(50, 9_000), ttft_ms=None if failed else rng.randrange(10, 900),
            status="error" if failed else "ok", error="429 rate limited" if failed else None,
            created_at=start - timedelta(seconds=rng.randrange(0, 60 * 86_400), microseconds=rng.randrange(10**6)),
            request_id=f"req-{seed}-{i}", priced=not failed,
        )
        values.update(fixed)
        rows.append(LedgerEntry(**values))
    with db.transaction() as s:
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def ledger_totals(workspace_id: int) -> tuple:
    with db.read_session() as s:
        q = select(func.count(), func.sum(LedgerEntry.cost), func.sum(LedgerEntry.estimated_cost),
                   func.sum(LedgerEntry.input_tokens), func.sum(LedgerEntry.seconds))
        count, cost, estimated, tokens, seconds = s.execute(q.where(LedgerEntry.workspace_id == workspace_id)).one()
    return count, to_money(cost or 0), to_money(estimated or 0), int(tokens or 0), Decimal(seconds or 0)


def warehouse_totals(con) -> tuple:
    count, cost, estimated, tokens, seconds = con.execute(
        "SELECT count(*), sum(cost), sum(estimated_cost), sum(input_tokens), sum(seconds) FROM ledger"
    ).fetchone()
    daily = con.execute("SELECT sum(calls), sum(cost), sum(estimated_cost), sum(input_tokens) FROM ledger_daily").fetchone()
    hourly = con.execute("SELECT sum(calls), sum(cost), sum(estimated_cost), sum(input_tokens) FROM ledger_hourly").fetchone()
    assert daily == hourly == (count, cost, estimated, tokens), (daily, hourly)
    return count, to_money(cost or 0), to_money(estimated or 0), int(tokens or 0), Decimal(seconds or 0)


def other_owner(email: str, workspace: str) -> Actor:
    user = accounts.create_user(email, email.split("@")[0].title(), PASSWORD)
    return Actor(user.id, accounts.create_workspace(user.id, workspace).id)


def delete_workspace(workspace_id: int) -> None:
    with db.transaction() as s:
        for model in (LedgerEntry, Project, Client):  # RESTRICT keys; the rest cascades
            s.execute(delete(model).where(model.workspace_id == workspace_id))
        s.execute(delete(Workspace).where(Workspace.id == workspace_id))


def test_exported_rows_equal_the_ledger_to_the_last_digit(database, tmp_path):
    actor = owner()
    client = client_service.create_client(actor, "Bluewater")
    project = project_service.create_project(actor, "Support", client_id=client.id)
    ids = add_rows(actor.workspace_id, actor.user_id, 240, project_id=project.id)

    stats = warehouse.refresh(root=tmp_path, settle=timedelta(0), batch_rows=50)

    assert (stats.rows, stats.watermark) == (240, max(ids))
    con = warehouse.connect(actor.workspace_id, root=tmp_path)
    assert warehouse_totals(con) == ledger_totals(actor.workspace_id)
    assert con.execute("SELECT count(*) FROM ledger WHERE id > ?", [stats.watermark]).fetchone() == (0,)
    # Every column of every row, as the ORM reads it.
    names = [c.name for c in LedgerEntry.__table__.columns]
    got = {r[0]: dict(zip(names, r)) for r in con.execute(f"SELECT {', '.join(names)} FROM ledger").fetchall()}
    with db.read_session() as s:
        for entry in s.scalars(select(LedgerEntry)):
            row = got[entry.id]
            for name in names:
                want = getattr(entry, name)
                if isinstance(want, datetime):
                    want = want.astimezone(UTC).replace(tzinfo=None)
                assert row[name] == want, (entry.id, name, row[name], want)
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE ledger)").fetchall())
    assert types["cost"] == types["cost_input"] == "DECIMAL(38,10)"
    assert (types["created_at"], types["tags"], types["priced"]) == ("TIMESTAMP", "VARCHAR[]", "BOOLEAN")
    assert con.execute("SELECT * FROM projects").fetchall() == [(project.id, "Support", client.id, False)]
    assert con.execute("SELECT * FROM clients").fetchall() == [(client.id, "Bluewater")]
    assert con.execute("SELECT id, email FROM users").fetchall() == [(actor.user_id, "owner@example.com")]


@pytest.mark.parametrize("crash_at", [1, 2, 4])
def test_an_interrupted_export_neither_loses_nor_repeats_rows(database, tmp_path, monkeypatch, crash_at):
    actor = owner()
    add_rows(actor.workspace_id, actor.user_id, 200)
    real_write = warehouse._write_manifest
    writes = []

    def crash_on_the_nth_manifest(root, data):
        writes.append(1)
        if len(writes) == crash_at:
            raise OSError("power cut between writing the files and moving the watermark")
        real_write(root, data)

    monkeypatch.setattr(warehouse, "_write_manifest", crash_on_the_nth_manifest)
    with pytest.raises(OSError, match="power cut"):
        warehouse.refresh(root=tmp_path, settle=timedelta(0), batch_rows=60)
    monkeypatch.setattr(warehouse, "_write_manifest", real_write)
    on_disk = len(list((tmp_path / "ledger").rglob("*.parquet")))
    assert on_disk > len(warehouse.read_manifest(tmp_path)["files"])  # written, never listed

    warehouse.refresh(root=tmp_path, settle=timedelta(0), batch_rows=60)

    con = warehouse.connect(actor.workspace_id, root=tmp_path)
    assert warehouse_totals(con) == ledger_totals(actor.workspace_id)
    assert con.execute("SELECT count(*) = count(DISTINCT id) FROM ledger").fetchone() == (True,)
    assert warehouse.read_manifest(tmp_path)["watermark"] == con.execute("SELECT max(id) FROM ledger").fetchone()[0]


def test_repeated_exports_add_only_new_rows_and_compact_small_files(database, tmp_path, monkeypatch):
    monkeypatch.setattr(warehouse, "RETIRED_GRACE_S", 0)
    actor = owner()
    add_rows(actor.workspace_id, actor.user_id, 90, start=datetime(2026, 1, 20, tzinfo=UTC), seed=1)
    first = warehouse.refresh(root=tmp_path, settle=timedelta(0), batch_rows=20)
    assert first.rows == 90 and first.compacted > 0
    assert warehouse.refresh(root=tmp_path, settle=timedelta(0)).rows == 0
    add_rows(actor.workspace_id, actor.user_id, 30, start=datetime(2026, 1, 20, tzinfo=UTC), seed=2)
    assert warehouse.refresh(root=tmp_path, settle=timedelta(0), batch_rows=20).rows == 30

    files = warehouse.read_manifest(tmp_path)["files"]
    months = [(f["workspace_id"], f["month"]) for f in files]
    assert len(months) == len(set(months)), "each month's small files end up in one"
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")}
    assert on_disk == {p for f in files for p in (f["path"], f["rollup"], f["latency"])}, "merged-away files are deleted"
    con = warehouse.connect(actor.workspace_id, root=tmp_path)
    assert warehouse_totals(con) == ledger_totals(actor.workspace_id)


def test_rows_written_after_the_export_show_at_once(database, tmp_path):
    actor = owner()
    add_rows(actor.workspace_id, actor.user_id, 40)
    warehouse.refresh(root=tmp_path, settle=timedelta(0))
    before = warehouse_totals(warehouse.connect(actor.workspace_id, root=tmp_path))

    add_rows(actor.workspace_id, actor.user_id, 1, seed=9, cost=Decimal("0.1234567891"), created_at=datetime.now(UTC))

    con = warehouse.connect(actor.workspace_id, root=tmp_path)
    after = warehouse_totals(con)
    assert after == ledger_totals(actor.workspace_id)
    assert (after[0], after[1]) == (before[0] + 1, before[1] + Decimal("0.1234567891"))


def test_recent_rows_wait_out_the_settle_time_but_stay_visible(database, tmp_path):
    actor = owner()
    old = add_rows(actor.workspace_id, actor.user_id, 5)
    add_rows(actor.workspace_id, actor.user_id, 3, seed=2, created_at=datetime.now(UTC))

    stats = warehouse.refresh(root=tmp_path, settle=timedelta(minutes=5))

    assert (stats.rows, stats.watermark) == (5, max(old))
    con = warehouse.connect(actor.workspace_id, root=tmp_path)
    assert warehouse_totals(con) == ledger_totals(actor.workspace_id)


def test_months_split_at_utc_midnight_whatever_zone_the_time_was_written_in(database, tmp_path):
    actor = owner()
    plus5 = timezone(timedelta(hours=5))
    edges = [
        datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 2, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 2, 1, 4, 30, tzinfo=plus5),  # 23:30 on 31 January in UTC
        datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 0, 0, 1, tzinfo=UTC),
    ]
    for i, at in enumerate(edges):
        add_rows(actor.workspace_id, actor.user_id, 1, seed=i, created_at=at, cost=Decimal(i + 1))

    warehouse.refresh(root=tmp_path, settle=timedelta(0))

    by_month = {}
    for f in warehouse.read_manifest(tmp_path)["files"]:
        by_month[f["month"]] = by_month.get(f["month"], 0) + f["rows"]
    assert by_month == {"2026-01": 2, "2026-02": 2, "2026-03": 1}
    con = warehouse.connect(actor.workspace_id, root=tmp_path)
    assert con.execute("SELECT created_at FROM ledger ORDER BY created_at").fetchall() == [
        (e.astimezone(UTC).replace(tzinfo=None),) for e in sorted(edges)
    ]
    days = con.execute("SELECT day, sum(calls), sum(cost) FROM ledger_daily GROUP BY day ORDER BY day").fetchall()
    assert [(str(d), n, c) for d, n, c in days] == [
        ("2026-01-31", 2, Decimal("4.0000000000")), ("2026-02-01", 1, Decimal("2.0000000000")),
        ("2026-02-28", 1, Decimal("4.0000000000")), ("2026-03-01", 1, Decimal("5.0000000000")),
    ]


def test_a_connection_sees_one_workspace_only(database, tmp_path):
    alice = owner("alice@example.com", "Alice Co")
    bob = other_owner("bob@example.com", "Bob Co")
    colleague = member(alice, "carol@example.com", "editor")
    project_service.create_project(bob, "Bob's secret project")
    client_service.create_client(bob, "Bob's client")
    add_rows(alice.workspace_id, alice.user_id, 30, seed=1)
    add_rows(bob.workspace_id, bob.user_id, 30, seed=2, cost=Decimal("1000"))
    warehouse.refresh(root=tmp_path, settle=timedelta(0))
    add_rows(bob.workspace_id, bob.user_id, 5, seed=3, cost=Decimal("1000"))  # in the tail

    con = warehouse.connect(alice.workspace_id, root=tmp_path)

    assert warehouse_totals(con) == ledger_totals(alice.workspace_id)
    assert con.execute("SELECT DISTINCT workspace_id FROM ledger").fetchall() == [(alice.workspace_id,)]
    assert con.execute("SELECT DISTINCT workspace_id FROM ledger_daily").fetchall() == [(alice.workspace_id,)]
    assert con.execute("SELECT count(*) FROM ledger WHERE cost = 1000").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM projects").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM clients").fetchone() == (0,)
    assert sorted(con.execute("SELECT id FROM users").fetchall()) == sorted([(alice.user_id,), (colleague.user_id,)])


def test_a_deleted_workspace_leaves_and_its_reused_ids_are_exported_afresh(database, tmp_path):
    keep = owner("keep@example.com", "Keep")
    add_rows(keep.workspace_id, keep.user_id, 20, seed=1)
    leaving = other_owner("gone@example.com", "Gone")
    add_rows(leaving.workspace_id, leaving.user_id, 10, seed=2, cost=Decimal("1000"))
    warehouse.refresh(root=tmp_path, settle=timedelta(0))
    delete_workspace(leaving.workspace_id)
    add_rows(keep.workspace_id, keep.user_id, 10, seed=3)  # on SQLite these take the deleted rows' ids
    newcomer = other_owner("new@example.com", "New")  # and this one the deleted workspace's id
    add_rows(newcomer.workspace_id, newcomer.user_id, 3, seed=4)

    warehouse.refresh(root=tmp_path, settle=timedelta(0))

    assert warehouse_totals(warehouse.connect(keep.workspace_id, root=tmp_path)) == ledger_totals(keep.workspace_id)
    con = warehouse.connect(newcomer.workspace_id, root=tmp_path)
    assert warehouse_totals(con) == ledger_totals(newcomer.workspace_id)
    assert con.execute("SELECT count(*) FROM ledger WHERE cost = 1000").fetchone() == (0,)


def test_files_written_before_a_column_existed_read_it_as_null(database, tmp_path, monkeypatch):
    actor = owner()
    add_rows(actor.workspace_id, actor.user_id, 10, seed=1, cost_output=Decimal("0.5"))
    all_columns = warehouse.ledger_columns()
    monkeypatch.setattr(warehouse, "ledger_columns", lambda: [c for c in all_columns if c.name != "cost_output"])
    warehouse.refresh(root=tmp_path, settle=timedelta(0))
    monkeypatch.setattr(warehouse, "ledger_columns", lambda: all_columns)  # the migration has run
    add_rows(actor.workspace_id, actor.user_id, 4, seed=2, cost_output=Decimal("0.25"))
    warehouse.refresh(root=tmp_path, settle=timedelta(0))
    add_rows(actor.workspace_id, actor.user_id, 1, seed=3, cost_output=Decimal("0.125"))  # tail

    con = warehouse.connect(actor.workspace_id, root=tmp_path)

    assert con.execute("SELECT count(*), count(cost_output), sum(cost_output) FROM ledger").fetchone() == (
        15, 5, Decimal("1.1250000000"))
    assert con.execute("SELECT sum(cost_output) FROM ledger_daily").fetchone() == (Decimal("1.1250000000"),)
    assert warehouse_totals(con) == ledger_totals(actor.workspace_id)


def test_latency_percentiles_from_the_histogram_are_within_one_percent(database, tmp_path):
    actor = owner()
    add_rows(actor.workspace_id, actor.user_id, 300, seed=1)
    warehouse.refresh(root=tmp_path, settle=timedelta(0))
    add_rows(actor.workspace_id, actor.user_id, 40, seed=2, created_at=datetime.now(UTC))  # tail

    con = warehouse.connect(actor.workspace_id, root=tmp_path)

    assert con.execute("SELECT sum(calls) FROM ledger_latency_daily").fetchone() == \
        con.execute("SELECT count(latency_ms) FROM ledger").fetchone()
    for name, keys in LATENCY_COARSE.items():  # the coarse histograms are the full one, summed
        cells = f"SELECT day, {', '.join(keys)}, latency_bucket, sum(calls) FROM {{}} GROUP BY ALL ORDER BY ALL"
        full = con.execute(cells.format("ledger_latency_daily")).fetchall()
        assert con.execute(cells.format(f"ledger_{name}")).fetchall() == full
        assert any(row[-1] > 1 for row in full)  # cells that hold several calls, or a miscount would pass
    for where in ("TRUE", "status = 'ok'", "provider = 'openai'"):
        estimate = con.execute(warehouse.latency_percentiles_sql(
            f"(SELECT * FROM ledger_latency_daily WHERE {where})", (0.5, 0.95))).fetchone()
        exact = con.execute(f"SELECT quantile_disc(latency_ms, [0.5, 0.95]) FROM ledger WHERE {where}").fetchone()[0]
        for got, want in zip(estimate, exact):
            assert abs(got - want) <= 0.011 * want, (where, estimate, exact)


def test_kept_rollups_grow_by_each_exports_new_files_and_match_a_full_read(database, tmp_path, monkeypatch):
    """After an export (and its compaction) the next connection adds only the new files' rollups to the
    tables it keeps, and answers exactly what reading every file again would."""
    monkeypatch.setattr(warehouse, "SMALL_FILE_ROWS", 50)  # so that exports of a few rows get compacted
    actor = owner()
    add_rows(actor.workspace_id, actor.user_id, 120, seed=1)
    warehouse.refresh(root=tmp_path, settle=timedelta(0))
    builds = dict(warehouse.rollup_builds)

    def figures():
        con = warehouse.connect(actor.workspace_id, root=tmp_path)
        return [con.execute(f"SELECT {cols} FROM {view} GROUP BY ALL ORDER BY ALL").fetchall() for view, cols in (
            ("ledger_hourly", "hour, provider, sum(calls), sum(cost), sum(input_tokens)"),
            ("ledger_daily", "day, model, sum(calls), sum(cost)"),
            ("ledger_latency_daily", "day, status, latency_bucket, sum(calls)"),
            ("ledger_latency_by_model", "day, model, latency_bucket, sum(calls)"),
            ("ledger_latency_overall", "day, status, latency_bucket, sum(calls)"))]

    figures()
    compacted = 0
    for seed in (2, 3, 4):
        add_rows(actor.workspace_id, actor.user_id, 30, seed=seed, start=NOW + timedelta(days=seed))
        stats = warehouse.refresh(root=tmp_path, settle=timedelta(0))
        assert stats.rows == 30
        compacted += stats.compacted
        kept = figures()
        warehouse.clear_caches()
        assert figures() == kept  # read whole from the files
        figures()  # the full read is now the base the next export extends
    assert warehouse.rollup_builds["incremental"] - builds["incremental"] >= 3
    assert compacted  # merged files that hold counted and new rows alike were among them
    assert warehouse_totals(warehouse.connect(actor.workspace_id, root=tmp_path)) == ledger_totals(actor.workspace_id)


def test_the_full_key_latency_histogram_is_built_behind_the_first_page_and_answers_the_same_meanwhile(
        database, tmp_path):
    actor = owner()
    add_rows(actor.workspace_id, actor.user_id, 200, seed=5)
    warehouse.refresh(root=tmp_path, settle=timedelta(0))
    warehouse.clear_caches()
    cells = ("SELECT day, user_id, kind, tags, status, latency_bucket, sum(calls) FROM ledger_latency_daily "
             "GROUP BY ALL ORDER BY ALL")

    def latency_source(con) -> str:
        [(sql,)] = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = '_latency'").fetchall()
        return sql

    first = warehouse.connect(actor.workspace_id, root=tmp_path)
    assert "read_parquet" in latency_source(first)  # the cold page does not wait for the biggest table
    meanwhile = first.execute(cells).fetchall()
    warehouse.wait_for_builds()
    later = warehouse.connect(actor.workspace_id, root=tmp_path)
    assert "read_parquet" not in latency_source(later)
    assert later.execute(cells).fetchall() == meanwhile
    add_rows(actor.workspace_id, actor.user_id, 20, seed=6, start=NOW + timedelta(days=1))
    warehouse.refresh(root=tmp_path, settle=timedelta(0))
    extended = warehouse.connect(actor.workspace_id, root=tmp_path)  # built on the kept one: no wait
    assert "read_parquet" not in latency_source(extended)
    assert extended.execute("SELECT sum(calls) FROM ledger_latency_daily").fetchone() == \
        extended.execute("SELECT count(latency_ms) FROM ledger").fetchone()
