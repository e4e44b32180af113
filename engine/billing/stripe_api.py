"""The one way to Stripe: a ``StripeClient`` from settings, and Stripe's errors as ours.

``METERBOOK_STRIPE_API_BASE`` points the client at another address (the fake Stripe in tests).
Every POST that creates something passes an idempotency key made from the row of ours that
asked for it, so a crash and a retry get back the same customer or session. What Stripe says
in an error is passed on, but never a URL: checkout and portal links are bearer links.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import stripe

from engine.billing.plans import billing_configured
from engine.config import get_settings
from engine.errors import MeterbookError

log = logging.getLogger(__name__)


class _NoBodies(logging.Filter):
    """The Stripe library logs request and response bodies at DEBUG: checkout and portal URLs are
    bearer links and bodies carry customers' emails, so those records never leave the library."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return "API response body" not in text and "Post details" not in text


logging.getLogger("stripe").addFilter(_NoBodies())


class BillingError(MeterbookError):
    """Something about billing went wrong; the message says what to do."""


class BillingNotConfigured(BillingError):
    pass


class StripeUnavailable(BillingError):
    """Stripe could not be reached or failed on its side: try again later; nothing was changed here."""


class StripeRefused(BillingError):
    """Stripe refused the request (bad parameters, unknown object)."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


def client() -> stripe.StripeClient:
    if not billing_configured():
        raise BillingNotConfigured("Billing is not configured: set METERBOOK_STRIPE_SECRET_KEY (and the price ids) "
                                   "to take payments. Until then the workspace runs self-hosted, without limits.")
    s = get_settings()
    return _client(s.stripe_secret_key.get_secret_value(), s.stripe_api_base, s.stripe_max_network_retries)


@lru_cache(maxsize=4)
def _client(key: str, api_base: str | None, retries: int) -> stripe.StripeClient:
    bases = {"api": api_base, "meter_events": api_base} if api_base else None
    return stripe.StripeClient(key, base_addresses=bases, max_network_retries=retries)


def translate(exc: stripe.StripeError, doing: str) -> BillingError:
    """Our error for one of Stripe's. ``doing`` says what we were trying, for the message."""
    if isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError)) or (exc.http_status or 0) >= 500:
        log.warning("Stripe unavailable while %s: %s", doing, type(exc).__name__)
        return StripeUnavailable(f"Stripe could not be reached while {doing}. Nothing was changed; try again in a "
                                 "minute.")
    if isinstance(exc, stripe.AuthenticationError):
        return BillingError(f"Stripe refused Meterbook's API key while {doing}: check METERBOOK_STRIPE_SECRET_KEY.")
    message = exc.user_message or str(exc.error.message if exc.error else exc) or type(exc).__name__
    return StripeRefused(f"Stripe refused {doing}: {message}", getattr(exc, "code", None))
