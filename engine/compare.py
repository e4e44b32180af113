"""Compare: one prompt sent to two to four models at once, their answers side by side, and marks on them.

``start`` plans every call first, in the caller's thread (bad input, an unknown model or a
missing permission fails before anything runs or is charged), then streams each answer
through ``engine.generation.stream`` in a worker thread of its own. Workers only feed a
queue; the caller drains it with ``pump`` and draws the answers, because a UI toolkit such
as Streamlit may only draw from its own thread. Each call is pinned to its model
(no fallback: the point is to see that model answer) and recorded in the ledger as usual,
tagged ``compare`` with request ids ``compare-<group>-<n>``, so one comparison's calls can
be found together.

``cancel`` asks the workers to stop: each closes its stream at the next piece of text, and
the engine records it as cancelled at what it used. A worker blocked on a silent vendor
stops when the vendor's read timeout ends it.

``rate`` keeps a member's mark on an answer (its ledger row) in ``answer_ratings``, one per
member and answer, for the analytics to read beside the ledger.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy import select

from engine import chat_context, conversations, db, generation, routes
from engine.chat_models import AnswerRating
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, MeterbookError, NotFound
from engine.models import LedgerEntry
from engine.permissions import Actor, authorize

log = logging.getLogger(__name__)

MIN_TARGETS, MAX_TARGETS = 2, 4
MAX_PROMPT_CHARS = 100_000
RATINGS = {1: "good", -1: "bad"}
SOURCES = ("compare", "chat")
TAG = "compare"


@dataclass(frozen=True)
class Lane:
    """One model's answer in a comparison, as it stands."""

    target: str
    request_id: str
    text: str = ""
    state: str = "waiting"  # waiting, streaming, done, failed, cancelled
    error: str | None = None
    ledger_id: int | None = None  # the last attempt's row; None when nothing reached the vendor
    cost: Decimal | None = None  # every attempt together; None: unknown price, or nothing charged
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: int | None = None
    ttft_ms: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    @property
    def unpriced(self) -> bool:
        return self.ledger_id is not None and self.cost is None


