"""Batches: the rows of a CSV run through one prompt template, one generation per row, as queued work.

Preparing stores nothing and charges nothing. ``read_csv`` parses an upload or pasted rows
(UTF-8, at most ``MAX_ROWS`` rows and ``MAX_CELL_CHARS`` per cell; anything else is refused
with the line it went wrong on). ``prepare`` fills the template in for every row (Jinja2,
sandboxed, strict: a variable that is not a column is refused before anything runs) and
estimates the whole batch: the route is planned once through ``generation.estimate``, then
every row's prompt is counted with ``engine.tokens`` and priced on that target with one
price list, which is what ``generation.estimate`` would say row by row, without planning
ten thousand times.

Running. ``start_batch`` stores the batch and its rows (each with a request id fixed there
and then) and hands it to a worker thread in this process. A worker *claims* a batch by
writing its id into ``claimed_by`` and keeps ``heartbeat_at`` fresh while it works; a batch
still ``running`` whose heartbeat is older than ``STALE_AFTER`` has lost its worker (the
server stopped), and ``resume_batch`` (or the sidecar, through ``batch_worker.resume_stale``) claims it
again. Rows that worker had in flight go back to the queue with the same request id, and
the generation path refuses an id that already reached a vendor, so no row is charged twice:
such a row is marked as lost instead. Within a batch, rows run ``concurrency`` at a time in a
thread pool; pause and cancel are the batch's status, read by the worker between rows, so
rows already sent finish (and are charged) and nothing new starts.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from engine import audit, db, generation, pricing, router, tokens
from engine.batch_models import Batch, BatchRow
from engine.dbtypes import to_money, utcnow
from engine.errors import InvalidInput, NotFound
from engine.models import ProviderConnection, User
from engine.permissions import Actor, authorize
from providers.base import Message, Request, Usage

log = logging.getLogger(__name__)

MAX_ROWS = 10_000
MAX_CELL_CHARS = 1_000_000  # about 1 MB of text
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_TEMPLATE_CHARS = 50_000
MAX_CONCURRENCY = 8
MAX_TAGS = generation.MAX_TAGS - 1  # one more, ``batch:<id>``, is added to every row's call
DEFAULT_MAX_TOKENS = 512
PREVIEW_ROWS = 3
DELIMITERS = ",;\t|"

HEARTBEAT_EVERY = 5.0  # seconds between a worker's heartbeats (and its longest wait for a row)
STALE_AFTER = timedelta(seconds=60)  # a heartbeat older than this: the worker is gone
FETCH = 200  # pending row ids read at a time
RATE_LIMIT_RETRIES = 4  # a row refused for a rate limit waits and tries again this often
LOST = ("This row had already been sent when the batch was interrupted, so it was not sent again: what it "
        "used is in the ledger, but its answer was not kept.")

ACTIVE = ("queued", "running")
FINISHED = ("cancelled", "done")
ROW_STATUSES = ("pending", "running", "ok", "error", "cancelled")

# The csv module's cell limit is process-wide; it is raised just past ours so that an oversized
# cell reaches the check below (with its line number) instead of failing inside the reader.
csv.field_size_limit(max(csv.field_size_limit(), MAX_CELL_CHARS + 1))


# --- reading rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """Rows as text, keyed by column name, in the order of the file."""

    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]

    def frame(self, limit: int | None = None) -> pl.DataFrame:
        rows = self.rows if limit is None else self.rows[:limit]
        return pl.DataFrame({c: [r[c] for r in rows] for c in self.columns}, schema={c: pl.String for c in self.columns})


def read_csv(data: bytes | str, *, what: str = "The file") -> Table:
    """Parse CSV text (first line: column names) or refuse it with a message that says where and why."""
    if isinstance(data, bytes):
        if len(data) > MAX_FILE_BYTES:
            raise InvalidInput(f"{what} is larger than {MAX_FILE_BYTES // 1024 // 1024} MB. Split it into smaller "
                               "files and run them as separate batches.")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise InvalidInput(
                f"{what} is not UTF-8 text: line {line} has a byte (0x{data[exc.start]:02x}) that is not UTF-8. "
                "Save it as “CSV UTF-8” and upload it again.") from None
    else:
        text = data.removeprefix("\ufeff")
    if not text.strip():
        raise InvalidInput(f"{what} is empty. It needs a first line of column names, then one row per line.")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = next(r for r in reader if any(cell.strip() for cell in r))
        columns = _columns(header)
        rows: list[dict[str, str]] = []
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # blank lines carry nothing
            if len(rows) == MAX_ROWS:
                raise InvalidInput(f"{what} has more than {MAX_ROWS:,} rows. Split it into files of at most "
                                   f"{MAX_ROWS:,} rows and run each as its own batch.")
            if len(record) != len(columns):
                raise InvalidInput(
                    f"Line {reader.line_num} has {len(record)} value{'s' * (len(record) != 1)} but there "
                    f"{'are' if len(columns) != 1 else 'is'} {len(columns)} column{'s' * (len(columns) != 1)} "
                    f"({', '.join(columns)}). Check for a missing or extra separator, and put quotes around "
                    "values that contain one.")
            if any(len(cell) > MAX_CELL_CHARS for cell in record):
                raise InvalidInput(f"A value on line {reader.line_num} is longer than {MAX_CELL_CHARS:,} characters "
                                   "(about 1 MB). Shorten it, or leave it out of the batch.")
            rows.append(dict(zip(columns, record, strict=True)))
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise InvalidInput(f"A value on line {reader.line_num} is longer than {MAX_CELL_CHARS:,} characters "
                               "(about 1 MB). Shorten it, or leave it out of the batch.") from None
        raise InvalidInput(f"{what} is not valid CSV near line {reader.line_num}: {exc}.") from None
    if not rows:
        raise InvalidInput(f"{what} has column names ({', '.join(columns)}) but no rows under them.")
    return Table(columns, tuple(rows))


def _delimiter(text: str) -> str:
    first = text.lstrip("\r\n").split("\n", 1)[0]
    try:
        return csv.Sniffer().sniff(first, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","  # one column, or nothing to tell by


def _columns(header: list[str]) -> tuple[str, ...]:
    columns = tuple(h.strip() for h in header)
    if any(not c for c in columns):
        position = next(i for i, c in enumerate(columns, 1) if not c)
        raise InvalidInput(f"Column {position} of the first line has no name. The first line must name every column.")
    seen = {c for c in columns if columns.count(c) > 1}
    if seen:
        raise InvalidInput(f"The column name{'s' * (len(seen) > 1)} {', '.join(sorted(seen))} appear"
                           f"{'s' * (len(seen) == 1)} more than once. Give each column its own name.")
    return columns


# --- templates ------------------------------------------------------------------------------


class _PromptSandbox(SandboxedEnvironment):
    """Jinja's sandbox, also refusing arithmetic that would build a huge string or number."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError("powers above 100 are not allowed in a prompt template")
        seq, times = (left, right) if isinstance(left, str | list) else (right, left)
        if operator == "*" and isinstance(seq, str | list) and isinstance(times, int) and len(seq) * times > MAX_CELL_CHARS:
            raise SecurityError("repeating text that many times is not allowed in a prompt template")
        return super().call_binop(context, operator, left, right)


