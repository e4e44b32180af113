"""Cost & Usage: what the dashboard page may ask of a workspace's warehouse, and what caching saved.

``open_dashboard(actor)`` checks that the actor may read the workspace, then opens one
warehouse connection for a page's run; every question of that run goes through it. Periods are
resolved in the workspace's own timezone. The rest is ``analytics.queries``; the one thing
this module adds is pricing, which the analytics layer may not import: cached-token savings.

Cached-token savings are exact. A cache read costs less than an ordinary input token; what
it saved is ``cached tokens × (input rate − cache-read rate)``, at the rates in force when each
call was made (the workspace's price override if one applied, else the catalog). Writing a
cache can cost more than ordinary input (Anthropic charges 1.25×); that premium is
``cache-write tokens × (cache-write rate − input rate)``, and the net saving subtracts it.
Models whose price is tiered or unknown are named, not guessed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Literal

import duckdb
import plotly.graph_objects as go
import polars as pl
from sqlalchemy import select

from analytics import figures, queries, warehouse
from analytics.queries import Comparison, Filters, Options, Rows, StackBy
from engine import db, pricing
from engine.dbtypes import to_money, utcnow
from engine.errors import InvalidInput
from engine.models import PriceOverride, Workspace
from engine.permissions import Actor, authorize

PERIODS = queries.PERIODS
UNASSIGNED = queries.UNASSIGNED
TOP_DIMENSIONS = queries.TOP_DIMENSIONS
ExportFormat = Literal["csv", "parquet", "xlsx"]
EXPORT_FORMATS: dict[str, tuple[str, str]] = {  # format → (file extension, MIME type)
    "csv": ("csv", "text/csv"),
    "parquet": ("parquet", "application/vnd.apache.parquet"),
    "xlsx": ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
}
EXPORT_CAP = 100_000  # rows in one export; a bigger view should be narrowed or read through a notebook
TOP_LIMIT = 10


@dataclass(frozen=True)
class View:
    """The page's choices, before they are resolved against the workspace's calendar."""

    period: str = "7d"
    first: date | None = None  # custom periods only
    last: date | None = None
    client_id: int | None = None
    project_id: int | None = None
    provider: str | None = None
    model: str | None = None
    user_id: int | None = None
    kind: str | None = None
    tag: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class CacheSavings:
    """What prompt caching saved in the period; money exact to 1e-10 USD."""

    # provider, model, cached_input_tokens, cache_write_tokens, without_cache (the reads at the input
    # rate), with_cache (what they cost), saved, write_premium, net; biggest net saving first
    by_model: pl.DataFrame
    cached_input_tokens: int
    saved: Decimal  # cache reads at the input rate, minus what they cost
    write_premium: Decimal  # what writing caches cost above the input rate
    unpriced_models: tuple[str, ...]  # cached usage of models without a linear price: not counted

    @property
    def net(self) -> Decimal:
        return self.saved - self.write_premium


@dataclass(frozen=True)
class Summary:
    filters: Filters
    totals: Comparison
    over_time: pl.DataFrame
    comparison: pl.DataFrame
    top: dict[str, pl.DataFrame]  # by queries.TOP_DIMENSIONS
    savings: CacheSavings


class Dashboard:
    """One page run's view of one workspace: built by ``open_dashboard``, closed with it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, timezone: str, overrides: list[Override]):
        self._con = con
        self.timezone = timezone
        self._rates = _RateBook(overrides)

    def options(self) -> Options:
        return queries.options(self._con)

    def filters(self, view: View, now: datetime | None = None) -> Filters:
        return resolve(view, self.timezone, now)

    def summary(self, filters: Filters, stack_by: StackBy = "provider") -> Summary:
        con = self._con
        return Summary(
            filters,
            queries.totals(con, filters),
            queries.spend_over_time(con, filters, stack_by),
            queries.comparison(con, filters, stack_by),
            {d: queries.top(con, filters, d, TOP_LIMIT) for d in queries.TOP_DIMENSIONS},
            cache_savings(con, filters, self._rates),
        )

    def totals(self, filters: Filters) -> Comparison:
        """The headline figures alone (what an agent asking "what did we spend" needs)."""
        return queries.totals(self._con, filters)

    def breakdown(self, filters: Filters, by: str) -> pl.DataFrame:
        """Spend by provider or model (the comparison table) or by project (key, label, spend, calls)."""
        if by in ("provider", "model"):
            return queries.comparison(self._con, filters, by)
        return queries.top(self._con, filters, by, EXPORT_CAP)

    def rows(self, filters: Filters, limit: int, offset: int = 0) -> Rows:
        return queries.rows(self._con, filters, limit, offset)

    def export(self, filters: Filters, fmt: ExportFormat) -> bytes:
        return export_frame(queries.rows(self._con, filters, EXPORT_CAP).frame, fmt)


