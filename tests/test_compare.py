"""Compare: one prompt to several models at once, each answer streamed in a worker and recorded; ratings kept."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from engine import accounts, compare, db, guards
from engine.chat_models import AnswerRating
from engine.errors import InvalidInput, NotFound, PermissionDenied
from engine.models import LedgerEntry, RouteTarget
from engine.permissions import Actor
from providers.base import AuthError, Result, Usage
from tests import scripted_provider as scripted
from tests.factories import member, owner, scripted_routes

GPT, HAIKU, LOCAL = "gpt-4o-mini", "claude-haiku-4-5", "llama-local"
TARGETS = [f"primary/{GPT}", f"backup/{HAIKU}"]


@pytest.fixture
def ws(database, data_dir):
    actor = owner()
    scripted_routes(actor, ("primary", "openai", GPT), ("backup", "anthropic", HAIKU), ("local", "ollama", LOCAL))
    return actor


def answer(*pieces: str) -> list:
    return [*pieces, Result(text="".join(pieces), usage=Usage(input_tokens=30, output_tokens=len(pieces)))]


def ledger() -> list[LedgerEntry]:
    with db.read_session() as s:
        return list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))


class Gate(list):
    """A scripted stream that sends its first piece, then waits for the test before the rest."""

    def __init__(self):
        super().__init__()
        self.open = threading.Event()

    def __iter__(self):
        yield "first"
        self.open.wait(10)
        yield " second"
        yield Result(text="first second", usage=Usage(input_tokens=30, output_tokens=2))


def test_one_prompt_streams_from_each_model_and_every_call_is_recorded(ws):
    scripted.SCRIPT[GPT] = [answer("Blue", " whale.")]
    scripted.SCRIPT[HAIKU] = [answer("The blue whale.")]
    cmp = compare.start(ws, "  Largest animal?  ", TARGETS, system="One line.", temperature=0.5, max_tokens=200)
    assert [lane.state for lane in cmp.lanes] == ["waiting", "waiting"]
    cmp.wait(30)
    assert cmp.finished
    gpt, haiku = cmp.lanes
    assert (gpt.state, gpt.text, haiku.text) == ("done", "Blue whale.", "The blue whale.")
    rows = {r.id: r for r in ledger()}
    assert set(rows) == {gpt.ledger_id, haiku.ledger_id}
    for lane in cmp.lanes:
        row = rows[lane.ledger_id]
        assert lane.cost == row.cost and lane.cost > 0 and lane.ttft_ms == row.ttft_ms is not None
        assert lane.latency_ms == row.latency_ms and lane.input_tokens == 30 and row.tags == ["compare"]
        assert row.request_id == lane.request_id
    group = {lane.request_id.rsplit("-", 1)[0] for lane in cmp.lanes}
    assert len(group) == 1 and group.pop().startswith("compare-")
    assert {(c.model, c.system, c.temperature, c.max_tokens, c.messages[0].content) for c in scripted.CALLS} == {
        (GPT, "One line.", 0.5, 200, "Largest animal?"), (HAIKU, "One line.", 0.5, 200, "Largest animal?")}


def test_the_page_thread_sees_pieces_as_they_arrive(ws):
    gate = Gate()
    scripted.SCRIPT[GPT] = [gate]
    scripted.SCRIPT[HAIKU] = [answer("quick")]
    cmp = compare.start(ws, "go", TARGETS)
    while cmp.lanes[0].text != "first" or not cmp.lanes[1].finished:
        cmp.pump(1)
    assert cmp.lanes[0].state == "streaming" and not cmp.finished
    gate.open.set()
    cmp.wait(30)
    assert cmp.lanes[0].text == "first second" and cmp.lanes[0].state == "done"


def test_a_failing_model_fails_its_own_lane_only_and_does_not_fall_back(ws, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    scripted.SCRIPT[GPT] = [AuthError("Incorrect API key provided", status=401)]
    scripted.SCRIPT[HAIKU] = [answer("fine")]
    cmp = compare.start(ws, "hi", TARGETS)
    cmp.wait(30)
    gpt, haiku = cmp.lanes
    assert gpt.state == "failed" and "Incorrect API key" in gpt.error and haiku.state == "done"
    assert gpt.ledger_id is not None and gpt.cost == 0
    assert sorted(r.model for r in ledger()) == sorted([GPT, HAIKU])  # no fallback to another model


def test_a_budget_refusal_shows_in_the_lane_and_charges_nothing(ws, monkeypatch):
    class Refusing:
        def reserve(self, ctx, amount):
            raise InvalidInput("The budget 'Team' would go over its limit; this call was not made.")

    monkeypatch.setattr(guards, "budgets", Refusing())
    cmp = compare.start(ws, "hi", TARGETS)
    cmp.wait(30)
    assert [lane.state for lane in cmp.lanes] == ["failed", "failed"]
    assert all("budget 'Team'" in lane.error and lane.ledger_id is None for lane in cmp.lanes)
    assert ledger() == [] and scripted.CALLS == []


def test_cancel_stops_the_answers_still_arriving_and_records_them_as_cancelled(ws):
    gate = Gate()
    scripted.SCRIPT[GPT] = [gate]
    scripted.SCRIPT[HAIKU] = [answer("done already")]
    cmp = compare.start(ws, "go", TARGETS)
    while cmp.lanes[0].text != "first" or not cmp.lanes[1].finished:
        cmp.pump(1)
    cmp.cancel(timeout=0)  # ask to stop, then let the stream move on to see it
    gate.open.set()
    cmp.wait(30)
    gpt, haiku = cmp.lanes
    assert gpt.state == "cancelled" and gpt.text == "first second" and haiku.state == "done"
    row = next(r for r in ledger() if r.id == gpt.ledger_id)
    assert row.status == "cancelled" and row.output_tokens == 2  # what arrived, no more
    assert gpt.cost == row.cost > 0


def test_bad_input_runs_nothing(ws):
    cases = [("", TARGETS), ("hi", TARGETS[:1]), ("hi", [TARGETS[0], TARGETS[0]]),
             ("hi", [*TARGETS, f"local/{LOCAL}", "primary/extra", "backup/extra"]), ("hi", [TARGETS[0], "nope/model"])]
    for prompt, targets in cases:
        with pytest.raises(InvalidInput):
            compare.start(ws, prompt, targets)
    with pytest.raises(InvalidInput, match="Temperature"):
        compare.start(ws, "hi", TARGETS, temperature=5)
    viewer = member(ws, "viewer@example.com", "viewer")
    with pytest.raises(PermissionDenied):
        compare.start(viewer, "hi", TARGETS)
    assert ledger() == [] and scripted.CALLS == []


def test_max_tokens_above_a_known_context_window_is_refused(ws):
    with db.transaction() as s:
        s.execute(RouteTarget.__table__.update().where(RouteTarget.model == HAIKU).values(context_window=1000))
    with pytest.raises(InvalidInput, match=f"backup/{HAIKU}'s context window of 1,000"):
        compare.start(ws, "hi", TARGETS, max_tokens=2000)
    assert scripted.CALLS == []


def test_rate_keeps_one_mark_per_member_and_answer(ws):
    scripted.SCRIPT[GPT] = [answer("a")]
    scripted.SCRIPT[HAIKU] = [answer("b")]
    cmp = compare.start(ws, "hi", TARGETS)
    cmp.wait(30)
    good, bad = (lane.ledger_id for lane in cmp.lanes)
    compare.rate(ws, good, 1)
    compare.rate(ws, bad, 1)
    compare.rate(ws, bad, -1)  # changing one's mind replaces the mark
    editor = member(ws, "editor@example.com", "editor")
    compare.rate(editor, good, -1)
    with db.read_session() as s:
        marks = {(r.ledger_id, r.user_id): (r.rating, r.source) for r in s.scalars(select(AnswerRating))}
    assert marks == {(good, ws.user_id): (1, "compare"), (bad, ws.user_id): (-1, "compare"),
                     (good, editor.user_id): (-1, "compare")}
    assert compare.ratings(ws, [good, bad]) == {good: 1, bad: -1}
    compare.rate(ws, bad, None)
    assert compare.ratings(ws, [good, bad]) == {good: 1}

    with pytest.raises(InvalidInput):
        compare.rate(ws, good, 5)
    with pytest.raises(PermissionDenied):
        compare.rate(member(ws, "viewer@example.com", "viewer"), good, 1)
    elsewhere = accounts.create_workspace(ws.user_id, "Elsewhere")
    with pytest.raises(NotFound):
        compare.rate(Actor(ws.user_id, elsewhere.id), good, 1)