_ENV = _PromptSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _listing(columns: tuple[str, ...]) -> str:
    return ", ".join(columns)


def render_prompts(table: Table, template: str) -> list[str]:
    """Every row's prompt. A variable that is not a column is refused before any row is filled in."""
    if not template.strip():
        raise InvalidInput("Write a prompt template first, with {{ column }} where each row's value goes.")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise InvalidInput(f"The template is longer than {MAX_TEMPLATE_CHARS:,} characters; shorten it.")
    try:
        unknown = sorted(meta.find_undeclared_variables(_ENV.parse(template)) - set(table.columns) - {"row"})
        compiled = _ENV.from_string(template)
    except TemplateSyntaxError as exc:
        raise InvalidInput(f"The template has an error on line {exc.lineno}: {exc.message}.") from None
    if unknown:
        names = ", ".join(f"{{{{ {n} }}}}" for n in unknown)
        raise InvalidInput(
            f"The template uses {names}, which {'is' if len(unknown) == 1 else 'are'} not "
            f"{'a column' if len(unknown) == 1 else 'columns'} of the rows. Columns: {_listing(table.columns)}. "
            "A column whose name has spaces is written {{ row[\"its name\"] }}.")
    prompts = []
    for number, row in enumerate(table.rows, 1):
        try:
            prompt = compiled.render({"row": row, **row})
        except TemplateError as exc:
            raise InvalidInput(f"Row {number} cannot be filled in: {exc.message or exc}. "
                               f"Columns: {_listing(table.columns)}.") from None
        except Exception as exc:  # a template is the user's code: whatever it raises (1/0, "a" * "b") is theirs to fix
            raise InvalidInput(f"Row {number} cannot be filled in: {type(exc).__name__}: {exc}.") from None
        if not prompt.strip():
            raise InvalidInput(f"Row {number}'s prompt is empty once filled in. Give the row a value or remove it.")
        prompts.append(prompt)
    return prompts


