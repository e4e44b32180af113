"""The one generation path: ledger rows per attempt, exact prices, fallbacks, streams and the budget hook."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from sqlalchemy import select

from engine import db, generation, guards, media_jobs, pricing, projects
from engine.assets import store
from engine.errors import Conflict, InvalidInput, PermissionDenied
from engine.models import Asset, LedgerEntry, ProviderConnection, RouteTarget, TargetHealth
from engine.router import NoRoute
from providers.base import AuthError, BadRequest, Result, TruncatedStream, Unavailable, Usage
from tests import scripted_provider as scripted
from tests.factories import member, owner, scripted_routes

GPT = "gpt-4o-mini"  # priced by the catalog: $0.15/M input, $0.075/M cached, $0.60/M output


@pytest.fixture
def ws(database, data_dir):
    """A workspace with two scripted connections priced as OpenAI and Anthropic, routed in that order."""
    actor = owner()
    scripted_routes(actor, ("primary", "openai", GPT), ("backup", "anthropic", "claude-haiku-4-5"))
    return actor


def rows() -> list[LedgerEntry]:
    with db.read_session() as s:
        return list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.attempt)))


def test_a_call_writes_one_priced_ledger_row_with_its_components(ws):
    scripted.SCRIPT[GPT] = [Result(text="Paris.", usage=Usage(input_tokens=1200, cached_input_tokens=200,
                                                                 output_tokens=300), finish_reason="stop")]
    g = generation.generate(generation.GenerationRequest(prompt="Capital of France?", tags=("geo",)), ws)
    assert g.text == "Paris." and g.target == f"primary/{GPT}" and g.attempts == 1
    [row] = rows()
    expected = pricing.price("openai", GPT, Usage(input_tokens=1200, cached_input_tokens=200, output_tokens=300))
    assert g.cost == row.cost == expected.total
    assert (row.cost_input, row.cost_cached_input, row.cost_output) == (
        Decimal("0.00015"), Decimal("0.000015"), Decimal("0.00018"))
    assert row.provider == "openai" and row.model == GPT and row.status == "ok" and row.priced
    assert row.request_id == g.request_id and row.attempt == 1 and row.tags == ["geo"]
    assert row.price_source == "catalog" and row.price_version.startswith("genai-prices")
    assert row.estimated_cost is not None and row.estimated_cost >= row.cost  # the worst case was reserved
    assert row.latency_ms is not None
    # the provider was asked for a bounded answer, so the reserved worst case holds
    assert scripted.CALLS[0].max_tokens == generation.DEFAULT_MAX_TOKENS


def test_fallback_records_each_attempt_that_reached_a_provider(ws):
    scripted.SCRIPT[GPT] = [Unavailable("overloaded", status=503)] * 3
    g = generation.generate(generation.GenerationRequest(prompt="hi"), ws)
    assert g.target == "backup/claude-haiku-4-5" and g.attempts == 4
    got = rows()
    assert [(r.attempt, r.status, r.provider) for r in got] == [
        (1, "error", "openai"), (2, "error", "openai"), (3, "error", "openai"), (4, "ok", "anthropic")]
    assert all(r.request_id == g.request_id for r in got)
    assert got[0].cost == 0 and got[0].error == "overloaded"
    with db.read_session() as s:
        health = {h.model: h for h in s.scalars(select(TargetHealth))}
    assert health[GPT].consecutive_failures == 3 and health["claude-haiku-4-5"].state == "closed"


def test_an_attempt_that_never_reached_the_vendor_writes_no_row(ws, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    scripted.SCRIPT[GPT] = [Unavailable("connection refused")]  # no HTTP status: nothing was sent
    g = generation.generate(generation.GenerationRequest(prompt="hi"), ws)
    assert [r.status for r in rows()] == ["ok"] and g.attempts == 4


def test_running_the_same_request_again_is_refused_not_charged_twice(ws):
    generation.generate(generation.GenerationRequest(prompt="hi", request_id="req-1"), ws)
    with pytest.raises(Conflict, match="req-1"):
        generation.generate(generation.GenerationRequest(prompt="hi", request_id="req-1"), ws)
    assert len(rows()) == 1


def test_a_bad_request_fails_without_fallback_and_says_why(ws):
    scripted.SCRIPT[GPT] = [BadRequest("max_tokens is too large for this model", status=400)]
    with pytest.raises(NoRoute, match="max_tokens is too large"):
        generation.generate(generation.GenerationRequest(prompt="hi"), ws)
    assert [(r.status, r.model) for r in rows()] == [("error", GPT)]


def test_an_unpriced_model_is_recorded_as_unpriced_never_as_zero(ws):
    scripted.SCRIPT["my-finetune"] = [Result(text="x", usage=Usage(input_tokens=5, output_tokens=5))]
    g = generation.generate(generation.GenerationRequest(prompt="hi", target="primary/my-finetune"), ws)
    [row] = rows()
    assert g.cost is None and row.cost is None and not row.priced and row.cost_input is None


def test_usage_a_server_did_not_report_is_counted_and_tagged(ws):
    scripted.SCRIPT[GPT] = [Result(text="hello there friend", usage=Usage())]
    g = generation.generate(generation.GenerationRequest(prompt="say hello"), ws)
    [row] = rows()
    assert row.output_tokens == 3 and row.input_tokens > 0 and generation.ESTIMATED_USAGE_TAG in row.tags
    assert g.cost == row.cost and row.cost > 0


def test_pinned_target_without_fallback_tries_only_that_target(ws):
    scripted.SCRIPT[GPT] = [AuthError("key revoked", status=401)]  # would normally fall back
    with pytest.raises(NoRoute):
        generation.generate(generation.GenerationRequest(prompt="hi", target=f"primary/{GPT}", fallback=False), ws)
    assert {r.model for r in rows()} == {GPT}


def test_viewers_cannot_spend_money_and_bad_input_writes_nothing(ws):
    viewer = member(ws, "viewer@example.com", "viewer")
    with pytest.raises(PermissionDenied):
        generation.generate(generation.GenerationRequest(prompt="hi"), viewer)
    for bad in (generation.GenerationRequest(prompt="   "), generation.GenerationRequest(prompt="x", temperature=3),
                generation.GenerationRequest(prompt="x", max_tokens=0), generation.GenerationRequest(prompt="x", kind="smell"),
                generation.GenerationRequest(prompt="x", target="no-slash")):
        with pytest.raises(InvalidInput):
            generation.generate(bad, ws)
    assert rows() == [] and scripted.CALLS == []


def test_calls_are_charged_to_an_active_project_only(ws):
    project = projects.create_project(ws, name="Launch")
    g = generation.generate(generation.GenerationRequest(prompt="hi", project_id=project.id), ws)
    assert rows()[0].project_id == project.id and g.cost is not None
    projects.set_archived(ws, project.id, True)
    with pytest.raises(InvalidInput, match="archived"):
        generation.generate(generation.GenerationRequest(prompt="hi", project_id=project.id), ws)


def test_images_are_saved_as_assets(ws):
    with db.transaction() as s:
        conn = s.scalar(select(ProviderConnection).where(ProviderConnection.name == "primary"))
        s.add(RouteTarget(workspace_id=ws.workspace_id, kind="image", connection_id=conn.id, model="gpt-image-1"))
    scripted.SCRIPT["gpt-image-1"] = [scripted.image(2)]
    g = generation.generate(generation.GenerationRequest(kind="image", prompt="a lighthouse", params={"n": 2}), ws)
    assert len(g.asset_ids) == 2
    with db.read_session() as s:
        saved = s.scalars(select(Asset).order_by(Asset.id)).all()
    assert [a.ledger_id for a in saved] == [g.ledger_id] * 2 and saved[0].prompt == "a lighthouse"
    assert store().read(saved[1].path) == b"\x89PNG fake image 1"


def test_a_stream_yields_text_and_records_once_at_the_end(ws):
    scripted.SCRIPT[GPT] = [["Hel", "lo", Result(text="Hello", usage=Usage(input_tokens=8, output_tokens=2))]]
    s = generation.stream(generation.GenerationRequest(prompt="greet"), ws)
    assert list(s) == ["Hel", "lo"]
    [row] = rows()
    assert s.result.ledger_id == row.id and row.status == "ok" and row.output_tokens == 2
    assert row.ttft_ms is not None and s.result.ttft_ms == row.ttft_ms


def test_a_stream_cut_off_midway_is_a_failure_recorded_with_what_it_used(ws):
    scripted.SCRIPT[GPT] = [["Once upon", " a time", TruncatedStream("connection closed mid-answer")]]
    s = generation.stream(generation.GenerationRequest(prompt="tell a story"), ws)
    got = []
    with pytest.raises(NoRoute, match="broke off"):
        for piece in s:
            got.append(piece)
    assert got == ["Once upon", " a time"] and s.result is None
    [row] = rows()
    assert row.status == "truncated" and row.output_tokens == 4 and row.input_tokens > 0 and row.cost > 0


def test_an_abandoned_stream_is_settled_at_what_was_really_used(ws):
    scripted.SCRIPT[GPT] = [["one", " two", " three", Result(text="one two three", usage=Usage(1, 3))]]
    s = generation.stream(generation.GenerationRequest(prompt="count"), ws)
    for piece in s:
        break
    s.close()
    [row] = rows()
    assert row.status == "cancelled" and row.output_tokens == 1 and row.input_tokens > 0


def test_a_stream_falls_back_before_its_first_word(ws):
    scripted.SCRIPT[GPT] = [Unavailable("overloaded", status=529)] * 3
    scripted.SCRIPT["claude-haiku-4-5"] = [["hi", Result(text="hi", usage=Usage(input_tokens=5, output_tokens=1))]]
    s = generation.stream(generation.GenerationRequest(prompt="hello"), ws)
    assert list(s) == ["hi"] and s.result.target == "backup/claude-haiku-4-5"


class RecordingBudgets:
    def __init__(self):
        self.events: list[tuple] = []

    def reserve(self, ctx, amount):
        self.events.append(("reserve", ctx.attempt, ctx.provider, amount))
        return ctx.attempt

    def settle(self, session, hold, actual):
        assert session.in_transaction()  # settled in the ledger row's own transaction
        self.events.append(("settle", hold, actual))

    def release(self, hold):
        self.events.append(("release", hold))


def test_every_attempt_reserves_and_is_settled_or_released_exactly_once(ws, monkeypatch):
    hook = RecordingBudgets()
    monkeypatch.setattr(guards, "budgets", hook)
    monkeypatch.setattr("time.sleep", lambda s: None)
    scripted.SCRIPT[GPT] = [Unavailable("refused"), Unavailable("503", status=503), Unavailable("refused")]
    g = generation.generate(generation.GenerationRequest(prompt="hi"), ws)
    kinds = [e[0] for e in hook.events]
    assert kinds == ["reserve", "release", "reserve", "settle", "reserve", "release", "reserve", "settle"]
    assert hook.events[-1] == ("settle", 4, g.cost)
    assert hook.events[6][2] == "anthropic"  # the fallback re-reserved for its own target


def test_estimate_counts_openai_prompts_exactly_and_says_when_it_approximates(ws):
    e = generation.estimate(generation.GenerationRequest(prompt="Hello, world! How are you?", max_tokens=100), ws)
    assert e.exact and e.input_tokens == 8 + 3 + 3 and e.max_output_tokens == 100
    assert e.cost == pricing.price("openai", GPT, Usage(input_tokens=14, output_tokens=100)).total
    other = generation.estimate(generation.GenerationRequest(prompt="Hi", target="backup/claude-haiku-4-5"), ws)
    assert not other.exact  # scripted is not OpenAI: the count is an approximation
    assert rows() == []


def test_a_workspace_price_override_prices_the_call_and_its_estimate(ws):
    pricing.set_override(ws, provider="openai", model="my-finetune", input_mtok="1", output_mtok="2")
    scripted.SCRIPT["my-finetune"] = [Result(text="x", usage=Usage(input_tokens=1_000_000, output_tokens=500_000))]
    g = generation.generate(generation.GenerationRequest(prompt="hi", target="primary/my-finetune", max_tokens=10), ws)
    [row] = rows()
    assert g.cost == row.cost == Decimal("2") and row.price_source == "override"
    assert row.price_version.startswith("override #")


def _video_route(actor) -> None:
    with db.transaction() as s:
        c = ProviderConnection(workspace_id=actor.workspace_id, name="studio", provider_type="scripted-jobs",
                               price_provider="fal")
        s.add(c)
        s.flush()
        s.add(RouteTarget(workspace_id=actor.workspace_id, kind="video", connection_id=c.id, model="kling-video"))


def test_a_media_job_reports_progress_and_is_recorded_once_when_done(ws):
    from providers.base import Asset, JobStatus

    _video_route(ws)
    done = Result(assets=(Asset(b"mp4 bytes", "video/mp4"),), usage=Usage(seconds=Decimal("5")))
    scripted.JOBS["kling-video"] = [JobStatus("queued", queue_position=3), JobStatus("running", logs=("50%",)),
                                    JobStatus("done", 1.0, result=done)]
    job = media_jobs.submit(generation.GenerationRequest(kind="video", prompt="a wave", params={"duration": 5}), ws,
                            watch_every=None)
    assert job.cancellable and job.target == "studio/kling-video"
    assert job.poll().queue_position == 3 and rows() == []
    assert job.poll().state == "running" and rows() == []
    assert job.poll().state == "done" and job.result is not None
    assert job.poll().state == "done"  # polling again records nothing more
    [row] = rows()
    assert row.kind == "video" and row.seconds == Decimal("5") and row.status == "ok"
    assert len(job.result.asset_ids) == 1


def test_a_cancelled_job_is_recorded_as_cancelled_and_costs_nothing(ws):
    from providers.base import JobStatus

    _video_route(ws)
    scripted.JOBS["kling-video"] = [JobStatus("queued", queue_position=1)]
    job = media_jobs.submit(generation.GenerationRequest(kind="video", prompt="a wave"), ws, watch_every=None)
    job.poll()
    job.cancel()
    [row] = rows()
    assert row.status == "cancelled" and row.seconds is None and scripted.CANCELLED == ["job-1"]
    with pytest.raises(InvalidInput):
        job.cancel()


def test_a_job_that_finished_first_is_kept_when_cancel_comes_too_late(ws):
    from providers.base import Asset, JobStatus

    _video_route(ws)
    done = Result(assets=(Asset(b"mp4", "video/mp4"),), usage=Usage(seconds=Decimal("5")))
    scripted.JOBS["kling-video"] = [JobStatus("done", 1.0, result=done)]
    job = media_jobs.submit(generation.GenerationRequest(kind="video", prompt="a wave"), ws, watch_every=None)
    with pytest.raises(InvalidInput, match="already finished"):
        job.cancel()
    assert [r.status for r in rows()] == ["ok"] and job.result is not None


def test_media_without_a_job_queue_runs_in_a_thread(ws):
    with db.transaction() as s:
        conn = s.scalar(select(ProviderConnection).where(ProviderConnection.name == "primary"))
        s.add(RouteTarget(workspace_id=ws.workspace_id, kind="image", connection_id=conn.id, model="gpt-image-1"))
    scripted.SCRIPT["gpt-image-1"] = [scripted.image(1)]
    job = media_jobs.submit(generation.GenerationRequest(kind="image", prompt="a lighthouse"), ws, watch_every=None)
    assert not job.cancellable
    g = job.wait(interval=0.01, timeout=10)
    assert len(g.asset_ids) == 1 and [r.status for r in rows()] == ["ok"]


def test_a_job_nobody_polls_is_still_recorded_when_it_ends(ws):
    from providers.base import Asset, JobStatus

    _video_route(ws)
    done = Result(assets=(Asset(b"mp4", "video/mp4"),), usage=Usage(seconds=Decimal("4")))
    scripted.JOBS["kling-video"] = [JobStatus("queued"), JobStatus("running"), JobStatus("done", 1.0, result=done)]
    media_jobs.submit(generation.GenerationRequest(kind="video", prompt="a wave"), ws, watch_every=0.01,
                      watch_idle=0)
    deadline = time.monotonic() + 10
    while not rows() and time.monotonic() < deadline:  # the page that started it is gone
        time.sleep(0.02)
    assert [(r.status, r.seconds) for r in rows()] == [("ok", Decimal("4"))]


def test_media_is_priced_per_unit_by_a_workspace_override(ws):
    from providers.base import Asset, JobStatus

    _video_route(ws)
    pricing.set_override(ws, provider="fal", model="kling-video", input_mtok="0", output_mtok="0", per_second="0.07")
    done = Result(assets=(Asset(b"mp4", "video/mp4"),), usage=Usage(seconds=Decimal("5")))
    scripted.JOBS["kling-video"] = [JobStatus("done", 1.0, result=done)]
    job = media_jobs.submit(generation.GenerationRequest(kind="video", prompt="a wave", params={"duration": 5}), ws,
                            watch_every=None)
    assert job.poll().state == "done"
    [row] = rows()
    assert row.cost == row.cost_seconds == Decimal("0.35") and row.estimated_cost == Decimal("0.35")
    with pytest.raises(InvalidInput, match="per second"):
        pricing.set_override(ws, provider="fal", model="x", input_mtok="0", output_mtok="0", per_second="-1")


def test_an_approximate_prompt_count_is_reserved_with_a_margin(ws, monkeypatch):
    hook = RecordingBudgets()
    monkeypatch.setattr(guards, "budgets", hook)
    req = generation.GenerationRequest(prompt="word " * 400, target="backup/claude-haiku-4-5", max_tokens=10)
    shown = generation.estimate(req, ws)
    assert not shown.exact
    generation.generate(req, ws)
    reserved = hook.events[0][3]
    margin = generation._reserved_tokens(generation.tokens.TokenCount(shown.input_tokens, exact=False))
    assert margin > shown.input_tokens * 1.2
    assert reserved == pricing.price("anthropic", "claude-haiku-4-5", Usage(input_tokens=margin, output_tokens=10)).total
    assert reserved > shown.cost
