"""What a call costs: the genai-prices catalog (its bundled data only), plus workspace overrides.

Everything is ``Decimal``. ``Usage`` holds what the vendor reported; ``Price`` is what we
computed from it, kept apart so that a price can be recomputed later.

Prices are historic: the catalog is asked for the price in force at the call's timestamp,
and an override applies from its ``effective_from``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from importlib.metadata import version

import genai_prices
from genai_prices.types import (
    TieredPrices,
    _collect_resolved_model_prices,
    _compute_registry_priced_counts,
    calc_unit_price,
)
from genai_prices.types import Usage as CatalogUsage
from genai_prices.units import _get_registry
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import audit, db
from engine.dbtypes import to_money, utcnow
from engine.errors import InvalidInput, NotFound
from engine.models import PriceOverride
from engine.permissions import Actor, authorize
from providers.base import Usage  # the vendor's numbers, as providers report them

MTOK = Decimal(1_000_000)
CATALOG_VERSION = f"genai-prices {version('genai-prices')}"

# Our provider ids → the catalog's, where they differ.
CATALOG_PROVIDER = {"gemini": "google", "openai-compatible": None}

# The catalog's usage keys → our cost components (anything else goes by its direction).
CATALOG_COMPONENT = {
    "input_tokens": "input",
    "cache_read_tokens": "cached_input",
    "cache_write_tokens": "cache_write",
    "cache_write_1h_tokens": "cache_write",
    "output_tokens": "output",
}
COMPONENTS = ("input", "cached_input", "cache_write", "output", "images", "characters", "seconds")


@dataclass(frozen=True)
class Price:
    """A call's cost by component, each rounded to 1e-10 USD; ``total`` is their exact sum.

    ``input`` is the uncached prompt tokens only; cache reads and writes have their own parts.
    ``version`` says which price list produced it (the catalog's release, or an override's id).
    """

    input: Decimal = Decimal(0)
    cached_input: Decimal = Decimal(0)
    cache_write: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    images: Decimal = Decimal(0)
    characters: Decimal = Decimal(0)
    seconds: Decimal = Decimal(0)
    source: str = "catalog"
    version: str = CATALOG_VERSION

    @property
    def total(self) -> Decimal:
        return sum((getattr(self, c) for c in COMPONENTS), Decimal(0))

    def components(self) -> dict[str, Decimal]:
        return {c: getattr(self, c) for c in COMPONENTS}


class UnpricedModel(LookupError):
    """Neither the catalog nor the workspace knows a price for this model."""


@dataclass(frozen=True)
class Rates:
    """USD per single unit. Linear pricing: cost = Σ count × rate, with cached tokens at their own rate."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    image: Decimal = Decimal(0)
    character: Decimal = Decimal(0)
    second: Decimal = Decimal(0)
    source: str = "catalog"
    version: str = CATALOG_VERSION

    def price(self, usage: Usage) -> Price:
        uncached = max(usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens, 0)
        return Price(
            input=to_money(uncached * self.input),
            cached_input=to_money(usage.cached_input_tokens * self.cache_read),
            cache_write=to_money(usage.cache_write_tokens * self.cache_write),
            output=to_money(usage.output_tokens * self.output),
            images=to_money(usage.images * self.image),
            characters=to_money(usage.characters * self.character),
            seconds=to_money(usage.seconds * self.second),
            source=self.source,
            version=self.version,
        )


def _catalog_usage(usage: Usage) -> genai_prices.Usage:
    return genai_prices.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cached_input_tokens or None,
        cache_write_tokens=usage.cache_write_tokens or None,
    )


def _catalog_price(provider: str, model: str, usage: Usage, at: datetime) -> Price:
    """The catalog's general path (tiered prices), split by the catalog's own units into our components."""
    _, info = _find(provider, model)
    model_price = info.get_prices(at)
    resolved = _collect_resolved_model_prices(model_price, _get_registry())
    counted = CatalogUsage.from_raw(_catalog_usage(usage))
    counts = _compute_registry_priced_counts(resolved, counted)
    tiered = any(isinstance(p, TieredPrices) for _, p in resolved)
    parts = dict.fromkeys(COMPONENTS, Decimal(0))
    for unit, unit_price in resolved:
        cost = calc_unit_price(unit_price, counts[unit.usage_key], counted.input_tokens if tiered else 0, unit.per)
        component = CATALOG_COMPONENT.get(unit.usage_key)
        if component is None:
            component = "input" if unit.dimensions.get("direction") == "input" else "output"
        parts[component] += cost
    return Price(**{c: to_money(v) for c, v in parts.items()})


