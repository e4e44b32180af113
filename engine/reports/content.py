"""What a report says, as data: the blocks of the email (figures, Markdown, tables, charts) and the tables to attach.

Built on the server from the report's source, read as the report's owner:

- a notebook through ``notebooks.notebook_snapshot`` (its stored results: Markdown, SQL tables,
  charts drawn again from their source cell's rows, prompt answers);
- a Cost & Usage view through ``dashboards.open_dashboard``: the period resolved in the
  workspace's timezone at the delivery's ``as_of`` instant (so a resend covers the same
  period), the headline figures against the previous period, spend over time, the top
  projects and people, the providers side by side, and the ledger rows behind it.

``empty_reason`` says why there is nothing to report (no rows in any table; no calls in the
period), for "skip if empty".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import polars as pl

from engine import dashboards, db, notebooks
from engine.errors import InvalidInput, NotFound
from engine.models import Workspace
from engine.notebook_render import cell_text, render_markdown
from engine.permissions import Actor
from engine.reports import charts

BODY_ROWS = 25  # rows of a table shown in the email; the attachments have all of them
EMAIL_LEDGER_ROWS = 10_000  # ledger rows attached to a Cost & Usage report; narrow the view or use a notebook for more
VIEW_FIELDS = tuple(f for f in dashboards.View.__dataclass_fields__)


@dataclass(frozen=True)
class Figure:
    label: str
    value: str
    change: str | None = None  # "+12% vs previous period"
    worse: bool | None = None  # whether the change is bad news (more spend, more errors)


@dataclass(frozen=True)
class Image:
    name: str  # unique in the message: the cid and the file name come from it
    png: bytes
    alt: str


@dataclass(frozen=True)
class Table:
    name: str  # file and sheet name
    title: str
    frame: pl.DataFrame
    in_body: bool = True
    note: str | None = None  # "showing 25 of 1,204 rows", "the query matched more rows than were kept"
    display: pl.DataFrame | None = None  # how the email and PDF show it (money as $, rates as %); else ``frame``

    @property
    def shown(self) -> pl.DataFrame:
        return self.display if self.display is not None else self.frame


@dataclass(frozen=True)
class Block:
    kind: str  # heading | markdown | figures | image | table | error | caption
    text: str = ""
    html: str = ""
    figures: tuple[Figure, ...] = ()
    image: Image | None = None
    table: Table | None = None


@dataclass(frozen=True)
class Content:
    title: str
    subtitle: str
    workspace: str
    blocks: tuple[Block, ...]
    tables: tuple[Table, ...]
    images: tuple[Image, ...]
    empty_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- views, as stored ---------------------------------------------------------------------


def view_to_dict(view: dashboards.View) -> dict[str, Any]:
    out = {}
    for name in VIEW_FIELDS:
        value = getattr(view, name)
        if value is not None:
            out[name] = value.isoformat() if isinstance(value, date) else value
    return out


def view_from_dict(data: dict[str, Any] | None) -> dashboards.View:
    data = dict(data or {})
    unknown = set(data) - set(VIEW_FIELDS)
    if unknown:
        raise InvalidInput(f"A Cost & Usage view has no field {sorted(unknown)[0]!r}.")
    try:
        for name in ("first", "last"):
            if isinstance(data.get(name), str):
                data[name] = date.fromisoformat(data[name])
        for name in ("client_id", "project_id", "user_id"):
            if data.get(name) is not None:
                if isinstance(data[name], bool):
                    raise ValueError(name)
                data[name] = int(data[name])
    except ValueError:
        raise InvalidInput("The view's dates are YYYY-MM-DD and its client, project and person are ids.") from None
    for name in ("period", "provider", "model", "kind", "tag", "status"):
        if data.get(name) is not None and (not isinstance(data[name], str) or len(data[name]) > 200):
            raise InvalidInput(f"The view's {name} must be text of at most 200 characters.")
    return dashboards.View(**data)


# --- formatting ---------------------------------------------------------------------------


def usd(value: Decimal | None) -> str:
    if value is None:
        return "—"
    if value and abs(value) < Decimal("0.01"):
        return f"${value:,.4f}"
    return f"${value:,.2f}"


def _change(now: Decimal | float | None, before: Decimal | float | None, *, more_is_worse: bool | None) -> tuple:
    if now is None or before is None or not before:
        return None, None
    ratio = (Decimal(str(now)) - Decimal(str(before))) / Decimal(str(before)) * 100
    if abs(ratio) < Decimal("0.5"):
        return "no change vs previous period", None
    worse = None if more_is_worse is None else (ratio > 0) == more_is_worse
    return f"{ratio:+.0f}% vs previous period", worse


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _workspace(workspace_id: int) -> Workspace:
    with db.read_session() as s:
        ws = s.get(Workspace, workspace_id)
        if ws is None:
            raise NotFound("That workspace no longer exists.")
        s.expunge(ws)
        return ws


def _body(table: Table) -> Table:
    if table.frame.height <= BODY_ROWS:
        return table
    note = f"Showing {BODY_ROWS} of {table.frame.height:,} rows; the attachments have all of them."
    return Table(table.name, table.title, table.frame, table.in_body, " ".join(filter(None, [table.note, note])),
                 table.display)


def _shown(frame: pl.DataFrame, headers: dict[str, str]) -> pl.DataFrame:
    """A Cost & Usage table as people read it: money in dollars, rates in percent, latencies in ms."""
    def fmt(name: str, values: list) -> list[str]:
        if name in ("spend", "cost_per_1k_tokens"):
            return [usd(v) for v in values]
        if name == "error_rate":
            return ["—" if v is None else f"{v:.1%}" for v in values]
        if name.endswith("_ms"):
            return [_ms(v) for v in values]
        if name in ("calls", "tokens"):
            return ["—" if v is None else f"{v:,}" for v in values]
        return ["" if v is None else str(v) for v in values]

    return pl.DataFrame({headers.get(c, c): fmt(c, frame[c].to_list()) for c in frame.columns})


def rows_of(frame: pl.DataFrame, limit: int = BODY_ROWS) -> list[list[str]]:
    return [[cell_text(v) if not isinstance(v, list) else ", ".join(map(str, v)) for v in row]
            for row in frame.head(limit).iter_rows()]


# --- a notebook ---------------------------------------------------------------------------


def from_notebook(owner: Actor, notebook_id: int | None, title: str) -> Content:
    if notebook_id is None:
        raise NotFound("The notebook this report sends was deleted. Pick another notebook for it.")
    snap = notebooks.notebook_snapshot(owner, notebook_id)
    ws = _workspace(owner.workspace_id)
    by_number = {c.number: c for c in snap.cells}
    blocks: list[Block] = []
    tables: list[Table] = []
    images: list[Image] = []
    for cell in snap.cells:
        if cell.kind == "markdown":
            if cell.source.strip():
                blocks.append(Block("markdown", text=cell.source, html=render_markdown(cell.source)))
        elif cell.kind == "prompt":
            if cell.frame is not None and cell.frame.height:
                answer = cell.frame["answer"][0] or ""
                blocks.append(Block("markdown", text=answer, html=render_markdown(answer)))
        elif cell.kind == "sql":
            if cell.error:
                blocks.append(Block("error", text=f"Cell {cell.number} failed when it last ran: {cell.error}"))
            elif cell.frame is None:
                blocks.append(Block("error", text=f"Cell {cell.number} has not been run: it has no result to show."))
            else:
                note = "The query matched more rows than were kept." if cell.truncated else None
                table = Table(f"cell-{cell.number}", f"Cell {cell.number}", cell.frame, True, note)
                tables.append(table)
                blocks.append(Block("table", table=_body(table)))
                if cell.ran_at:
                    blocks.append(Block("caption", text=f"{cell.frame.height:,} rows · ran "
                                                        f"{cell.ran_at:%Y-%m-%d %H:%M} UTC"))
        elif cell.kind == "chart":
            source = by_number.get(cell.source_number) if cell.source_number else None
            if cell.error or source is None or source.frame is None:
                blocks.append(Block("error", text=f"Chart in cell {cell.number} cannot be drawn: "
                                                  f"{cell.error or 'its source cell has no result.'}"))
                continue
            image = Image(f"chart-{cell.number}", charts.cell_chart(cell.options, source.frame),
                          cell.options.get("title") or f"Chart of {cell.options.get('y')} by {cell.options.get('x')}")
            images.append(image)
            blocks.append(Block("image", image=image))
    empty = None if any(t.frame.height for t in tables) else "No table in the notebook has any rows."
    return Content(title, f"{snap.title} · results as stored {snap.taken_at:%Y-%m-%d %H:%M} UTC", ws.name,
                   tuple(blocks), tuple(tables), tuple(images), empty)


# --- a Cost & Usage view ------------------------------------------------------------------


def _figures(cmp) -> tuple[Figure, ...]:
    cur, prev = cmp.current, cmp.previous

    def fig(label, value, now, before, worse):
        change, bad = _change(now, before, more_is_worse=worse)
        return Figure(label, value, change, bad)

    rate = lambda t: None if t.error_rate is None else t.error_rate * 100  # noqa: E731
    return (
        fig("Spend", usd(cur.spend), cur.spend, prev.spend, True),
        fig("Calls", f"{cur.calls:,}", cur.calls, prev.calls, None),
        fig("Tokens", f"{cur.tokens:,}", cur.tokens, prev.tokens, None),
        fig("Avg cost per call", usd(cur.cost_per_call), cur.cost_per_call, prev.cost_per_call, True),
        Figure("Error rate", "—" if cur.error_rate is None else f"{cur.error_rate:.1%}",
               *((f"{rate(cur) - rate(prev):+.1f} pts vs previous period", rate(cur) > rate(prev))
                 if rate(cur) is not None and rate(prev) is not None and rate(cur) != rate(prev) else (None, None))),
        fig("Latency p50", _ms(cur.p50_ms), cur.p50_ms, prev.p50_ms, True),
        fig("Latency p95", _ms(cur.p95_ms), cur.p95_ms, prev.p95_ms, True),
    )


def from_dashboard(owner: Actor, view_data: dict[str, Any] | None, title: str, as_of: datetime) -> Content:
    view = view_from_dict(view_data)
    ws = _workspace(owner.workspace_id)
    with dashboards.open_dashboard(owner) as board:
        filters = board.filters(view, as_of)
        summary = board.summary(filters)
        ledger = board.rows(filters, EMAIL_LEDGER_ROWS)
        options = board.options()
    period = filters.period
    figures = _figures(summary.totals)
    blocks: list[Block] = [Block("figures", figures=figures)]
    images: list[Image] = []
    tables: list[Table] = []
    if not summary.over_time.is_empty():
        images.append(Image("spend-over-time", charts.spend_over_time(summary.over_time, period.grain),
                            "Spend over time by provider"))
        blocks.append(Block("image", image=images[-1]))
    for dim, label in (("project", "Top projects"), ("user", "Top people")):
        frame = summary.top[dim]
        if not frame.is_empty():
            if frame.height > 1:  # one bar says nothing the table does not
                images.append(Image(f"top-{dim}s", charts.top_bars(frame, label), f"{label} by spend"))
                blocks.append(Block("image", image=images[-1]))
            top = frame.select(pl.col("label").alias(dim), "spend", "calls")
            tables.append(Table(f"top-{dim}s", label, top,
                                display=_shown(top, {dim: dim.title(), "spend": "Spend", "calls": "Calls"})))
            blocks.append(Block("table", table=_body(tables[-1])))
    comparison = summary.comparison.select("provider", "calls", "tokens", "spend", "cost_per_1k_tokens",
                                           "error_rate", "p50_ms", "p95_ms")
    if not comparison.is_empty():
        tables.insert(0, Table("providers", "Providers side by side", comparison, display=_shown(comparison, {
            "provider": "Provider", "calls": "Calls", "tokens": "Tokens", "spend": "Spend",
            "cost_per_1k_tokens": "Per 1k tokens", "error_rate": "Errors", "p50_ms": "p50", "p95_ms": "p95"})))
        blocks.append(Block("table", table=_body(tables[0])))
    figure_rows = pl.DataFrame({"figure": [f.label for f in figures], "value": [f.value for f in figures],
                                "change": [f.change or "" for f in figures]})
    tables.insert(0, Table("figures", "Figures", figure_rows, in_body=False))
    note = (f"The newest {EMAIL_LEDGER_ROWS:,} of {ledger.total:,} rows; export the rest from Cost & Usage."
            if ledger.total > ledger.frame.height else None)
    tables.append(Table("ledger-rows", "Ledger rows", ledger.frame, in_body=False, note=note))
    cur = summary.totals.current
    empty = "No calls were made in the period." if cur.calls == 0 and not cur.spend else None
    names = {"client_id": options.clients, "project_id": options.projects, "user_id": options.users}
    narrowed = [f"{k.replace('_id', '')} {names.get(k, {}).get(v, v)}" for k, v in view_to_dict(view).items()
                if k not in ("period", "first", "last")]
    subtitle = f"{dashboards.PERIODS.get(period.key, period.key)} · {period.describe()} ({period.tz})"
    if narrowed:
        subtitle += " · " + ", ".join(narrowed)
    return Content(title, subtitle, ws.name, tuple(blocks), tuple(tables), tuple(images), empty)
