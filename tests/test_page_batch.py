"""The Batch page through AppTest, against the fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest
from sqlalchemy import func, select, update

from engine import batches, connections, db, generation, routes
from engine.batch_models import Batch
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.models import LedgerEntry
from pages import _common as ui
from tests import pages_helpers
from tests.factories import member, owner
from tests.fakes.openai_server import API_KEY, FakeOpenAI
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/batch.py"
open_page = partial(pages_helpers.open_page, PAGE, title="Batch")
TEMPLATE = "What is {{ city }} in {{ country }} known for?"
LAUNCH = batches.launch


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    generation._cached_provider.cache_clear()
    yield owner()
    get_settings.cache_clear()


@pytest.fixture
def openai(boss):
    with FakeOpenAI() as fake:
        c = connections.create_connection(boss, name="openai", provider_type="openai", api_key=API_KEY,
                                          base_url=fake.base_url)
        routes.add_target(boss, "text", connection_id=c.id, model="gpt-4o-mini")
        yield fake


@pytest.fixture
def workers(boss, monkeypatch):
    """The worker threads batches start, waited for before the database goes away."""
    started = []

    def recording(batch_id: int):
        started.append(LAUNCH(batch_id))
        return started[-1]

    monkeypatch.setattr(batches, "launch", recording)
    yield started
    for thread in started:
        thread.join(30)


@pytest.fixture
def held(workers, monkeypatch):
    """Batches start with no worker, so a test can steer them from the page."""
    monkeypatch.setattr(batches, "launch", lambda batch_id: None)


def csv_of(n: int) -> bytes:
    return ("city,country\n" + "".join(f"City {i},Country {i % 3}\n" for i in range(1, n + 1))).encode()


def stored() -> int:
    with db.read_session() as s:
        return s.scalar(select(func.count()).select_from(Batch)) + s.scalar(
            select(func.count()).select_from(LedgerEntry))


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def wait_for_end(workers, actor, batch_id: int) -> batches.BatchView:
    for thread in workers:
        thread.join(30)
        assert not thread.is_alive(), "the batch worker did not finish"
    return batches.get_batch(actor, batch_id)


def fill_in(at, data: bytes, template: str = TEMPLATE):
    at.file_uploader(key="batch_file").set_value(("cities.csv", data, "text/csv"))
    at.run()
    at.text_area(key="batch_template").input(template)
    at.run()
    no_exceptions(at)
    return at


def test_upload_see_the_estimate_run_to_the_end(boss, openai, workers):
    at = open_page()
    assert any("No batches yet" in i.value for i in at.info)
    fill_in(at, csv_of(20))
    assert not errors(at)
    assert any("20 rows · columns: city, country" in c.value for c in at.caption)
    expected = batches.prepare(boss, batches.read_csv(csv_of(20)), batches.BatchSettings(TEMPLATE)).estimate
    assert metrics(at)["Estimated total (worst case)"] == ui.usd(expected.cost, 4)
    assert metrics(at)["Rows"] == "20" and metrics(at)["Prompt tokens"] == f"{expected.input_tokens:,}"
    assert "What is City 1 in Country 1 known for?" in [t.value for t in at.text]
    assert stored() == 0 and openai.received == []  # nothing runs before Start

    at.button(key="batch_start").click().run()
    no_exceptions(at)
    [view] = batches.list_batches(boss)
    assert at.query_params["batch"] == str(view.id) and view.name == "cities.csv"
    done = wait_for_end(workers, boss, view.id)
    assert done.status == "done" and done.counts["ok"] == 20
    assert len([r for r in openai.received if r.path == "/v1/chat/completions"]) == 20

    at.run()
    no_exceptions(at)
    assert at.header[0].value == "cities.csv"
    assert at.progress[0].value == 100 and "20 of 20 rows · 20 answered" in at.progress[0].text
    assert metrics(at)["Cost so far"] == ui.usd(done.cost, 4) and metrics(at)["Status"] == "Done"
    assert len(at.dataframe[0].value) == 20
    assert {b.proto.label for b in at.get("download_button")} == {"Download CSV", "Download Parquet"}
    assert not [b for b in at.button if b.key in ("batch_pause", "batch_resume", "batch_cancel")]

    at.button(key="batch_back").click().run()
    assert "batch" not in at.query_params
    assert any("Done · 20 of 20 rows" in c.value for c in at.caption)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "is empty"),
    (b"city,country\nZ\xfcrich,CH\n", "is not UTF-8 text: line 2"),
    (csv_of(100_000), "has more than 10,000 rows"),
    (b"city,country\nParis\n", "Line 2 has 1 value but there are 2 columns"),
])
def test_a_bad_file_is_refused_under_the_field(boss, openai, data, message):
    at = fill_in(open_page(), data)
    assert [e for e in errors(at) if message in e], errors(at)
    assert not at.metric and not [b for b in at.button if b.key == "batch_start"]
    assert stored() == 0


def test_an_unknown_column_in_the_template_is_refused_before_anything_runs(boss, openai):
    at = fill_in(open_page(), csv_of(3), "Tell me about {{ city }} ({{ population }})")
    assert [e for e in errors(at) if "{{ population }}, which is not a column" in e and "city, country" in e]
    assert not [b for b in at.button if b.key == "batch_start"]
    assert stored() == 0 and openai.received == []


def test_pasted_rows_work_like_a_file(boss, openai, held):
    at = open_page()
    at.segmented_control(key="batch_source").set_value("Paste rows").run()
    at.text_area(key="batch_paste").input("city,country\nParis,France\nLima,Peru").run()
    at.text_area(key="batch_template").input(TEMPLATE).run()
    no_exceptions(at)
    assert metrics(at)["Rows"] == "2"
    at.button(key="batch_start").click().run()
    [view] = batches.list_batches(boss)
    assert view.name == "Pasted rows" and view.row_count == 2


def test_pause_resume_and_cancel_with_confirmation(boss, openai, held, monkeypatch):
    prepared = batches.prepare(boss, batches.read_csv(csv_of(5)), batches.BatchSettings(TEMPLATE, name="five"))
    view = batches.start_batch(boss, prepared)
    at = open_page()
    at.button(key=f"open_batch_{view.id}").click().run()
    assert at.header[0].value == "five"
    at.button(key="batch_pause").click().run()
    no_exceptions(at)
    assert batches.get_batch(boss, view.id).status == "paused"
    assert any("Paused" in s.value for s in at.success)

    at.button(key="batch_cancel").click().run()
    assert any("5 rows not yet answered will not run" in m.value for m in at.markdown)
    at.button(key="batch_cancel_keep").click().run()
    assert batches.get_batch(boss, view.id).status == "paused"
    at.button(key="batch_cancel").click().run()
    at.button(key="batch_cancel_confirm").click().run()
    no_exceptions(at)
    cancelled = batches.get_batch(boss, view.id)
    assert cancelled.status == "cancelled" and cancelled.counts["cancelled"] == 5
    assert metrics(at)["Status"] == "Cancelled" and openai.received == []


def test_an_interrupted_batch_says_so_and_resumes(boss, openai, workers, held, monkeypatch):
    view = batches.start_batch(boss, batches.prepare(boss, batches.read_csv(csv_of(3)), batches.BatchSettings(TEMPLATE)))
    with db.transaction() as s:
        s.execute(update(Batch).where(Batch.id == view.id).values(
            status="running", claimed_by="gone", heartbeat_at=utcnow() - timedelta(minutes=10)))
    at = open_page()
    at.query_params["batch"] = str(view.id)
    at.run()
    assert any("server probably restarted" in w.value for w in at.warning)
    assert metrics(at)["Status"] == "Interrupted"
    monkeypatch.setattr(batches, "launch", lambda batch_id: workers.append(LAUNCH(batch_id)))  # workers run again
    at.button(key="batch_resume").click().run()
    no_exceptions(at)
    assert wait_for_end(workers, boss, view.id).counts["ok"] == 3


def test_viewers_follow_batches_but_cannot_start_them(boss, openai, held):
    member(boss, "viewer@example.com", "viewer")
    view = batches.start_batch(boss, batches.prepare(boss, batches.read_csv(csv_of(2)), batches.BatchSettings(TEMPLATE)))
    at = open_page("viewer@example.com")
    assert any("but not start them" in i.value for i in at.info)
    assert not at.get("file_uploader")
    at.button(key=f"open_batch_{view.id}").click().run()
    no_exceptions(at)
    assert not [b for b in at.button if b.key in ("batch_pause", "batch_resume", "batch_cancel")]
    assert len(at.get("download_button")) == 2


def test_without_a_model_the_page_says_where_to_add_one(boss):
    at = open_page()
    assert any("No model is set up for text" in i.value and "Providers" in i.value for i in at.info)
    assert not at.get("file_uploader")
