"""The sidecar's job that keeps the warehouse current while the app runs, and ``python -m engine export``."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta


from analytics import warehouse
from engine.sidecar import jobs
from engine.config import PROJECT_ROOT
from tests.factories import owner
from tests.test_warehouse import add_rows, ledger_totals, warehouse_totals


def exported_up_to(root) -> int:
    return int(warehouse.read_manifest(root)["watermark"])


def test_the_sidecar_s_export_job_exports_what_is_new_each_tick(database, data_dir):
    actor = owner()
    # Older than PostgreSQL's settle time (see warehouse.refresh), so both halves export them at once.
    first = add_rows(actor.workspace_id, actor.user_id, 40, seed=1, start=datetime.now(UTC) - timedelta(minutes=5))
    export = jobs.guarded("periodic-export", jobs.export_warehouse)
    export()
    root = warehouse.warehouse_dir()
    assert exported_up_to(root) >= max(first)
    later = add_rows(actor.workspace_id, actor.user_id, 25, seed=2, start=datetime.now(UTC) - timedelta(minutes=5))
    export()
    assert exported_up_to(root) >= max(later)
    con = warehouse.connect(actor.workspace_id, root=root)
    assert warehouse_totals(con) == ledger_totals(actor.workspace_id)
    assert con.execute("SELECT count(*) FROM _tail").fetchone() == (0,)  # nothing left for pages to read from the database


def test_a_failed_export_is_logged_and_tried_again_at_the_next_tick(sqlite_database, data_dir, monkeypatch, caplog):
    actor = owner()
    rows = add_rows(actor.workspace_id, actor.user_id, 10, seed=3)
    real, calls = warehouse.refresh, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(warehouse, "refresh", flaky)
    export = jobs.guarded("periodic-export", jobs.export_warehouse)
    export()  # the failure is logged, never raised into the scheduler
    assert "runs again at its next tick" in caplog.text
    export()
    assert exported_up_to(warehouse.warehouse_dir()) >= max(rows) and len(calls) == 2


def test_the_export_command_exports_and_says_how_much(tmp_path):
    env = {"METERBOOK_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}", "METERBOOK_DATA_DIR": str(tmp_path),
           "PATH": "/usr/bin:/bin", "METERBOOK_ARGON2_PROFILE": "test"}
    seeded = subprocess.run([sys.executable, "-m", "engine", "demo-data", "--rows", "300"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    first = subprocess.run([sys.executable, "-m", "engine", "export"], cwd=PROJECT_ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Exported 300 ledger rows")
    again = subprocess.run([sys.executable, "-m", "engine", "export"], cwd=PROJECT_ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.stdout.startswith("Exported 0 ledger rows") and "up to id 300" in again.stdout
    assert (tmp_path / "warehouse" / "manifest.json").is_file()