# --- settings, estimates ----------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSettings:
    template: str
    name: str = ""
    target: str | None = None  # "connection/model"; None: the workspace's text route
    system: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    concurrency: int = 4
    project_id: int | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchEstimate:
    """The whole batch at its worst case, on the target the route would use first."""

    target: str
    rows: int
    input_tokens: int  # every row's prompt, together
    max_output_tokens: int  # per row
    cost: Decimal | None  # None: the target has no known price
    exact: bool  # False: the prompts were counted with another vendor's tokenizer

    @property
    def approximate(self) -> bool:
        return not self.exact


@dataclass(frozen=True)
class Prepared:
    """A batch ready to start: its rows, their prompts and the estimate. Nothing is stored yet."""

    table: Table
    settings: BatchSettings
    prompts: tuple[str, ...]
    estimate: BatchEstimate

    @property
    def preview(self) -> tuple[str, ...]:
        return self.prompts[:PREVIEW_ROWS]


def _check_settings(settings: BatchSettings) -> BatchSettings:
    name = settings.name.strip()[:200]
    if not 1 <= settings.concurrency <= MAX_CONCURRENCY:
        raise InvalidInput(f"Run between 1 and {MAX_CONCURRENCY} rows at a time.")
    if not 0 < settings.max_tokens <= 1_000_000:
        raise InvalidInput("Max tokens must be a whole number between 1 and 1,000,000.")
    tags = tuple(dict.fromkeys(t.strip() for t in settings.tags if t.strip()))
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"Use at most {MAX_TAGS} tags on a batch.")
    target = (settings.target or "").strip() or None
    system = (settings.system or "").strip() or None
    return BatchSettings(settings.template, name, target, system, settings.max_tokens, settings.temperature,
                         settings.concurrency, settings.project_id, tags)


def _request(settings: BatchSettings, prompt: str, *, batch_id: int | None = None,
             request_id: str | None = None) -> generation.GenerationRequest:
    tags = settings.tags + ((f"batch:{batch_id}",) if batch_id is not None else ())
    return generation.GenerationRequest(
        kind="text", prompt=prompt, system=settings.system, target=settings.target, max_tokens=settings.max_tokens,
        temperature=settings.temperature, project_id=settings.project_id, tags=tags, request_id=request_id)


def _target(workspace_id: int, label: str) -> router.Target:
    name, _, model = label.partition("/")
    with db.read_session() as s:
        conn = s.scalar(select(ProviderConnection).where(ProviderConnection.workspace_id == workspace_id,
                                                         ProviderConnection.name == name))
    if conn is None:
        raise NotFound(f"There is no provider connection called {name!r}. Add it under Providers.")
    return router.target_for(conn, model)


