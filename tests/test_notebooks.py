"""Notebooks: cells and their order, who sees and changes what, running SQL through the sandbox,
charts from earlier results, the HTML export and the starters. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pytest
from sqlalchemy import func, select

from engine import clients, db, notebook_runs, notebooks, projects, usage
from engine.config import get_settings
from engine.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from engine.models import Notebook, NotebookCell
from engine.notebook_render import decode_result, encode_result
from tests.factories import member, owner, scripted_routes

SPEND_BY_PROVIDER = "SELECT provider, sum(cost) AS spend, count(*) AS calls FROM ledger GROUP BY 1 ORDER BY 1"


@pytest.fixture
def ws(database, tmp_path, monkeypatch):
    """An owner whose workspace has a few priced calls; the warehouse lives in a temporary directory."""
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    boss = owner()
    with db.transaction() as s:
        for provider, cost, n in (("anthropic", "0.1234567891", 3), ("openai", "0.25", 2)):
            for _ in range(n):
                usage.record(s, workspace_id=boss.workspace_id, provider=provider, model="m", input_tokens=10,
                             output_tokens=5, cost=Decimal(cost))
    yield boss
    get_settings.cache_clear()


def order(actor, notebook_id) -> list[tuple[str, str]]:
    return [(c.kind, c.source) for c in notebooks.get_notebook(actor, notebook_id).cells]


def stored_counts() -> tuple[int, int]:
    with db.read_session() as s:
        return (s.scalar(select(func.count()).select_from(Notebook)),
                s.scalar(select(func.count()).select_from(NotebookCell)))


# --- notebooks and cells ------------------------------------------------------------------


def test_create_list_search_rename_and_delete(ws):
    first = notebooks.create_notebook(ws, "  Spend review ")
    notebooks.create_notebook(ws, "Model 100% check")
    assert first.title == "Spend review" and first.cells == () and first.can_edit and first.can_manage
    assert not first.shared and first.owner_name == "Olivia Owner"
    assert [n.title for n in notebooks.list_notebooks(ws)] == ["Model 100% check", "Spend review"]
    assert [n.title for n in notebooks.list_notebooks(ws, "SPEND")] == ["Spend review"]
    assert [n.title for n in notebooks.list_notebooks(ws, "100%")] == ["Model 100% check"]
    assert notebooks.list_notebooks(ws, "_") == []  # wildcards are literal

    notebooks.rename_notebook(ws, first.id, "Monthly review")
    assert notebooks.get_notebook(ws, first.id).title == "Monthly review"
    notebooks.add_cell(ws, first.id, "markdown", "# Notes")
    notebooks.delete_notebook(ws, first.id)
    with pytest.raises(NotFound):
        notebooks.get_notebook(ws, first.id)
    assert stored_counts() == (1, 0)  # its cells went with it


def test_cells_keep_their_order_through_moves_and_deletes(ws):
    nb = notebooks.create_notebook(ws, "Order")
    a, b, c = (notebooks.add_cell(ws, nb.id, "markdown", text) for text in ("a", "b", "c"))
    assert [x.number for x in (a, b, c)] == [1, 2, 3]
    notebooks.move_cell(ws, c.id, -1)
    assert [s for _, s in order(ws, nb.id)] == ["a", "c", "b"]
    notebooks.move_cell(ws, a.id, 1)
    assert [s for _, s in order(ws, nb.id)] == ["c", "a", "b"]
    notebooks.delete_cell(ws, a.id)
    assert [(x.number, x.source) for x in notebooks.get_notebook(ws, nb.id).cells] == [(1, "c"), (2, "b")]
    with pytest.raises(InvalidInput, match="already at the top"):
        notebooks.move_cell(ws, c.id, -1)
    with pytest.raises(InvalidInput, match="already at the bottom"):
        notebooks.move_cell(ws, b.id, 1)
    assert [s for _, s in order(ws, nb.id)] == ["c", "b"]


def test_bad_input_is_refused_and_changes_nothing(ws):
    nb = notebooks.create_notebook(ws, "Keep")
    sql = notebooks.add_cell(ws, nb.id, "sql", "SELECT 1")
    chart = notebooks.add_cell(ws, nb.id, "chart")
    before, cells_before = stored_counts(), order(ws, nb.id)
    refusals = [
        (lambda: notebooks.create_notebook(ws, "   "), "cannot be empty"),
        (lambda: notebooks.rename_notebook(ws, nb.id, "x" * 201), "200 characters"),
        (lambda: notebooks.add_cell(ws, nb.id, "python", "import os"), "one of"),
        (lambda: notebooks.add_cell(ws, nb.id, "sql", "x" * (notebooks.MAX_SOURCE_CHARS + 1)), "at most"),
        (lambda: notebooks.update_cell(ws, sql.id, source="y" * (notebooks.MAX_SOURCE_CHARS + 1)), "at most"),
        (lambda: notebooks.update_cell(ws, chart.id, options={"type": "radar", "source": sql.id}), "chart is one of"),
        (lambda: notebooks.update_cell(ws, chart.id, options={"type": "bar", "source": chart.id}), "SQL cell above"),
        (lambda: notebooks.update_cell(ws, chart.id, options={"type": "bar", "x": ["a"]}), "column name"),
        (lambda: notebooks.move_cell(ws, sql.id, 2), "one place"),
    ]
    for action, message in refusals:
        with pytest.raises(InvalidInput, match=message):
            action()
    assert stored_counts() == before and order(ws, nb.id) == cells_before
    assert notebooks.get_notebook(ws, nb.id).title == "Keep"
    assert notebooks.get_notebook(ws, nb.id).cell(chart.id).options == {"type": "bar"}


# --- who sees and changes what ------------------------------------------------------------


def test_a_private_notebook_is_its_owners_alone(ws):
    admin = member(ws, "admin@example.com", "admin")
    editor = member(ws, "editor@example.com", "editor")
    private = notebooks.create_notebook(editor, "Draft")
    for other in (ws, admin):  # not even the workspace owner sees someone's private notebook
        assert notebooks.list_notebooks(other) == []
        with pytest.raises(NotFound, match="not shared"):
            notebooks.get_notebook(other, private.id)
        with pytest.raises(NotFound):
            notebooks.add_cell(other, private.id, "markdown", "hi")
        with pytest.raises(NotFound):
            notebooks.duplicate_notebook(other, private.id)
    assert [n.title for n in notebooks.list_notebooks(editor)] == ["Draft"]


def test_a_shared_notebook_is_read_by_viewers_and_changed_by_editors(ws):
    viewer = member(ws, "viewer@example.com", "viewer")
    editor = member(ws, "editor@example.com", "editor")
    admin = member(ws, "admin@example.com", "admin")
    nb = notebooks.create_notebook(ws, "Team numbers")
    cell = notebooks.add_cell(ws, nb.id, "sql", "SELECT 1 AS one")
    notebooks.set_shared(ws, nb.id, True)

    seen = notebooks.get_notebook(viewer, nb.id)
    assert seen.cells[0].source == "SELECT 1 AS one" and not seen.can_edit and not seen.can_manage
    for action in (
        lambda: notebooks.add_cell(viewer, nb.id, "markdown", "x"),
        lambda: notebooks.update_cell(viewer, cell.id, source="SELECT 2"),
        lambda: notebook_runs.run_cell(viewer, cell.id),
        lambda: notebook_runs.run_all(viewer, nb.id),
        lambda: notebooks.rename_notebook(viewer, nb.id, "Mine"),
        lambda: notebooks.create_notebook(viewer, "Mine"),
    ):
        with pytest.raises(PermissionDenied, match="viewer"):
            action()

    as_editor = notebooks.get_notebook(editor, nb.id)
    assert as_editor.can_edit and not as_editor.can_manage
    notebooks.update_cell(editor, cell.id, source="SELECT 2 AS two")
    notebooks.rename_notebook(editor, nb.id, "Team numbers (edited)")
    for action in (lambda: notebooks.set_shared(editor, nb.id, False), lambda: notebooks.delete_notebook(editor, nb.id)):
        with pytest.raises(PermissionDenied, match="owner or an admin"):
            action()

    notebooks.set_shared(admin, nb.id, False)  # an admin may take a shared notebook back to its owner
    with pytest.raises(NotFound):
        notebooks.get_notebook(editor, nb.id)
    assert notebooks.get_notebook(ws, nb.id).cells[0].source == "SELECT 2 AS two"


def test_another_workspace_cannot_reach_a_notebook_or_its_cells(ws):
    nb = notebooks.create_notebook(ws, "Ours")
    cell = notebooks.add_cell(ws, nb.id, "sql", "SELECT 1")
    notebooks.set_shared(ws, nb.id, True)
    from engine import accounts
    from engine.permissions import Actor

    stranger_ws = accounts.create_workspace(ws.user_id, "Elsewhere")
    elsewhere = Actor(ws.user_id, stranger_ws.id)  # the same person, acting in their other workspace
    assert notebooks.list_notebooks(elsewhere) == []
    with pytest.raises(NotFound):
        notebooks.get_notebook(elsewhere, nb.id)
    with pytest.raises(NotFound):
        notebooks.update_cell(elsewhere, cell.id, source="SELECT 2")
    with pytest.raises(NotFound):
        notebook_runs.run_cell(elsewhere, cell.id)


# --- running ------------------------------------------------------------------------------


def test_a_sql_cell_stores_its_rows_exactly_with_count_and_timing(ws):
    nb = notebooks.create_notebook(ws, "Spend")
    cell = notebooks.add_cell(ws, nb.id, "sql", SPEND_BY_PROVIDER)
    ran = notebook_runs.run_cell(ws, cell.id)
    assert ran.error is None and ran.row_count == 2 and not ran.truncated
    assert ran.elapsed_ms is not None and ran.ran_at is not None
    assert ran.frame.to_dicts() == [
        {"provider": "anthropic", "spend": Decimal("0.3703703673"), "calls": 3},
        {"provider": "openai", "spend": Decimal("0.5"), "calls": 2},
    ]
    again = notebooks.get_notebook(ws, nb.id).cells[0]  # stored, not only returned
    assert again.frame.equals(ran.frame) and again.row_count == 2

    # Another workspace's rows are not in this workspace's ledger view.
    with db.transaction() as s:
        from engine import accounts

        other = accounts.create_workspace(ws.user_id, "Elsewhere")
        usage.record(s, workspace_id=other.id, provider="openai", model="m", cost=Decimal("99"))
    assert notebook_runs.run_cell(ws, cell.id).frame["calls"].to_list() == [3, 2]


def test_a_failing_query_stores_its_error_and_drops_the_old_result(ws):
    nb = notebooks.create_notebook(ws, "Errors")
    cell = notebooks.add_cell(ws, nb.id, "sql", SPEND_BY_PROVIDER)
    notebook_runs.run_cell(ws, cell.id)
    notebooks.update_cell(ws, cell.id, source="SELECT * FROM read_csv('/etc/passwd')")
    assert notebooks.get_notebook(ws, nb.id).cells[0].frame is None  # a changed query drops its result
    failed = notebook_runs.run_cell(ws, cell.id)
    assert failed.frame is None and failed.row_count is None and failed.ran_at is not None
    assert "only this workspace's tables" in failed.error
    assert notebooks.get_notebook(ws, nb.id).cells[0].error == failed.error

    notebooks.update_cell(ws, cell.id, source="   ")
    with pytest.raises(InvalidInput, match="no query yet"):
        notebook_runs.run_cell(ws, cell.id)


def test_rows_beyond_the_cap_are_cut_and_said_so(ws):
    nb = notebooks.create_notebook(ws, "Big")
    cell = notebooks.add_cell(ws, nb.id, "sql", f"SELECT range AS n FROM range({notebooks.ROW_CAP + 10})")
    ran = notebook_runs.run_cell(ws, cell.id)
    assert ran.row_count == notebooks.ROW_CAP == ran.frame.height and ran.truncated


def test_stored_results_are_cut_to_the_byte_cap():
    frame = pl.DataFrame({"text": [os.urandom(100).hex() for _ in range(2_000)]})  # incompressible
    data, kept = encode_result(frame, cap_bytes=20_000)
    assert len(data) <= 20_000 and 0 < kept < 2_000
    assert decode_result(data).equals(frame.head(kept))
    assert encode_result(frame)[1] == 2_000


def test_a_chart_draws_an_earlier_cells_result(ws):
    nb = notebooks.create_notebook(ws, "Charts")
    sql = notebooks.add_cell(ws, nb.id, "sql", SPEND_BY_PROVIDER)
    chart = notebooks.add_cell(ws, nb.id, "chart", options={"type": "bar", "source": sql.id, "x": "provider",
                                                            "y": "spend", "title": "Spend"})
    assert chart.error == "Run cell 1 first: this chart draws its result."
    notebook_runs.run_cell(ws, sql.id)
    view = notebooks.get_notebook(ws, nb.id)
    assert view.cells[1].error is None
    figure = notebooks.chart_figure(view, view.cells[1])
    assert list(figure.data[0].x) == ["anthropic", "openai"]
    assert list(figure.data[0].y) == pytest.approx([0.3703703673, 0.5])

    notebooks.update_cell(ws, chart.id, options={"type": "pie", "source": sql.id, "x": "provider", "y": "nothing"})
    assert "no column “nothing”" in notebooks.get_notebook(ws, nb.id).cells[1].error
    notebooks.update_cell(ws, chart.id, options={"type": "line", "source": sql.id, "x": "spend", "y": "provider"})
    assert "must hold numbers" in notebooks.get_notebook(ws, nb.id).cells[1].error

    notebooks.move_cell(ws, chart.id, -1)  # now above its data
    assert "below it" in notebooks.get_notebook(ws, nb.id).cells[0].error
    with pytest.raises(InvalidInput, match="SQL cell above"):
        notebooks.update_cell(ws, chart.id, options={"type": "bar", "source": sql.id, "x": "provider", "y": "spend"})
    notebooks.delete_cell(ws, sql.id)
    assert "was deleted" in notebooks.get_notebook(ws, nb.id).cells[0].error


def test_run_all_runs_in_order_reports_progress_and_goes_on_past_a_failure(ws):
    nb = notebooks.create_notebook(ws, "All")
    notebooks.add_cell(ws, nb.id, "markdown", "# Heading")
    bad = notebooks.add_cell(ws, nb.id, "sql", "SELECT nope FROM ledger")
    good = notebooks.add_cell(ws, nb.id, "sql", SPEND_BY_PROVIDER)
    notebooks.add_cell(ws, nb.id, "chart", options={"source": good.id, "x": "provider", "y": "calls"})
    seen = []
    view = notebook_runs.run_all(ws, nb.id, lambda done, total, cell: seen.append((done, total, cell.number)))
    assert seen == [(1, 3, 2), (2, 3, 3), (3, 3, 4)]
    assert "nope" in view.cell(bad.id).error
    assert view.cell(good.id).row_count == 2 and view.cells[3].error is None


def test_duplicate_copies_cells_and_results_and_points_charts_at_the_copies(ws):
    editor = member(ws, "editor@example.com", "editor")
    nb = notebooks.create_notebook(ws, "Original")
    sql = notebooks.add_cell(ws, nb.id, "sql", SPEND_BY_PROVIDER)
    notebooks.add_cell(ws, nb.id, "chart", options={"source": sql.id, "x": "provider", "y": "spend"})
    notebook_runs.run_cell(ws, sql.id)
    notebooks.set_shared(ws, nb.id, True)

    copy = notebooks.duplicate_notebook(editor, nb.id)
    assert (copy.title, copy.owner_id, copy.shared, copy.can_manage) == ("Copy of Original", editor.user_id, False, True)
    assert [c.source for c in copy.cells] == [c.source for c in notebooks.get_notebook(ws, nb.id).cells]
    assert copy.cells[0].id != sql.id and copy.cells[0].row_count == 2
    assert copy.cells[1].options["source"] == copy.cells[0].id and copy.cells[1].error is None
    notebooks.delete_cell(editor, copy.cells[0].id)  # the copy is independent of the original
    assert len(notebooks.get_notebook(ws, nb.id).cells) == 2


# --- hand-off and export ------------------------------------------------------------------


def test_snapshot_and_html_export_carry_the_results(ws):
    nb = notebooks.create_notebook(ws, "Export <me>")
    notebooks.add_cell(ws, nb.id, "markdown", "## Findings\n\nSpend is **up**. <script>alert(1)</script>")
    sql = notebooks.add_cell(ws, nb.id, "sql", SPEND_BY_PROVIDER)
    notebooks.add_cell(ws, nb.id, "chart", options={"source": sql.id, "x": "provider", "y": "spend"})
    notebooks.add_cell(ws, nb.id, "sql", "SELECT broken")

    tables_only = notebooks.export_html(ws, nb.id)
    assert "Not run yet." in tables_only and "Plotly.newPlot" not in tables_only
    assert len(tables_only) < 50_000  # no chart to draw, so no plotly.js

    notebook_runs.run_all(ws, nb.id)
    snap = notebooks.notebook_snapshot(ws, nb.id)
    assert [c.kind for c in snap.cells] == ["markdown", "sql", "chart", "sql"]
    assert snap.cells[1].frame["calls"].to_list() == [3, 2]
    assert snap.cells[2].figure["data"][0]["x"] == ["anthropic", "openai"]
    assert "broken" in snap.cells[3].error

    html = notebooks.export_html(ws, nb.id)
    assert "<title>Export &lt;me&gt;</title>" in html
    assert "<h2>Findings</h2>" in html and "<strong>up</strong>" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<td>anthropic</td><td>0.3703703673</td><td>3</td>" in html
    assert "2 rows" in html and "broken" in html
    # plotly.js inline, once: the file opens offline.
    assert html.count("Plotly.newPlot(") == 1 and html.count('<script type="text/javascript">/**') == 1
    assert "<script src=" not in html and len(html) > 3_000_000


# --- starters -----------------------------------------------------------------------------


@pytest.fixture
def sqlite_ws(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield owner()
    get_settings.cache_clear()


def test_starters_install_once_and_every_query_runs(sqlite_ws):
    """SQLite only: the starters' SQL runs in DuckDB either way, and a dozen queries twice is slow."""
    ws = sqlite_ws
    acme = clients.create_client(ws, "Acme")
    bot = projects.create_project(ws, "Support bot", client_id=acme.id)
    with db.transaction() as s:
        for day, project, model, status in ((datetime(2026, 9, 30, 23, tzinfo=UTC), bot.id, "gpt-4o", "ok"),
                                            (datetime(2026, 10, 1, 1, tzinfo=UTC), None, "claude", "error"),
                                            (datetime(2026, 10, 2, 9, tzinfo=UTC), bot.id, "gpt-4o", "ok")):
            usage.record(s, workspace_id=ws.workspace_id, user_id=ws.user_id, project_id=project, provider="p",
                         model=model, status=status, input_tokens=100, output_tokens=50, latency_ms=900,
                         cost=Decimal("0.01"), created_at=day)
    added = notebooks.install_starters(ws, shared=True)
    assert sorted(added) == ["Cost per project", "Model comparison", "Monthly spend review"]
    assert notebooks.install_starters(ws) == []
    for summary in notebooks.list_notebooks(ws):
        assert summary.shared
        view = notebook_runs.run_all(ws, summary.id)
        problems = [(c.number, c.error) for c in view.cells if c.error]
        assert problems == [], (summary.title, problems)
        assert all(c.row_count for c in view.cells if c.kind == "sql")