_linear: dict[int, Rates | None] = {}


def catalog_rates(provider: str, model: str, at: datetime) -> Rates | None:
    """Per-token rates in force at ``at``, or None when the model's price is tiered (not linear).

    Derived from the catalog itself by pricing a million of each unit, so this fast path and
    ``calc_price`` cannot disagree; cached per catalog price entry, so it is exact at any time.
    """
    snap_provider, info = _find(provider, model)
    model_price = info.get_prices(at)
    key = id(model_price)
    if key not in _linear:
        if any(isinstance(v, TieredPrices) for v in vars(model_price).values()):
            _linear[key] = None
        else:

            def per(**kw) -> Decimal:
                calc = info.calc_price(genai_prices.Usage(**kw), snap_provider, genai_request_timestamp=at)
                return calc.total_price / MTOK

            _linear[key] = Rates(
                input=per(input_tokens=MTOK),
                output=per(output_tokens=MTOK),
                cache_read=per(input_tokens=MTOK, cache_read_tokens=MTOK),
                cache_write=per(input_tokens=MTOK, cache_write_tokens=MTOK),
            )
    return _linear[key]


def catalog_price(provider: str, model: str, usage: Usage, at: datetime) -> Price:
    """The catalog price of one call; linear prices skip the catalog's slower general path."""
    rates = catalog_rates(provider, model, at)
    return rates.price(usage) if rates is not None else _catalog_price(provider, model, usage, at)


@lru_cache(maxsize=1024)
def _find(provider: str, model: str):
    from genai_prices.data_snapshot import get_snapshot

    try:
        return get_snapshot().find_provider_model(model, None, CATALOG_PROVIDER.get(provider, provider), None)
    except LookupError as exc:
        raise UnpricedModel(f"No price is known for {provider}/{model}; add one under Settings → Prices.") from exc


def _override(session: Session, workspace_id: int, provider: str, model: str, at: datetime) -> PriceOverride | None:
    return session.scalar(
        select(PriceOverride)
        .where(
            PriceOverride.workspace_id == workspace_id,
            PriceOverride.provider == provider,
            PriceOverride.model == model,
            PriceOverride.effective_from <= at,
        )
        .order_by(PriceOverride.effective_from.desc())
        .limit(1)
    )


def override_rates(o: PriceOverride) -> Rates:
    return Rates(
        input=o.input_mtok / MTOK,
        output=o.output_mtok / MTOK,
        cache_read=(o.cache_read_mtok if o.cache_read_mtok is not None else o.input_mtok) / MTOK,
        cache_write=(o.cache_write_mtok if o.cache_write_mtok is not None else o.input_mtok) / MTOK,
        image=o.per_image or Decimal(0),
        character=(o.per_1k_characters or Decimal(0)) / 1000,
        second=o.per_second or Decimal(0),
        source="override",
        version=f"override #{o.id}",
    )


@dataclass(frozen=True)
class PriceList:
    """A workspace's overrides for a few models, read once, then used to price without the database."""

    overrides: dict[tuple[str, str], list[tuple[datetime, Rates]]]  # newest first

    def price(self, provider: str, model: str, usage: Usage, at: datetime | None = None) -> Price:
        at = at or utcnow()
        for effective_from, rates in self.overrides.get((provider, model), ()):
            if effective_from <= at:
                return rates.price(usage)
        return catalog_price(provider, model, usage, at)


def price_list(session: Session, workspace_id: int, models: set[tuple[str, str]]) -> PriceList:
    providers = {p for p, _ in models}
    names = {m for _, m in models}
    rows = session.scalars(
        select(PriceOverride)
        .where(PriceOverride.workspace_id == workspace_id, PriceOverride.provider.in_(providers),
               PriceOverride.model.in_(names))
        .order_by(PriceOverride.effective_from.desc())
    ).all() if models else []
    found: dict[tuple[str, str], list[tuple[datetime, Rates]]] = {}
    for o in rows:
        if (o.provider, o.model) in models:
            found.setdefault((o.provider, o.model), []).append((o.effective_from, override_rates(o)))
    return PriceList(found)


