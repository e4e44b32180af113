"""Batches: reading rows, filling the template in, the total estimate, and the worker that runs them.

The engine runs for real around a scripted provider (tests/scripted_provider.py): every row goes
through generation.generate, so ledger rows, prices and request ids are the real ones.
"""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from decimal import Decimal

import polars as pl
import pytest
from sqlalchemy import func, select, update

from engine import accounts, batch_worker, batches, db, generation
from engine.batch_models import Batch, BatchRow
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, PermissionDenied
from engine.models import LedgerEntry
from providers.base import BadRequest, Result, Usage
from tests import scripted_provider as scripted
from tests.factories import member, owner, scripted_routes

GPT = "gpt-4o-mini"


@pytest.fixture
def ws(database, data_dir):
    """A workspace whose text route is one scripted connection priced as OpenAI's gpt-4o-mini."""
    actor = owner()
    scripted_routes(actor, ("primary", "openai", GPT), unrouted=[("claude", "anthropic")])
    return actor


@pytest.fixture
def workers(monkeypatch):
    """The worker threads batches start, so a test can wait for them to end."""
    started = []
    launch = batches.launch

    def recording(batch_id: int):
        thread = launch(batch_id)
        started.append(thread)
        return thread

    monkeypatch.setattr(batches, "launch", recording)
    yield started
    for thread in started:
        thread.join(30)


def finish(workers) -> None:
    for thread in workers:
        thread.join(30)
        assert not thread.is_alive(), "the batch worker did not finish"


def csv_of(n: int) -> bytes:
    return ("city,country\n" + "".join(f"City {i},Country {i % 3}\n" for i in range(1, n + 1))).encode()


def ledger() -> list[LedgerEntry]:
    with db.read_session() as s:
        return list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))


def stored_batches() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(Batch)) + s.scalar(select(func.count()).select_from(BatchRow))


TEMPLATE = "What is {{ city }} in {{ country }} known for?"


# --- reading rows ---------------------------------------------------------------------------


def test_rows_are_read_from_a_file_or_pasted_text():
    table = batches.read_csv(b'\xef\xbb\xbfname,note\n"Smith, J.","two\nlines"\n\nLee,short\n')
    assert table.columns == ("name", "note")
    assert table.rows == ({"name": "Smith, J.", "note": "two\nlines"}, {"name": "Lee", "note": "short"})
    pasted = batches.read_csv("a;b\n1;2\n3;4", what="The pasted rows")
    assert pasted.columns == ("a", "b") and pasted.rows[1] == {"a": "3", "b": "4"}
    assert batches.read_csv("only\nx\n").rows == ({"only": "x"},)
    assert pasted.frame().to_dicts() == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