@contextmanager
def open_dashboard(actor: Actor) -> Iterator[Dashboard]:
    """The actor's workspace, readable by any member (viewers included), over one warehouse connection."""
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        timezone = s.get(Workspace, actor.workspace_id).timezone
        overrides = [
            Override(o.provider, o.model, o.effective_from, pricing.override_rates(o))
            for o in s.scalars(select(PriceOverride).where(PriceOverride.workspace_id == actor.workspace_id))
        ]
    con = warehouse.connect(actor.workspace_id)
    try:
        yield Dashboard(con, timezone, overrides)
    finally:
        con.close()


@dataclass(frozen=True)
class Charts:
    over_time: go.Figure
    comparison: go.Figure
    top: dict[str, go.Figure]  # by queries.TOP_DIMENSIONS
    savings: go.Figure


def charts(summary: Summary, stack_by: StackBy) -> Charts:
    return Charts(
        figures.spend_over_time(summary.over_time, stack_by, summary.filters.period.grain),
        figures.comparison(summary.comparison, stack_by),
        {d: figures.top(frame, d) for d, frame in summary.top.items()},
        figures.cache_savings(summary.savings.by_model),
    )


DRILL_FIELDS = {"provider": "provider", "model": "model", "tag": "tag", "project": "project_id", "user": "user_id",
                "workflow_run": "workflow_run_id", "cached": "cached"}


def drill(filters: Filters, point: dict) -> tuple[Filters, dict[str, object]] | None:
    """The filters narrowed to the rows behind a selected chart point, and what it stood for.

    The point comes back from the browser, so anything unexpected in it means no drill-down.
    """
    fields = figures.drill_of(point)
    narrowed: dict[str, object] = {}
    try:
        for name, value in fields.items():
            if name == "bucket":
                start, end = queries.bucket_bounds(filters, datetime.fromisoformat(str(value)))
                filters = filters.within(start, end)
                narrowed[name] = datetime.fromisoformat(str(value))
            elif name in ("project", "user", "workflow_run"):
                narrowed[name] = int(value)
            elif name == "cached":
                narrowed[name] = value is True
            elif name in DRILL_FIELDS:
                narrowed[name] = str(value)
    except (TypeError, ValueError):
        return None
    if not narrowed:
        return None
    return replace(filters, **{DRILL_FIELDS[k]: v for k, v in narrowed.items() if k in DRILL_FIELDS}), narrowed


def resolve(view: View, timezone: str, now: datetime | None = None) -> Filters:
    """The view's period as UTC bounds in ``timezone``, with its filters."""
    try:
        period = queries.period(view.period, timezone, now or utcnow(), view.first, view.last)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return Filters(period, view.client_id, view.project_id, view.provider, view.model, view.user_id,
                   view.kind, view.tag, view.status)


def export(actor: Actor, filters: Filters, fmt: ExportFormat) -> bytes:
    """The rows behind ``filters`` as a file, newest first, up to ``EXPORT_CAP`` rows (for a download)."""
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"Export as {', '.join(EXPORT_FORMATS)}, not {fmt!r}.")
    with open_dashboard(actor) as board:
        return board.export(filters, fmt)


def export_frame(frame: pl.DataFrame, fmt: ExportFormat) -> bytes:
    out = io.BytesIO()
    if fmt == "parquet":
        frame.write_parquet(out)
        return out.getvalue()
    flat = frame.with_columns(pl.col("tags").list.join(", "))
    if fmt == "csv":
        flat.write_csv(out)
    elif fmt == "xlsx":  # Excel has no timezones: local wall-clock times, as the page shows them
        flat.with_columns(pl.col("created_at").dt.replace_time_zone(None)).write_excel(out, worksheet="Ledger rows")
    else:
        raise InvalidInput(f"Export as {', '.join(EXPORT_FORMATS)}, not {fmt!r}.")
    return out.getvalue()


# --- cached-token savings --------------------------------------------------------------------

HALF_HOUR = timedelta(minutes=30)


@dataclass(frozen=True)
class Override:
    """A workspace's price override, as rates, from the moment it takes effect."""

    provider: str
    model: str
    effective_from: datetime
    rates: pricing.Rates