def test_install_starters_needs_an_editor(ws):
    viewer = member(ws, "viewer@example.com", "viewer")
    with pytest.raises(PermissionDenied):
        notebooks.install_starters(viewer)
    assert stored_counts() == (0, 0)


def test_the_query_changing_during_a_run_is_not_stored_against_it(ws, monkeypatch):
    nb = notebooks.create_notebook(ws, "Race")
    cell = notebooks.add_cell(ws, nb.id, "sql", "SELECT 1 AS one")
    real = notebook_runs._execute

    def edited_meanwhile(workspace_id, sql):
        outcome = real(workspace_id, sql)
        notebooks.update_cell(ws, cell.id, source="SELECT 2 AS two")
        return outcome

    monkeypatch.setattr(notebook_runs, "_execute", edited_meanwhile)
    with pytest.raises(Conflict, match="changed while it ran"):
        notebook_runs.run_cell(ws, cell.id)
    stored = notebooks.get_notebook(ws, nb.id).cells[0]
    assert stored.source == "SELECT 2 AS two" and stored.frame is None


# --- prompt cells -------------------------------------------------------------------------

GPT = "gpt-4o-mini"


@pytest.fixture
def routed(ws):
    """The workspace routes text to one scripted connection priced as OpenAI (tests/scripted_provider.py)."""
    from tests import scripted_provider as scripted

    scripted_routes(ws, ("primary", "openai", GPT))
    return scripted