def prepare(actor: Actor, table: Table, settings: BatchSettings) -> Prepared:
    """Fill the template in for every row and estimate the whole batch. Stores and charges nothing.

    The route, permission, project and model are checked once by planning the first row; each
    row's prompt is then counted and priced on that target as ``generation.estimate`` would.
    """
    settings = _check_settings(settings)
    prompts = render_prompts(table, settings.template)
    first = generation.estimate(_request(settings, prompts[0]), actor)
    target = _target(actor.workspace_id, first.target)
    counts = [
        tokens.count_request(Request(kind="text", model=target.model, messages=(Message("user", p),),
                                     system=settings.system), target.price_provider).tokens
        for p in prompts
    ]
    cost = None
    if first.cost is not None:
        with db.read_session() as s:
            prices = pricing.price_list(s, actor.workspace_id, {(target.price_provider, target.model)})
        priced: dict[int, Decimal] = {}  # prompts of one length cost the same: price each length once
        for n in counts:
            if n not in priced:
                priced[n] = prices.price(target.price_provider, target.model,
                                         Usage(input_tokens=n, output_tokens=settings.max_tokens)).total
        cost = sum((priced[n] for n in counts), Decimal(0))
    estimate = BatchEstimate(first.target, len(prompts), sum(counts), settings.max_tokens, cost, first.exact)
    return Prepared(table, settings, tuple(prompts), estimate)


# --- what callers see -----------------------------------------------------------------------


@dataclass(frozen=True)
class BatchView:
    id: int
    name: str
    status: str
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    template: str
    system: str | None
    target: str | None
    max_tokens: int
    temperature: float | None
    concurrency: int
    project_id: int | None
    tags: tuple[str, ...]
    columns: tuple[str, ...]
    row_count: int
    counts: dict[str, int]  # rows per status
    cost: Decimal  # of the rows finished so far
    unpriced_rows: int  # rows that ran on a model with no known price (not in ``cost``)
    estimated_cost: Decimal | None
    estimate_exact: bool
    error: str | None

    @property
    def finished_rows(self) -> int:
        return self.counts["ok"] + self.counts["error"] + self.counts["cancelled"]

    @property
    def progress(self) -> float:
        return self.finished_rows / self.row_count if self.row_count else 1.0

    @property
    def interrupted(self) -> bool:
        """Queued or running, but no worker has been heard from lately (the server stopped)."""
        return self.status in ACTIVE and (self.heartbeat_at is None or utcnow() - self.heartbeat_at > STALE_AFTER)

    @property
    def can_pause(self) -> bool:
        return self.status in ACTIVE and not self.interrupted

    @property
    def can_resume(self) -> bool:
        return self.status in ("paused", "failed") or self.interrupted

    @property
    def can_cancel(self) -> bool:
        return self.status not in FINISHED


@dataclass(frozen=True)
class RowView:
    position: int
    inputs: dict[str, str]
    prompt: str
    status: str
    output: str | None
    target: str | None
    cost: Decimal | None
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: int | None
    ledger_id: int | None
    error: str | None


def _get(s: Session, actor: Actor, batch_id: int, *, lock: bool = False) -> Batch:
    query = select(Batch).where(Batch.id == batch_id)
    b = s.scalar(query.with_for_update() if lock else query)
    if b is None or b.workspace_id != actor.workspace_id:
        raise NotFound("That batch does not exist in this workspace.")
    return b


def _views(s: Session, batches: list[Batch]) -> list[BatchView]:
    ids = [b.id for b in batches]
    counts: dict[int, dict[str, int]] = {i: dict.fromkeys(ROW_STATUSES, 0) for i in ids}
    costs: dict[int, Decimal] = dict.fromkeys(ids, Decimal(0))
    unpriced: dict[int, int] = dict.fromkeys(ids, 0)
    names: dict[int, str] = {}
    if ids:
        for batch_id, status, n, cost, missing in s.execute(
            select(BatchRow.batch_id, BatchRow.status, func.count(), func.sum(BatchRow.cost),
                   func.count().filter(BatchRow.cost.is_(None)))
            .where(BatchRow.batch_id.in_(ids)).group_by(BatchRow.batch_id, BatchRow.status)
        ):
            counts[batch_id][status] = n
            costs[batch_id] += cost or Decimal(0)
            if status == "ok":
                unpriced[batch_id] += missing
        names = dict(s.execute(select(User.id, User.name).where(User.id.in_({b.created_by for b in batches}))).all())
    return [
        BatchView(b.id, b.name, b.status, names.get(b.created_by), b.created_at, b.started_at, b.finished_at,
                  b.heartbeat_at, b.template, b.system, b.target, b.max_tokens, b.temperature, b.concurrency,
                  b.project_id, tuple(b.tags), tuple(b.columns), b.row_count, counts[b.id], to_money(costs[b.id]),
                  unpriced[b.id], b.estimated_cost, b.estimate_exact, b.error)
        for b in batches
    ]