class _RateBook:
    """The per-token rates in force for a provider/model at an instant: a workspace override, else the catalog."""

    def __init__(self, overrides: list[Override]):
        self._overrides: dict[tuple[str, str], list[Override]] = {}
        for o in sorted(overrides, key=lambda o: o.effective_from):
            self._overrides.setdefault((o.provider, o.model), []).append(o)
        self.changes = sorted({o.effective_from for o in overrides})
        # Hours in which an override takes effect after the hour began.
        self._broken_hours = {_hour(c) for c in self.changes if c != _hour(c)}

    def at(self, provider: str, model: str, when: datetime) -> pricing.Rates | None:
        """None when the model's price is tiered or unknown."""
        applying = [o for o in self._overrides.get((provider, model), ()) if o.effective_from <= when]
        if applying:
            return applying[-1].rates
        return _catalog_rates(provider, model, when)

    def for_hour(self, provider: str, model: str, hour: datetime) -> tuple[bool, pricing.Rates | None]:
        """Whether one price holds for the whole UTC hour, and which (catalog prices change on the half hour at most)."""
        if hour in self._broken_hours:
            return False, None
        if (provider, model) not in self._overrides:
            return _catalog_hour(provider, model, hour)
        rates = self.at(provider, model, hour)
        return rates == self.at(provider, model, hour + HALF_HOUR), rates


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


@lru_cache(maxsize=262_144)  # a month of hours for a few hundred models: a page's rerun prices nothing again
def _catalog_hour(provider: str, model: str, hour: datetime) -> tuple[bool, pricing.Rates | None]:
    rates = _catalog_rates(provider, model, hour)
    return rates == _catalog_rates(provider, model, hour + HALF_HOUR), rates


@lru_cache(maxsize=65_536)
def _catalog_rates(provider: str, model: str, when: datetime) -> pricing.Rates | None:
    try:
        return pricing.catalog_rates(provider, model, when)
    except pricing.UnpricedModel:
        return None


def cache_savings(con: duckdb.DuckDBPyConnection, f: Filters, rates: _RateBook) -> CacheSavings:
    # Tokens are summed per price, and priced once per price: (provider, model, rates) → [cached, written].
    tokens: dict[tuple[str, str, pricing.Rates | None], list[int]] = {}

    def add(provider: str, model: str, r: pricing.Rates | None, cached: int, written: int) -> None:
        acc = tokens.setdefault((provider, model, r), [0, 0])
        acc[0] += cached
        acc[1] += written

    hourly = queries.cached_usage(con, f)
    mixed: set[tuple[str, str, datetime]] = set()
    for provider, model, hour, cached, written in zip(*(hourly[c].to_list() for c in (
            "provider", "model", "hour", "cached_input_tokens", "cache_write_tokens"))):
        hour = hour.replace(tzinfo=UTC)
        steady, r = rates.for_hour(provider, model, hour)
        if steady:
            add(provider, model, r, cached, written)
        else:
            mixed.add((provider, model, hour))
    if mixed:  # hours in which a model's price changed: split them where it did
        exact = queries.cached_usage_within(con, f, sorted({h for _, _, h in mixed}), sorted({m for _, m, _ in mixed}),
                                            rates.changes)
        for provider, model, priced_at, cached, written, _ in exact.iter_rows():
            priced_at = priced_at.replace(tzinfo=UTC)
            if (provider, model, _hour(priced_at)) in mixed:
                add(provider, model, rates.at(provider, model, priced_at), cached, written)

    per_model: dict[tuple[str, str], list] = {}
    unpriced: set[str] = set()
    for (provider, model, r), (cached, written) in tokens.items():
        if r is None:
            unpriced.add(f"{provider}/{model}")
            continue
        acc = per_model.setdefault((provider, model), [0, 0, Decimal(0), Decimal(0), Decimal(0)])
        acc[0] += cached
        acc[1] += written
        acc[2] += cached * r.input
        acc[3] += cached * r.cache_read
        acc[4] += written * (r.cache_write - r.input)
    records = []
    for (provider, model), (cached, written, without, with_, premium) in per_model.items():
        without, with_, premium = to_money(without), to_money(with_), to_money(premium)
        records.append({"provider": provider, "model": model, "cached_input_tokens": cached,
                        "cache_write_tokens": written, "without_cache": without, "with_cache": with_,
                        "saved": without - with_, "write_premium": premium, "net": without - with_ - premium})
    money = pl.Decimal(38, 10)
    schema = {"provider": pl.String, "model": pl.String, "cached_input_tokens": pl.Int64, "cache_write_tokens": pl.Int64,
              "without_cache": money, "with_cache": money, "saved": money, "write_premium": money, "net": money}
    frame = pl.DataFrame(records, schema=schema).sort(["net", "provider", "model"], descending=[True, False, False])
    return CacheSavings(
        frame,
        int(frame["cached_input_tokens"].sum()),
        sum(frame["saved"].to_list(), Decimal(0)),
        sum(frame["write_premium"].to_list(), Decimal(0)),
        tuple(sorted(unpriced)),
    )
