"""The plans in ``data/plans.yaml``, their limits, and the self-hosted plan when billing is off.

Billing is configured when ``METERBOOK_STRIPE_SECRET_KEY`` is set. Without it there is no
Stripe to pay, so every workspace runs on ``SELF_HOSTED``: no limits, every feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import yaml

from engine.config import PROJECT_ROOT, Settings, get_settings
from engine.errors import InvalidInput

PLANS_FILE = PROJECT_ROOT / "data" / "plans.yaml"

# Limits counted per workspace; "per month" ones reset on the 1st (UTC).
LIMITS = ("workflow_runs", "ai_spend", "workflows", "members", "schedules")
FEATURES = ("reports", "mcp_connectors")
LIMIT_LABELS = {
    "workflow_runs": "workflow runs this month",
    "ai_spend": "AI spend included this month",
    "workflows": "workflows",
    "members": "members (with open invitations)",
    "schedules": "schedules",
}
FEATURE_LABELS = {"reports": "scheduled reports", "mcp_connectors": "MCP connectors"}
MONTHLY = {"workflow_runs", "ai_spend"}


@dataclass(frozen=True)
class Plan:
    key: str
    name: str
    order: int
    monthly_price_usd: Decimal
    limits: dict[str, int | Decimal | None]  # None: unlimited
    overage: str  # "billed" or "blocked"
    features: dict[str, bool]
    price_id: str | None = None  # the Stripe price of the subscription's base item
    usage_price_id: str | None = None  # the metered price on the AI-spend meter
    paid: bool = False
    self_hosted: bool = False

    def limit(self, name: str) -> int | Decimal | None:
        return self.limits.get(name)

    def has(self, feature: str) -> bool:
        return bool(self.features.get(feature))

    @property
    def bills_usage(self) -> bool:
        return self.paid and self.overage == "billed" and self.usage_price_id is not None


SELF_HOSTED = Plan(key="self_hosted", name="Self-hosted", order=-1, monthly_price_usd=Decimal(0),
                   limits={name: None for name in LIMITS}, overage="billed",
                   features={name: True for name in FEATURES}, self_hosted=True)


def billing_configured(settings: Settings | None = None) -> bool:
    settings = settings or get_settings()
    return settings.stripe_secret_key is not None and bool(settings.stripe_secret_key.get_secret_value())


@lru_cache(maxsize=8)
def _read(path: Path, prices: tuple[tuple[str, str | None], ...]) -> dict[str, Plan]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    settings = dict(prices)
    plans = {}
    for key, spec in raw.items():
        limits: dict[str, int | Decimal | None] = {}
        for name in LIMITS:
            source = "ai_spend_included_usd" if name == "ai_spend" else name
            value = spec["limits"].get(source)
            limits[name] = None if value is None else (Decimal(str(value)) if name == "ai_spend" else int(value))
        if spec.get("overage") not in ("billed", "blocked"):
            raise InvalidInput(f"Plan {key} in {path.name}: overage must be billed or blocked.")
        plans[key] = Plan(
            key=key, name=spec["name"], order=int(spec["order"]),
            monthly_price_usd=Decimal(str(spec.get("monthly_price_usd", "0"))), limits=limits,
            overage=spec["overage"], features={f: bool(spec.get("features", {}).get(f)) for f in FEATURES},
            price_id=settings.get(spec.get("price_setting") or ""),
            usage_price_id=settings.get(spec.get("usage_price_setting") or ""),
            paid=spec.get("price_setting") is not None,
        )
    if "free" not in plans:
        raise InvalidInput(f"{path.name} must define a free plan: it is what a workspace falls back to.")
    return plans


def all_plans(settings: Settings | None = None) -> dict[str, Plan]:
    """Every plan by key, cheapest first, with its Stripe price ids filled in from settings."""
    settings = settings or get_settings()
    prices = tuple((name, getattr(settings, name)) for name in Settings.model_fields if name.startswith("stripe_price_"))
    return dict(sorted(_read(PLANS_FILE, prices).items(), key=lambda kv: kv[1].order))


def get(key: str) -> Plan:
    if key == SELF_HOSTED.key:
        return SELF_HOSTED
    plans = all_plans()
    if key not in plans:
        raise InvalidInput(f"There is no plan called {key!r}; choose one of {', '.join(plans)}.")
    return plans[key]


def free() -> Plan:
    return all_plans()["free"]


def plan_for_price(price_id: str) -> Plan | None:
    """The paid plan whose base price this is (what a subscription from Stripe is on)."""
    return next((p for p in all_plans().values() if p.price_id and p.price_id == price_id), None)
