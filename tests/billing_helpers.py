"""Billing switched on against the fake Stripe, and the webhook deliveries a test sends."""

from __future__ import annotations

import json
from contextlib import contextmanager

from engine.billing import limits, stripe_api
from engine.config import get_settings
from tests.fakes import stripe_server
from tests.fakes.stripe_server import FakeStripe, sign

ENV = {
    "METERBOOK_STRIPE_SECRET_KEY": stripe_server.SECRET_KEY,
    "METERBOOK_STRIPE_WEBHOOK_SECRET": stripe_server.WEBHOOK_SECRET,
    "METERBOOK_STRIPE_PRICE_PRO": "price_pro",
    "METERBOOK_STRIPE_PRICE_PRO_USAGE": "price_pro_usage",
    "METERBOOK_STRIPE_PRICE_BUSINESS": "price_business",
    "METERBOOK_STRIPE_PRICE_BUSINESS_USAGE": "price_business_usage",
    "METERBOOK_STRIPE_METER_ID": stripe_server.METER_ID,
    "METERBOOK_STRIPE_MAX_NETWORK_RETRIES": "0",
}


def reset_caches() -> None:
    get_settings.cache_clear()
    stripe_api._client.cache_clear()
    limits.forget()


@contextmanager
def billing_on(monkeypatch):
    with FakeStripe() as fake:
        for key, value in ENV.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("METERBOOK_STRIPE_API_BASE", fake.base_url)
        reset_caches()
        try:
            yield fake
        finally:
            for key in (*ENV, "METERBOOK_STRIPE_API_BASE"):
                monkeypatch.delenv(key, raising=False)
            reset_caches()


def deliver(event: dict, *, secret: str = stripe_server.WEBHOOK_SECRET, timestamp: int | None = None):
    from engine.billing.webhooks import handle_webhook

    payload = json.dumps(event).encode()
    return handle_webhook(payload, sign(payload, secret, timestamp))