def price(
    provider: str,
    model: str,
    usage: Usage,
    *,
    at: datetime | None = None,
    workspace_id: int | None = None,
    session: Session | None = None,
) -> Price:
    """Price one call. A workspace override in force at ``at`` wins over the catalog."""
    at = at or utcnow()
    if workspace_id is not None:
        if session is None:
            with db.read_session() as s:
                o = _override(s, workspace_id, provider, model, at)
        else:
            o = _override(session, workspace_id, provider, model, at)
        if o is not None:
            return override_rates(o).price(usage)
    return catalog_price(provider, model, usage, at)


def is_priced(provider: str, model: str, workspace_id: int | None = None) -> bool:
    try:
        price(provider, model, Usage(input_tokens=1), workspace_id=workspace_id)
    except UnpricedModel:
        return False
    return True


# --- overrides, managed from Settings ------------------------------------------------------


@dataclass(frozen=True)
class OverrideView:
    id: int
    provider: str
    model: str
    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal | None
    effective_from: datetime
    note: str | None
    per_image: Decimal | None = None
    per_1k_characters: Decimal | None = None
    per_second: Decimal | None = None


def _rate(value, label: str) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        d = Decimal(str(value).strip())
    except ArithmeticError:
        raise InvalidInput(f"{label} must be a number of dollars, like 0.15.") from None
    if not d.is_finite() or d < 0:
        raise InvalidInput(f"{label} must be zero or more.")
    if d >= 1_000_000:  # and Money must fit SQLite's integer of 1e-10 USD (under ~9.2e8)
        raise InvalidInput(f"{label} must be under $1,000,000 per million tokens.")
    return d


def set_override(
    actor: Actor,
    *,
    provider: str,
    model: str,
    input_mtok,
    output_mtok,
    cache_read_mtok=None,
    per_image=None,
    per_1k_characters=None,
    per_second=None,
    effective_from: datetime | None = None,
    note: str | None = None,
) -> OverrideView:
    """Price a model for this workspace from now on: tokens per million, and media per unit."""
    provider, model = (provider or "").strip(), (model or "").strip()
    if not provider or not model:
        raise InvalidInput("Give both a provider and a model.")
    if len(provider) > 64 or len(model) > 200:
        raise InvalidInput("Provider names are at most 64 characters and model names at most 200.")
    rates = {
        "input_mtok": _rate(input_mtok, "Input price") or Decimal(0),
        "output_mtok": _rate(output_mtok, "Output price") or Decimal(0),
        "cache_read_mtok": _rate(cache_read_mtok, "Cached input price"),
        "per_image": _rate(per_image, "Price per image"),
        "per_1k_characters": _rate(per_1k_characters, "Price per 1,000 characters"),
        "per_second": _rate(per_second, "Price per second"),
    }
    with db.transaction() as s:
        authorize(s, actor, "price.write")
        o = PriceOverride(
            workspace_id=actor.workspace_id,
            provider=provider,
            model=model,
            effective_from=effective_from or utcnow(),
            note=note,
            created_by=actor.user_id,
            **rates,
        )
        s.add(o)
        s.flush()
        audit.record_for(s, actor, "price.override_set", "price_override", o.id, provider=provider, model=model,
                         **{k: str(v) for k, v in rates.items() if v is not None})
        return _override_view(o)


def _override_view(o: PriceOverride) -> OverrideView:
    return OverrideView(o.id, o.provider, o.model, o.input_mtok, o.output_mtok, o.cache_read_mtok, o.effective_from,
                        o.note, o.per_image, o.per_1k_characters, o.per_second)


def list_overrides(actor: Actor) -> list[OverrideView]:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        rows = s.scalars(
            select(PriceOverride).where(PriceOverride.workspace_id == actor.workspace_id)
            .order_by(PriceOverride.provider, PriceOverride.model, PriceOverride.effective_from.desc())
        ).all()
    return [_override_view(o) for o in rows]


def delete_override(actor: Actor, override_id: int) -> None:
    with db.transaction() as s:
        authorize(s, actor, "price.write")
        o = s.get(PriceOverride, override_id)
        if o is None or o.workspace_id != actor.workspace_id:
            raise NotFound("That price override does not exist.")
        audit.record_for(s, actor, "price.override_deleted", "price_override", o.id, provider=o.provider, model=o.model)
        s.delete(o)
