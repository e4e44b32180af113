"""The SQL sandbox: a user's query reads its own workspace's views and cannot reach anything else,
change any setting, or outgrow its time and memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from analytics import SqlError, sandbox, sandbox_worker, warehouse
from engine import accounts
from engine.permissions import Actor
from tests.factories import PASSWORD, owner
from tests.test_warehouse import add_rows, ledger_totals


@pytest.fixture
def two_workspaces(sqlite_database, tmp_path):
    mine = owner("me@example.com", "Mine")
    user = accounts.create_user("them@example.com", "Them", PASSWORD)
    theirs = Actor(user.id, accounts.create_workspace(user.id, "Theirs").id)
    add_rows(mine.workspace_id, mine.user_id, 50, seed=1)
    add_rows(theirs.workspace_id, theirs.user_id, 20, seed=2, cost=Decimal("999"))
    warehouse.refresh(root=tmp_path, settle=timedelta(0))
    add_rows(mine.workspace_id, mine.user_id, 2, seed=3, created_at=datetime.now(UTC))  # not exported yet
    return mine, theirs, tmp_path


def run(workspace_id, sql, root, **limits):
    return sandbox.run_user_sql(workspace_id, sql, root=root, **limits)


def test_a_query_reads_its_workspace_views_fresh_and_capped(two_workspaces):
    mine, _, root = two_workspaces

    result = run(mine.workspace_id, "SELECT count(*) AS calls, sum(cost) AS spend FROM ledger", root)

    count, spend, *_ = ledger_totals(mine.workspace_id)
    assert result.columns == ["calls", "spend"]
    assert result.rows.rows() == [(count, spend)]
    assert (result.row_count, result.truncated) == (1, False)
    capped = run(mine.workspace_id, "SELECT id FROM ledger ORDER BY id", root, row_cap=7)
    assert (capped.row_count, capped.truncated, capped.rows.height) == (7, True, 7)
    daily = run(mine.workspace_id, "SELECT sum(calls) AS n FROM ledger_daily", root)
    assert daily.rows.item() == count


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_json('/proc/self/environ')",
    "ATTACH '{out}/other.db' AS other",
    "COPY (SELECT * FROM ledger) TO '{out}/ledger.csv'",
    "INSERT INTO ledger SELECT * FROM ledger",
    "CREATE TABLE keep AS SELECT 1",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT getenv('HOME')",
    "PRAGMA database_list",
    "SELECT 1; SELECT 2",
])
def test_refused(two_workspaces, tmp_path_factory, sql):
    mine, _, root = two_workspaces
    out = tmp_path_factory.mktemp("escape")
    with pytest.raises(SqlError) as refused:
        run(mine.workspace_id, sql.format(out=out), root)
    assert str(refused.value).strip()
    assert not list(out.iterdir())


def test_another_workspace_is_out_of_reach(two_workspaces):
    mine, theirs, root = two_workspaces
    their_file = next(f["path"] for f in warehouse.read_manifest(root)["files"] if f["workspace_id"] == theirs.workspace_id)

    seen = run(mine.workspace_id, "SELECT count(*) AS n FROM ledger WHERE workspace_id <> "
                                  f"{mine.workspace_id} OR cost = 999", root)
    assert seen.rows.item() == 0
    for sql in (f"SELECT * FROM read_parquet('{root / their_file}')",
                f"SELECT * FROM read_parquet('{root}/ledger/**/*.parquet')",
                f"SELECT * FROM read_parquet('{root}/ledger/workspace={mine.workspace_id}/../workspace={theirs.workspace_id}/**/*.parquet')",
                f"SELECT * FROM read_text('{root}/manifest.json')"):
        with pytest.raises(SqlError, match="only this workspace"):
            run(mine.workspace_id, sql, root)


def test_a_locked_connection_cannot_be_reopened_or_see_python_objects(two_workspaces):
    mine, _, root = two_workspaces
    secret = pa.table({"password": ["hunter2"]})  # noqa: F841 - what a replacement scan would find
    con = sandbox_worker.locked_connection(warehouse.snapshot(mine.workspace_id, root=root), memory_mb=256, threads=1)

    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM secret")
    for sql in ("SET enable_external_access = true", "SET memory_limit = '64GB'", "SET temp_directory = '/tmp'",
                "SET allowed_directories = ['/']", "SET autoinstall_known_extensions = true"):
        with pytest.raises(duckdb.Error):
            con.execute(sql)
    for sql in ("INSTALL httpfs", "SELECT * FROM read_csv('/etc/passwd')",
                f"COPY (SELECT 1) TO '{root}/x.csv'", f"ATTACH '{root}/x.db'"):
        with pytest.raises(duckdb.PermissionException):
            con.execute(sql)
    assert not list(root.glob("x.*"))
    assert con.execute("SELECT count(*) FROM ledger").fetchone()[0] == ledger_totals(mine.workspace_id)[0]


@pytest.mark.parametrize("bomb", [
    "SELECT length(repeat('x', 1500000000))",  # one allocation DuckDB's own limit does not count
    "SELECT list(repeat('x', 1000)) FROM range(100000000)",  # DuckDB's memory limit catches this one
])
def test_a_memory_bomb_stops_only_its_worker(two_workspaces, bomb):
    mine, _, root = two_workspaces
    with pytest.raises(SqlError, match="more than its 256 MB"):
        run(mine.workspace_id, bomb, root, memory_mb=256)
    assert run(mine.workspace_id, "SELECT 42 AS answer", root).rows.item() == 42


def test_a_runaway_query_is_stopped_at_the_time_limit(two_workspaces):
    mine, _, root = two_workspaces
    with pytest.raises(SqlError, match="stopped after 1 s"):
        run(mine.workspace_id, "SELECT count(*) FROM range(1000000000000)", root, timeout_s=1)


def test_a_runaway_recursive_query_is_stopped(two_workspaces):
    mine, _, root = two_workspaces
    endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    with pytest.raises(SqlError, match="was stopped") as stopped:
        run(mine.workspace_id, endless, root, timeout_s=2, memory_mb=256)
    assert "time limit" in str(stopped.value) or "memory" in str(stopped.value)


def test_nested_and_exact_values_come_back_intact(two_workspaces):
    mine, _, root = two_workspaces
    result = run(mine.workspace_id, "SELECT [1, 2] AS list, {'a': 'b'} AS struct, "
                                    "CAST('0.0000000001' AS DECIMAL(38,10)) AS money", root)
    assert result.rows.rows() == [([1, 2], {"a": "b"}, Decimal("0.0000000001"))]