def get_batch(actor: Actor, batch_id: int) -> BatchView:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        return _views(s, [_get(s, actor, batch_id)])[0]


def list_batches(actor: Actor, limit: int = 50) -> list[BatchView]:
    """The workspace's batches, newest first."""
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        batches = list(s.scalars(select(Batch).where(Batch.workspace_id == actor.workspace_id)
                                 .order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit)))
        return _views(s, batches)


def batch_rows(actor: Actor, batch_id: int, *, status: str | None = None, offset: int = 0,
               limit: int = 100) -> list[RowView]:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        _get(s, actor, batch_id)
        query = select(BatchRow).where(BatchRow.batch_id == batch_id)
        if status is not None:
            query = query.where(BatchRow.status == status)
        rows = s.scalars(query.order_by(BatchRow.position).offset(offset).limit(limit)).all()
    return [RowView(r.position, dict(r.inputs), r.prompt, r.status, r.output, r.target, r.cost, r.input_tokens,
                    r.output_tokens, r.latency_ms, r.ledger_id, r.error) for r in rows]


# --- starting and steering ------------------------------------------------------------------


def start_batch(actor: Actor, prepared: Prepared) -> BatchView:
    """Store the batch and its rows, then hand it to a worker thread in this process."""
    settings, table = prepared.settings, prepared.table
    name = settings.name or f"{len(prepared.prompts):,} rows"
    now = utcnow()
    with db.transaction() as s:
        authorize(s, actor, "generate")
        b = Batch(workspace_id=actor.workspace_id, created_by=actor.user_id, name=name, status="queued",
                  template=settings.template, system=settings.system, target=settings.target,
                  max_tokens=settings.max_tokens, temperature=settings.temperature, concurrency=settings.concurrency,
                  project_id=settings.project_id, tags=list(settings.tags), columns=list(table.columns),
                  row_count=len(prepared.prompts), estimated_cost=prepared.estimate.cost,
                  estimate_exact=prepared.estimate.exact, heartbeat_at=now, created_at=now)
        s.add(b)
        s.flush()
        run_key = uuid.uuid4().hex[:16]
        s.execute(insert(BatchRow), [
            {"batch_id": b.id, "position": i, "inputs": row, "prompt": prompt, "status": "pending",
             "request_id": f"batch-{b.id}-{i}-{run_key}"}
            for i, (row, prompt) in enumerate(zip(table.rows, prepared.prompts, strict=True), 1)
        ])
        audit.record_for(s, actor, "batch.started", "batch", b.id, rows=b.row_count, target=prepared.estimate.target,
                         estimated_cost=None if b.estimated_cost is None else str(b.estimated_cost))
        batch_id = b.id
    launch(batch_id)
    return get_batch(actor, batch_id)


def pause_batch(actor: Actor, batch_id: int) -> BatchView:
    """Stop starting rows; those already sent finish. Resume carries on where it stopped."""
    with db.transaction() as s:
        authorize(s, actor, "generate")
        b = _get(s, actor, batch_id, lock=True)
        if b.status not in ACTIVE:
            raise InvalidInput(f"Only a queued or running batch can be paused; this one is {b.status}.")
        b.status = "paused"
    return get_batch(actor, batch_id)


