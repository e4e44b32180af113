"""How each routed provider/model is doing: its breaker state now, its last 24 hours, and its price.

The Providers page shows the history; the Generate page shows, beside each target it offers,
whether the target is healthy and what it charges. The history is summarised from the ledger
(one row per attempt that reached a vendor) with SQL aggregates; attempts refused before
reaching the vendor (connection refused) write no ledger row and show only in the breaker
state that ``engine.routes`` reports.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from engine import db, pricing, routes
from engine.dbtypes import utcnow
from engine.errors import InvalidInput
from engine.models import LedgerEntry, ProviderConnection
from engine.permissions import Actor, authorize
from engine.routes import TargetView
from providers.base import Usage

OK_STATUSES = ("ok", "cancelled")  # a cancelled call says nothing against the target
MAX_HOURS = 24 * 7
PRICE_SAMPLE = 1000  # units priced to derive a rate: small enough to stay in a catalog's first tier


# --- the last hours, from the ledger --------------------------------------------------------


@dataclass(frozen=True)
class HourCount:
    hour: datetime  # start of the UTC hour
    ok: int
    failed: int


@dataclass(frozen=True)
class TargetHistory:
    connection_id: int
    connection: str
    model: str
    calls: int
    ok: int
    failed: int
    cancelled: int
    avg_latency_ms: int | None  # of successful calls
    cost: Decimal  # priced calls only
    last_call_at: datetime
    last_error: str | None
    hours: tuple[HourCount, ...]  # every hour of the window, oldest first

    @property
    def label(self) -> str:
        return f"{self.connection}/{self.model}"

    @property
    def success_rate(self) -> float | None:
        judged = self.ok + self.failed
        return self.ok / judged if judged else None


def _hour(dialect: str):
    if dialect == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", LedgerEntry.created_at))
    return func.strftime("%Y-%m-%d %H:00:00", LedgerEntry.created_at)


def _as_utc(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def history(actor: Actor, *, hours: int = 24, now: datetime | None = None) -> list[TargetHistory]:
    """Per connection/model, what its calls in the last ``hours`` did; busiest first."""
    if not 1 <= hours <= MAX_HOURS:
        raise InvalidInput(f"Choose between 1 and {MAX_HOURS} hours of history.")
    now = now or utcnow()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    with db.read_session() as s:
        authorize(s, actor, "provider.read")
        return _history(s, actor.workspace_id, start, end)


def _history(s: Session, workspace_id: int, start: datetime, end: datetime) -> list[TargetHistory]:
    L = LedgerEntry
    window = (L.workspace_id == workspace_id, L.connection_id.is_not(None), L.created_at >= start,
              L.created_at < end)
    failed = L.status.not_in(OK_STATUSES)
    totals = s.execute(
        select(L.connection_id, ProviderConnection.name, L.model, func.count(),
               func.sum(case((L.status == "ok", 1), else_=0)), func.sum(case((failed, 1), else_=0)),
               func.sum(case((L.status == "cancelled", 1), else_=0)),
               func.avg(case((L.status == "ok", L.latency_ms))), func.sum(L.cost), func.max(L.created_at))
        .join(ProviderConnection, ProviderConnection.id == L.connection_id)
        .where(*window)
        .group_by(L.connection_id, ProviderConnection.name, L.model)
    ).all()
    hour = _hour(s.get_bind().dialect.name).label("hour")
    per_hour: dict[tuple[int, str], dict[datetime, tuple[int, int]]] = defaultdict(dict)
    for connection_id, model, h, ok, bad in s.execute(
        select(L.connection_id, L.model, hour, func.sum(case((L.status == "ok", 1), else_=0)),
               func.sum(case((failed, 1), else_=0)))
        .where(*window).group_by(L.connection_id, L.model, hour)
    ):
        per_hour[(connection_id, model)][_as_utc(h)] = (int(ok or 0), int(bad or 0))
    latest_failure = select(func.max(L.id)).where(*window, failed).group_by(L.connection_id, L.model)
    errors = {(c, m): e for c, m, e in s.execute(
        select(L.connection_id, L.model, L.error).where(L.id.in_(latest_failure)))}

    slots = [start + timedelta(hours=i) for i in range(int((end - start) / timedelta(hours=1)))]
    out = []
    for connection_id, name, model, calls, ok, bad, cancelled, latency, cost, last in totals:
        counts = per_hour.get((connection_id, model), {})
        out.append(TargetHistory(
            connection_id, name, model, int(calls), int(ok or 0), int(bad or 0), int(cancelled or 0),
            round(float(latency)) if latency is not None else None, cost or Decimal(0), _as_utc(last),
            errors.get((connection_id, model)),
            tuple(HourCount(h, *counts.get(h, (0, 0))) for h in slots),
        ))
    out.sort(key=lambda t: (-t.calls, t.label))
    return out


# --- the targets a caller may pick ----------------------------------------------------------


@dataclass(frozen=True)
class UnitPrices:
    """USD per unit, from the workspace's override or the catalog; zero where a unit is not charged."""

    input_mtok: Decimal
    output_mtok: Decimal
    per_image: Decimal
    per_1k_characters: Decimal
    per_second: Decimal
    source: str  # "catalog" or "override"


@dataclass(frozen=True)
class TargetStatus:
    view: TargetView
    prices: UnitPrices | None  # None: no price is known, so calls are recorded unpriced

    @property
    def label(self) -> str:
        return self.view.label

    @property
    def health(self) -> str:
        return health_text(self.view)


def health_text(t: TargetView) -> str:
    """The breaker state in words."""
    if t.state == "open":
        return f"paused after {t.consecutive_failures} failures"
    if t.state == "unknown":
        return "not called yet"
    if t.consecutive_failures:
        return f"healthy, {t.consecutive_failures} recent failure{'s' if t.consecutive_failures != 1 else ''}"
    return "healthy"


def _unit_prices(prices: pricing.PriceList, provider: str, model: str) -> UnitPrices | None:
    def rate(usage: Usage, per: int) -> Decimal:
        return (prices.price(provider, model, usage).total * per / PRICE_SAMPLE).normalize()

    try:
        return UnitPrices(
            input_mtok=rate(Usage(input_tokens=PRICE_SAMPLE), 1_000_000),
            output_mtok=rate(Usage(output_tokens=PRICE_SAMPLE), 1_000_000),
            per_image=rate(Usage(images=PRICE_SAMPLE), 1),
            per_1k_characters=rate(Usage(characters=PRICE_SAMPLE), 1000),
            per_second=rate(Usage(seconds=Decimal(PRICE_SAMPLE)), 1),
            source=prices.price(provider, model, Usage()).source,
        )
    except pricing.UnpricedModel:
        return None


def targets(actor: Actor, kind: str) -> list[TargetStatus]:
    """The enabled targets of the kind's route, in route order, with their health and prices."""
    enabled = [t for t in routes.get_route(actor, kind).targets if t.enabled]
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        price_as = {cid: price or ptype for cid, price, ptype in s.execute(
            select(ProviderConnection.id, ProviderConnection.price_provider, ProviderConnection.provider_type)
            .where(ProviderConnection.workspace_id == actor.workspace_id,
                   ProviderConnection.enabled.is_(True)))}
        enabled = [t for t in enabled if t.connection_id in price_as]
        prices = pricing.price_list(s, actor.workspace_id, {(price_as[t.connection_id], t.model) for t in enabled})
    return [TargetStatus(t, _unit_prices(prices, price_as[t.connection_id], t.model)) for t in enabled]