@pytest.mark.parametrize(("data", "message"), [
    (b"", "is empty"),
    (b"  \n\n", "is empty"),
    (b"city,country\n", "has column names (city, country) but no rows"),
    (b"city,country\nParis,France\nLyon\n", "Line 3 has 1 value but there are 2 columns (city, country)"),
    (b"city,country\nParis,France,Europe\n", "Line 2 has 3 values"),
    (b"city,city\nParis,Lyon\n", "city appears more than once"),
    (b"city,,x\n1,2,3\n", "Column 2 of the first line has no name"),
    (b"city\nZ\xfcrich\n", "not UTF-8 text: line 2 has a byte (0xfc)"),
    (b"city\n" + b"x" * (batches.MAX_CELL_CHARS + 1) + b"\n", "line 2 is longer than 1,000,000 characters"),
])
def test_bad_files_are_refused_with_what_is_wrong_and_where(data, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        batches.read_csv(data)


def test_more_rows_than_a_batch_takes_are_refused_at_once():
    assert len(batches.read_csv(csv_of(batches.MAX_ROWS)).rows) == batches.MAX_ROWS
    with pytest.raises(InvalidInput, match="more than 10,000 rows. Split it"):
        batches.read_csv(csv_of(100_000))


# --- the template ---------------------------------------------------------------------------


def test_the_template_is_filled_in_for_every_row():
    table = batches.read_csv(b"first name,city\nAda,London\nAlan,Wilmslow\n")
    prompts = batches.render_prompts(table, 'Write to {{ row["first name"] }} in {{ city }}.')
    assert prompts == ["Write to Ada in London.", "Write to Alan in Wilmslow."]


@pytest.mark.parametrize(("template", "message"), [
    ("Tell me about {{ city }} and {{ population }}.",
     r"uses \{\{ population \}\}, which is not a column of the rows. Columns: city, country"),
    ("{{ a }} {{ b }}", r"uses \{\{ a \}\}, \{\{ b \}\}, which are not columns"),
    ("{{ city ", "error on line 1"),
    ("   ", "Write a prompt template first"),
    ("{{ row['nope'] }}", "Row 1 cannot be filled in"),
    ("{{ 1 / 0 }}", "Row 1 cannot be filled in: ZeroDivisionError"),
    ("{{ city * 100000000 }}", "repeating text that many times is not allowed"),
    ("{{ city.__class__.__mro__ }}", "Row 1 cannot be filled in"),
    ("{% if city == 'x' %}{{ city }}{% endif %}", "Row 1's prompt is empty once filled in"),
])
def test_a_bad_template_is_refused_before_anything_runs(template, message):
    with pytest.raises(InvalidInput, match=message):
        batches.render_prompts(batches.read_csv(csv_of(3)), template)


# --- the estimate ---------------------------------------------------------------------------


def test_the_total_estimate_is_the_sum_of_each_rows_estimate(ws):
    table = batches.read_csv(csv_of(20))
    settings = batches.BatchSettings(TEMPLATE, system="Answer in one line.", max_tokens=200)
    prepared = batches.prepare(ws, table, settings)
    per_row = [generation.estimate(generation.GenerationRequest(prompt=p, system="Answer in one line.",
                                                                max_tokens=200), ws) for p in prepared.prompts]
    est = prepared.estimate
    assert est.cost == sum(e.cost for e in per_row) and est.cost > 0
    assert est.input_tokens == sum(e.input_tokens for e in per_row)
    assert (est.rows, est.max_output_tokens, est.target, est.exact) == (20, 200, f"primary/{GPT}", True)
    assert prepared.preview == tuple(prepared.prompts[:3])
    assert prepared.prompts[0] == "What is City 1 in Country 1 known for?"
    assert stored_batches() == 0 and ledger() == []  # preparing stores and charges nothing


def test_an_estimate_says_when_it_is_approximate_or_unpriced(ws):
    table = batches.read_csv(csv_of(5))
    claude = batches.prepare(ws, table, batches.BatchSettings(TEMPLATE, target="claude/claude-haiku-4-5"))
    assert claude.estimate.approximate and claude.estimate.cost > 0
    unpriced = batches.prepare(ws, table, batches.BatchSettings(TEMPLATE, target="primary/my-finetune"))
    assert unpriced.estimate.cost is None


def test_viewers_cannot_start_batches_and_bad_settings_store_nothing(ws):
    viewer = member(ws, "viewer@example.com", "viewer")
    table = batches.read_csv(csv_of(3))
    with pytest.raises(PermissionDenied, match="run AI calls"):
        batches.prepare(viewer, table, batches.BatchSettings(TEMPLATE))
    prepared = batches.prepare(ws, table, batches.BatchSettings(TEMPLATE))
    with pytest.raises(PermissionDenied):
        batches.start_batch(viewer, prepared)
    for bad, message in [(dict(concurrency=0), "between 1 and 8"), (dict(max_tokens=0), "Max tokens"),
                         (dict(tags=tuple(f"t{i}" for i in range(30))), "at most 19 tags")]:
        with pytest.raises(InvalidInput, match=message):
            batches.prepare(ws, table, batches.BatchSettings(TEMPLATE, **bad))
    assert stored_batches() == 0 and ledger() == []


# --- running --------------------------------------------------------------------------------


def test_a_batch_runs_every_row_through_the_generation_path(ws, workers):
    scripted.SCRIPT[GPT] = [Result(text="Known for food.", usage=Usage(input_tokens=20, output_tokens=5))]
    prepared = batches.prepare(ws, batches.read_csv(csv_of(20)),
                               batches.BatchSettings(TEMPLATE, name="cities.csv", concurrency=4, tags=("survey",)))
    started = batches.start_batch(ws, prepared)
    assert started.name == "cities.csv" and started.row_count == 20 and started.estimated_cost == prepared.estimate.cost
    finish(workers)

    view = batches.get_batch(ws, started.id)
    assert view.status == "done" and view.counts["ok"] == 20 and view.progress == 1.0 and not view.interrupted
    entries = ledger()
    assert len(entries) == 20 and all(e.status == "ok" for e in entries)
    assert all(e.tags == ["survey", f"batch:{started.id}"] for e in entries)
    assert view.cost == sum(e.cost for e in entries) > 0
    rows = batches.batch_rows(ws, started.id, limit=100)
    assert [r.position for r in rows] == list(range(1, 21))
    assert {r.ledger_id for r in rows} == {e.id for e in entries}
    assert rows[0].output == "Known for food." and rows[0].inputs == {"city": "City 1", "country": "Country 1"}
    assert sorted(c.messages[0].content for c in scripted.CALLS) == sorted(prepared.prompts)
    with db.read_session() as s:
        assert s.scalar(select(Batch.claimed_by).where(Batch.id == started.id)) is None


def test_results_download_as_csv_and_parquet_with_exact_cost_per_row(ws, workers):
    scripted.SCRIPT[GPT] = [Result(text="A", usage=Usage(input_tokens=1000, output_tokens=100)),
                            BadRequest("prompt rejected", status=400),
                            Result(text="C", usage=Usage(input_tokens=1000, output_tokens=100))]
    prepared = batches.prepare(ws, batches.read_csv(b"city,status\nParis,x\nLyon,y\nNice,z\n"),
                               batches.BatchSettings("About {{ city }}", concurrency=1))
    batch = batches.start_batch(ws, prepared)
    finish(workers)
    assert batches.get_batch(ws, batch.id).counts == {"pending": 0, "running": 0, "ok": 2, "error": 1, "cancelled": 0}

    frame = pl.read_parquet(io.BytesIO(batches.results_parquet(ws, batch.id)))
    assert frame.columns == ["row", "city", "status (input)", "prompt", "status", "output", "model", "cost_usd",
                             "input_tokens", "output_tokens", "latency_ms", "ledger_id", "error"]
    assert frame["status"].to_list() == ["ok", "error", "ok"]
    # 1000 × $0.15/M + 100 × $0.60/M, exactly
    assert frame["cost_usd"].to_list()[0] == Decimal("0.0002100000")
    assert "prompt rejected" in frame["error"][1]
    text = batches.results_csv(ws, batch.id).decode()
    assert text.splitlines()[0].startswith("row,city,status (input),prompt,status,output")
    assert ",0.0002100000," in text.splitlines()[1]


def test_rows_run_at_most_concurrency_at_a_time(ws, workers, monkeypatch):
    answer = scripted.ScriptedProvider.generate
    lock, active, peak = threading.Lock(), [0], [0]
    together = threading.Barrier(2, timeout=10)  # fails the rows unless two are in flight at once

    def generate(self, req):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            together.wait()
            return answer(self, req)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(scripted.ScriptedProvider, "generate", generate)
    prepared = batches.prepare(ws, batches.read_csv(csv_of(6)), batches.BatchSettings(TEMPLATE, concurrency=2))
    batch = batches.start_batch(ws, prepared)
    finish(workers)
    assert batches.get_batch(ws, batch.id).counts["ok"] == 6 and peak[0] == 2


def the_batch(actor) -> int:
    """The workspace's one batch, read from the database: a worker thread may get there before start_batch returns."""
    [only] = batches.list_batches(actor)
    return only.id


def run_with_hook(monkeypatch, after_calls: int, action) -> None:
    """Make the scripted vendor do ``action`` (pause, cancel…) once it has answered ``after_calls`` calls."""
    answer = scripted.ScriptedProvider.generate

    def generate(self, req):
        result = answer(self, req)
        if len(scripted.CALLS) == after_calls:
            action()
        return result

    monkeypatch.setattr(scripted.ScriptedProvider, "generate", generate)


def test_pause_stops_between_rows_and_resume_carries_on_without_charging_twice(ws, workers, monkeypatch):
    prepared = batches.prepare(ws, batches.read_csv(csv_of(8)), batches.BatchSettings(TEMPLATE, concurrency=1))
    ids = []
    run_with_hook(monkeypatch, 3, lambda: batches.pause_batch(ws, the_batch(ws)))
    ids.append(batches.start_batch(ws, prepared).id)
    finish(workers)

    paused = batches.get_batch(ws, ids[0])
    assert paused.status == "paused" and paused.counts["ok"] == 3 and paused.counts["pending"] == 5
    assert paused.can_resume and not paused.can_pause
    with pytest.raises(InvalidInput, match="Only a queued or running batch can be paused"):
        batches.pause_batch(ws, ids[0])

    batches.resume_batch(ws, ids[0])
    finish(workers)
    done = batches.get_batch(ws, ids[0])
    assert done.status == "done" and done.counts["ok"] == 8
    assert len(ledger()) == 8 and len({e.request_id for e in ledger()}) == 8


def test_cancel_stops_the_rows_not_yet_started(ws, workers, monkeypatch):
    prepared = batches.prepare(ws, batches.read_csv(csv_of(6)), batches.BatchSettings(TEMPLATE, concurrency=1))
    ids = []
    run_with_hook(monkeypatch, 2, lambda: batches.cancel_batch(ws, the_batch(ws)))
    ids.append(batches.start_batch(ws, prepared).id)
    finish(workers)
    view = batches.get_batch(ws, ids[0])
    assert view.status == "cancelled" and view.counts["ok"] == 2 and view.counts["cancelled"] == 4
    assert len(ledger()) == 2 and view.finished_at is not None
    with pytest.raises(InvalidInput, match="already cancelled"):
        batches.cancel_batch(ws, ids[0])
    with pytest.raises(InvalidInput, match="only a paused, failed or interrupted batch can be resumed"):
        batches.resume_batch(ws, ids[0])


def test_a_batch_whose_worker_died_is_resumed_and_never_charged_twice(ws, workers, monkeypatch):
    prepared = batches.prepare(ws, batches.read_csv(csv_of(4)), batches.BatchSettings(TEMPLATE))
    recording = batches.launch
    monkeypatch.setattr(batches, "launch", lambda batch_id: None)  # as if the server stopped at once
    batch = batches.start_batch(ws, prepared)
    # The dead worker had sent row 1 (it reached the vendor) and taken row 2 (not yet sent).
    with db.read_session() as s:
        row1 = s.scalar(select(BatchRow).where(BatchRow.batch_id == batch.id, BatchRow.position == 1))
    generation.generate(generation.GenerationRequest(prompt=row1.prompt, request_id=row1.request_id), ws)
    with db.transaction() as s:
        s.execute(update(Batch).where(Batch.id == batch.id).values(
            status="running", claimed_by="old-host:1:dead", heartbeat_at=utcnow() - timedelta(seconds=30)))
        s.execute(update(BatchRow).where(BatchRow.batch_id == batch.id, BatchRow.position.in_([1, 2]))
                  .values(status="running"))

    assert not batches.get_batch(ws, batch.id).interrupted  # a heartbeat 30 s old is still alive
    assert not batch_worker.claim(batch.id, "another")
    with pytest.raises(InvalidInput, match="worker is alive"):
        batches.resume_batch(ws, batch.id)
    with db.transaction() as s:
        s.execute(update(Batch).where(Batch.id == batch.id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    assert batches.get_batch(ws, batch.id).interrupted

    monkeypatch.setattr(batches, "launch", recording)
    batches.resume_batch(ws, batch.id)
    finish(workers)
    view = batches.get_batch(ws, batch.id)
    assert view.status == "done" and view.counts["ok"] == 3 and view.counts["error"] == 1
    [lost] = batches.batch_rows(ws, batch.id, status="error")
    assert lost.position == 1 and lost.error == batches.LOST
    assert len(ledger()) == 4  # row 1 once, by the dead worker; rows 2-4 once each


def test_only_one_worker_claims_a_batch(ws, monkeypatch):
    monkeypatch.setattr(batches, "launch", lambda batch_id: None)
    batch = batches.start_batch(ws, batches.prepare(ws, batches.read_csv(csv_of(2)), batches.BatchSettings(TEMPLATE)))
    assert batch_worker.claim(batch.id, "w1")
    assert not batch_worker.claim(batch.id, "w2")
    with db.transaction() as s:
        s.execute(update(Batch).where(Batch.id == batch.id).values(heartbeat_at=utcnow() - batches.STALE_AFTER * 2))
    assert batch_worker.claim(batch.id, "w2")
    with db.read_session() as s:
        assert s.scalar(select(Batch.claimed_by).where(Batch.id == batch.id)) == "w2"


def test_a_budget_that_refuses_pauses_the_batch_and_charges_nothing(ws, workers):
    from engine import budgets

    budgets.create_budget(ws, name="Tiny", scope="workspace", period="monthly", limit_usd="0.0001")
    prepared = batches.prepare(ws, batches.read_csv(csv_of(3)), batches.BatchSettings(TEMPLATE, max_tokens=1000))
    batch = batches.start_batch(ws, prepared)
    finish(workers)
    view = batches.get_batch(ws, batch.id)
    assert view.status == "paused" and view.error.startswith("Paused: ") and "Tiny" in view.error
    assert view.counts["pending"] == 3 and ledger() == []


def test_a_member_who_loses_the_right_to_spend_stops_their_batch(ws, workers, monkeypatch):
    editor = member(ws, "editor@example.com", "editor")
    monkeypatch.setattr(batches, "launch", lambda batch_id: None)
    batch = batches.start_batch(editor, batches.prepare(editor, batches.read_csv(csv_of(3)),
                                                        batches.BatchSettings(TEMPLATE)))
    accounts.change_role(ws, editor.user_id, "viewer")
    batch_worker.run(batch.id, "worker")
    view = batches.get_batch(ws, batch.id)
    assert view.status == "failed" and "run AI calls" in view.error and view.counts["pending"] == 3
    assert ledger() == [] and view.can_resume


def test_the_sidecar_resumes_a_batch_whose_worker_died_and_leaves_live_ones_alone(ws, monkeypatch):
    started = []
    monkeypatch.setattr(batches, "launch", started.append)
    dead = batches.start_batch(ws, batches.prepare(ws, batches.read_csv(csv_of(2)), batches.BatchSettings(TEMPLATE)))
    live = batches.start_batch(ws, batches.prepare(ws, batches.read_csv(csv_of(2)), batches.BatchSettings(TEMPLATE)))
    assert batch_worker.claim(dead.id, "gone") and batch_worker.claim(live.id, "beating")
    with db.transaction() as s:
        s.execute(update(Batch).where(Batch.id == dead.id).values(heartbeat_at=utcnow() - batches.STALE_AFTER * 2))
    started.clear()
    assert batch_worker.resume_stale() == [dead.id]
    assert started == [dead.id]