def notebook_ledger(notebook_id):
    from engine.models import LedgerEntry

    with db.read_session() as s:
        return list(s.scalars(select(LedgerEntry).where(LedgerEntry.notebook_id == notebook_id)))


def test_a_prompt_cell_uses_earlier_results_and_is_charged_like_any_call(ws, routed):
    from providers.base import Result, Usage

    routed.SCRIPT[GPT] = [Result(text="Spend is **flat**.", usage=Usage(input_tokens=120, output_tokens=8),
                                 finish_reason="stop")]
    nb = notebooks.create_notebook(ws, "Ask")
    sql = notebooks.add_cell(ws, nb.id, "sql", SPEND_BY_PROVIDER)
    prompt = notebooks.add_cell(ws, nb.id, "prompt", "Summarise:\n{{ cell_1 }}")

    early = notebook_runs.run_cell(ws, prompt.id)  # cell 1 has not run: nothing to fill in, nothing charged
    assert "cell_1" in early.error and "none yet" in early.error and early.answer is None
    assert routed.CALLS == [] and notebook_ledger(nb.id) == []

    notebook_runs.run_cell(ws, sql.id)
    answered = notebook_runs.run_cell(ws, prompt.id)
    assert answered.error is None and answered.answer == "Spend is **flat**."
    [call] = routed.CALLS
    assert call.messages[0].content.startswith("Summarise:\nprovider,spend,calls\nanthropic,0.3703703673,3\n")
    [charged] = notebook_ledger(nb.id)
    assert charged.cost is not None and charged.cost > 0
    assert answered.frame["cost_usd"][0] == charged.cost and answered.frame["model"][0] == f"primary/{GPT}"

    html = notebooks.export_html(ws, nb.id)
    assert "Spend is <strong>flat</strong>." in html and f"primary/{GPT}" in html

    notebooks.update_cell(ws, prompt.id, source="Summarise briefly:\n{{ cell_1 }}")  # a new prompt, no old answer
    assert notebooks.get_notebook(ws, nb.id).cells[1].answer is None


def test_a_prompt_that_fails_or_is_refused_stores_why(ws, routed):
    from providers.base import Unavailable

    routed.SCRIPT[GPT] = [Unavailable("overloaded", status=503)]
    nb = notebooks.create_notebook(ws, "Failing")
    prompt = notebooks.add_cell(ws, nb.id, "prompt", "Hello {{ 7 * 6 }}")
    failed = notebook_runs.run_cell(ws, prompt.id)
    assert failed.error and failed.answer is None
    assert routed.CALLS[0].messages[0].content == "Hello 42"

    notebooks.update_cell(ws, prompt.id, source="{{ ''.__class__.__mro__ }}")  # the template is sandboxed
    assert "cannot be filled in" in notebook_runs.run_cell(ws, prompt.id).error
    with pytest.raises(InvalidInput, match="connection/model"):
        notebooks.update_cell(ws, prompt.id, options={"target": "gpt-4o"})
    with pytest.raises(InvalidInput, match="1 to 100,000"):
        notebooks.update_cell(ws, prompt.id, options={"max_tokens": 0})
    assert notebooks.get_notebook(ws, nb.id).cells[0].options == {}