class Comparison:
    """The answers of one comparison, updated by ``pump`` from the workers' queue."""

    def __init__(self, lanes: list[Lane], streams: list[generation.GenerationStream]):
        self.lanes = lanes
        self._events: queue.Queue[tuple[int, str, object]] = queue.Queue()
        self._stop = threading.Event()
        self._workers = [
            threading.Thread(target=self._work, args=(i, s), name=f"compare-{lane.request_id}", daemon=True)
            for i, (lane, s) in enumerate(zip(lanes, streams))
        ]
        for worker in self._workers:
            worker.start()

    @property
    def finished(self) -> bool:
        return all(lane.finished for lane in self.lanes)

    def _work(self, i: int, stream: generation.GenerationStream) -> None:
        """A worker: stream one answer into the queue. Never touches the UI."""
        try:
            for piece in stream:
                self._events.put((i, "text", piece))  # it arrived, and is paid for: show it
                if self._stop.is_set():
                    stream.close()
                    self._events.put((i, "cancelled", None))
                    return
            self._events.put((i, "done", stream.result))
        except MeterbookError as exc:
            self._events.put((i, "failed", str(exc)))
        except Exception as exc:  # a bug must not leave the lane waiting for ever
            log.exception("Comparison lane %s failed", self.lanes[i].target)
            self._events.put((i, "failed", f"The answer failed unexpectedly ({type(exc).__name__})."))

    def pump(self, timeout: float = 0.1) -> set[int]:
        """Apply what the workers sent (waiting up to ``timeout`` for the first event); returns changed lanes."""
        changed: set[int] = set()
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return changed
        while True:
            self._apply(*event)
            changed.add(event[0])
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return changed

    def _apply(self, i: int, kind: str, payload: object) -> None:
        lane = self.lanes[i]
        if kind == "text":
            self.lanes[i] = replace(lane, text=lane.text + str(payload), state="streaming")
            return
        charge = conversations.charge_of(lane.request_id)
        figures = {} if charge is None else dict(
            ledger_id=charge.ledger_id, cost=charge.cost, input_tokens=charge.input_tokens,
            output_tokens=charge.output_tokens, latency_ms=charge.latency_ms, ttft_ms=charge.ttft_ms)
        if kind == "done":
            result: generation.Generation = payload  # type: ignore[assignment]
            figures |= dict(ledger_id=result.ledger_id, input_tokens=result.usage.input_tokens,
                            output_tokens=result.usage.output_tokens, latency_ms=result.latency_ms,
                            ttft_ms=result.ttft_ms)
            self.lanes[i] = replace(lane, **figures, text=result.text, state="done")
        elif kind == "cancelled":
            self.lanes[i] = replace(lane, **figures, state="cancelled", error="Stopped before the answer was complete.")
        else:
            self.lanes[i] = replace(lane, **figures, state="failed", error=str(payload))

    def wait(self, timeout: float | None = None) -> None:
        """Pump until every answer has finished (or ``timeout`` seconds have passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished and (deadline is None or time.monotonic() < deadline):
            self.pump(0.1)

    def cancel(self, timeout: float = 5.0) -> None:
        """Stop the answers still arriving, and wait up to ``timeout`` seconds for them to be recorded."""
        self._stop.set()
        self.wait(timeout)


def start(actor: Actor, prompt: str, targets: list[str], *, system: str | None = None,
          temperature: float | None = None, max_tokens: int | None = None) -> Comparison:
    """Send ``prompt`` to each target at once; ``pump`` or ``wait`` on the comparison for the answers."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise InvalidInput("Write a prompt first.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"The prompt is {len(prompt):,} characters; keep it under {MAX_PROMPT_CHARS:,}.")
    targets = list(dict.fromkeys(t for t in targets if t))
    if not MIN_TARGETS <= len(targets) <= MAX_TARGETS:
        raise InvalidInput(f"Choose {MIN_TARGETS} to {MAX_TARGETS} different models to compare.")
    offered = routes.choices(actor, "text")
    unknown = [t for t in targets if t not in offered]
    if unknown:
        raise InvalidInput(f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not among this workspace's "
                           "text models. Choose from the list, or add models under Providers.")
    if max_tokens is not None:
        for target in targets:
            max_tokens = chat_context.check_max_tokens(actor, target, max_tokens)
    system = (system or "").strip() or None
    group = uuid.uuid4().hex[:16]
    lanes, streams = [], []
    for n, target in enumerate(targets, start=1):
        request_id = f"{TAG}-{group}-{n}"
        streams.append(generation.stream(generation.GenerationRequest(
            prompt=prompt, system=system, target=target, fallback=False, max_tokens=max_tokens,
            temperature=temperature, tags=(TAG,), request_id=request_id,
        ), actor))
        lanes.append(Lane(target, request_id))
    return Comparison(lanes, streams)


def rate(actor: Actor, ledger_id: int, rating: int | None, *, source: str = "compare") -> None:
    """Mark an answer good (1) or bad (-1); None takes the actor's mark away."""
    if rating is not None and rating not in RATINGS:
        raise InvalidInput("Rate an answer as good (1) or bad (-1).")
    if source not in SOURCES:
        raise InvalidInput(f"Unknown place to rate from: {source!r}.")
    with db.transaction() as s:
        authorize(s, actor, "answer.rate")
        entry = s.get(LedgerEntry, ledger_id)
        if entry is None or entry.workspace_id != actor.workspace_id:
            raise NotFound("That answer is not in this workspace's ledger.")
        mark = s.scalar(select(AnswerRating).where(AnswerRating.ledger_id == ledger_id,
                                                   AnswerRating.user_id == actor.user_id))
        if rating is None:
            if mark is not None:
                s.delete(mark)
            return
        if mark is None:
            s.add(AnswerRating(workspace_id=actor.workspace_id, ledger_id=ledger_id, user_id=actor.user_id,
                               rating=rating, source=source))
        else:
            mark.rating, mark.source, mark.updated_at = rating, source, utcnow()


def ratings(actor: Actor, ledger_ids: list[int]) -> dict[int, int]:
    """The actor's own marks on these answers: {ledger id: rating}."""
    if not ledger_ids:
        return {}
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        rows = s.execute(select(AnswerRating.ledger_id, AnswerRating.rating).where(
            AnswerRating.workspace_id == actor.workspace_id, AnswerRating.user_id == actor.user_id,
            AnswerRating.ledger_id.in_(ledger_ids))).all()
    return dict(rows)