def resume_batch(actor: Actor, batch_id: int) -> BatchView:
    """Carry on with the rows not yet run: after a pause, a failure, or a server that stopped."""
    with db.transaction() as s:
        authorize(s, actor, "generate")
        b = _get(s, actor, batch_id, lock=True)
        view = _views(s, [b])[0]
        if not view.can_resume:
            raise InvalidInput(f"This batch is {b.status}{' and its worker is alive' if b.status in ACTIVE else ''}; "
                               "only a paused, failed or interrupted batch can be resumed.")
        b.status, b.error, b.finished_at, b.heartbeat_at = "queued", None, None, utcnow()
        if view.interrupted:
            b.claimed_by = None  # its worker is gone; claiming puts the rows it had in flight back in the queue
    launch(batch_id)
    return get_batch(actor, batch_id)


def cancel_batch(actor: Actor, batch_id: int) -> BatchView:
    """Cancel the rows not yet started. Rows already sent finish and are charged."""
    with db.transaction() as s:
        authorize(s, actor, "generate")
        b = _get(s, actor, batch_id, lock=True)
        if b.status in FINISHED:
            raise InvalidInput(f"This batch is already {b.status}.")
        interrupted = _views(s, [b])[0].interrupted or (b.status in ("paused", "failed") and b.claimed_by is None)
        stop = ("pending", "running") if interrupted else ("pending",)  # no worker will finish its rows
        s.execute(update(BatchRow).where(BatchRow.batch_id == b.id, BatchRow.status.in_(stop))
                  .values(status="cancelled", finished_at=utcnow()))
        b.status, b.finished_at = "cancelled", utcnow()
        audit.record_for(s, actor, "batch.cancelled", "batch", b.id)
    return get_batch(actor, batch_id)


# --- results --------------------------------------------------------------------------------

RESULT_COLUMNS = ("row", "prompt", "status", "output", "model", "cost_usd", "input_tokens", "output_tokens",
                  "latency_ms", "ledger_id", "error")


def results_frame(actor: Actor, batch_id: int) -> pl.DataFrame:
    """One line per row: its input values, then the prompt, answer, cost (exact, USD) and ledger entry."""
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        b = _get(s, actor, batch_id)
        columns = list(b.columns)
        rows = list(s.scalars(select(BatchRow).where(BatchRow.batch_id == batch_id).order_by(BatchRow.position)))
    named = {c: (f"{c} (input)" if c in RESULT_COLUMNS else c) for c in columns}
    data: dict[str, list[Any]] = {named[c]: [r.inputs.get(c) for r in rows] for c in columns}
    data |= {
        "row": [r.position for r in rows], "prompt": [r.prompt for r in rows], "status": [r.status for r in rows],
        "output": [r.output for r in rows], "model": [r.target for r in rows], "cost_usd": [r.cost for r in rows],
        "input_tokens": [r.input_tokens for r in rows], "output_tokens": [r.output_tokens for r in rows],
        "latency_ms": [r.latency_ms for r in rows], "ledger_id": [r.ledger_id for r in rows],
        "error": [r.error for r in rows],
    }
    schema = {named[c]: pl.String for c in columns} | {
        "row": pl.Int64, "prompt": pl.String, "status": pl.String, "output": pl.String, "model": pl.String,
        "cost_usd": pl.Decimal(20, 10), "input_tokens": pl.Int64, "output_tokens": pl.Int64,
        "latency_ms": pl.Int64, "ledger_id": pl.Int64, "error": pl.String,
    }
    order = ["row", *named.values(), *RESULT_COLUMNS[1:]]
    return pl.DataFrame(data, schema=schema).select(order)


def results_csv(actor: Actor, batch_id: int) -> bytes:
    return results_frame(actor, batch_id).write_csv().encode()


def results_parquet(actor: Actor, batch_id: int) -> bytes:
    out = io.BytesIO()
    results_frame(actor, batch_id).write_parquet(out)
    return out.getvalue()


# --- handing over to a worker ---------------------------------------------------------------


def launch(batch_id: int) -> threading.Thread:
    """Work the batch in a thread of this process; it outlives the browser session that started it."""
    from engine import batch_worker

    thread = threading.Thread(target=batch_worker.run, args=(batch_id, batch_worker.worker_id()),
                              name=f"batch-{batch_id}", daemon=True)
    thread.start()
    return thread
