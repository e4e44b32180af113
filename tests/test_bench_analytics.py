"""``python -m engine bench analytics`` end to end on a small ledger: it runs and prints what the issue asks for."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.config import PROJECT_ROOT

KEYS = {"bench", "events", "export_rows_per_s", "queries", "page_cold_ms", "page_warm_ms", "oltp_same_query_ms",
        "warehouse_same_query_ms", "speedup_vs_oltp", "peak_rss_mb"}
QUERIES = {"spend_by_day_by_provider", "totals_vs_previous_period", "top_projects", "top_users", "model_comparison",
           "cached_token_savings"}


def test_the_analytics_bench_prints_one_json_line_with_every_figure():
    done = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "analytics", "--events", "20000", "--days", "10", "--repeat", "2"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert KEYS <= result.keys()
    assert (result["bench"], result["events"], result["export_rows"]) == ("analytics", 20000, 20000)
    assert QUERIES <= result["queries"].keys()
    for name, times in result["queries"].items():
        assert 0 < times["p50_ms"] <= times["p95_ms"], name
    assert result["page_cold_ms"] > 0 and result["page_warm_ms"] > 0 and result["peak_rss_mb"] > 0
