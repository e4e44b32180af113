"""A fake Stripe on 127.0.0.1 that keeps state and speaks Stripe's REST format.

The real ``stripe.StripeClient`` is pointed at it through ``base_addresses``: form-encoded
POSTs, ``Idempotency-Key`` replays (the stored answer, with ``Idempotent-Replayed: true``),
errors as ``{"error": {"type", "message", "code", "param"}}``. It holds customers, checkout
and portal sessions, subscriptions, invoices and billing meter events, and refuses a meter
event whose identifier it already has exactly as Stripe does (400 ``invalid_request_error``,
"An event already exists with identifier …", ``Stripe-Should-Retry: false``), or one older
than 35 days.

What Stripe's dashboard or a customer would do (paying, a card failing, cancelling) is done
by the test through methods here, which change the state and return the webhook event Stripe
would send; ``sign`` signs a payload the way Stripe does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.wire import Exchange, Received, WireServer

SECRET_KEY = "sk_test_fake0123456789abcdef"
WEBHOOK_SECRET = "whsec_fake0123456789abcdef"
PRICES = {"price_pro": "Pro monthly", "price_pro_usage": "Pro AI spend", "price_business": "Business monthly",
          "price_business_usage": "Business AI spend"}
METER_ID = "mtr_fake_ai_spend"
METER_EVENT_NAME = "meterbook_ai_spend"
MAX_EVENT_AGE = 35 * 86400


def _form(raw: bytes) -> dict[str, str]:
    """Stripe's bracketed form keys kept flat: ``line_items[0][price]`` stays one key."""
    return dict(parse_qsl(raw.decode(), keep_blank_values=True)) if raw else {}


def _nested(form: dict[str, str], prefix: str) -> dict[str, str]:
    """``metadata[a]=1`` → ``{"a": "1"}``."""
    start = prefix + "["
    return {k[len(start):-1]: v for k, v in form.items() if k.startswith(start) and k.count("[") == 1}


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header: ``t=…,v1=HMAC-SHA256(secret, "t.payload")``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class StripeError(Exception):
    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, retry: bool | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param, self.retry = status, message, kind, code, param, retry


class FakeStripe:
    """``with FakeStripe() as fake:`` then ``StripeClient(SECRET_KEY, base_addresses={"api": fake.base_url})``."""

    def __init__(self, api_key: str = SECRET_KEY):
        self.api_key = api_key
        self.customers: dict[str, dict] = {}
        self.sessions: dict[str, dict] = {}
        self.portal_sessions: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.meter_events: dict[str, dict] = {}  # by identifier
        self.duplicates_refused = 0
        self.outage = False  # True: drop every connection, as an unreachable Stripe would look
        self.meter_reply_delay = 0.0  # seconds between storing a meter event and answering (a crash window)
        self._idempotent: dict[tuple[str, str], tuple[int, Any]] = {}
        self._lock = threading.RLock()
        self._wire = WireServer(self._route, decode=_form)
        self.base_url = self._wire.origin

    def __enter__(self) -> FakeStripe:
        self._wire.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._wire.__exit__(*exc)

    @property
    def received(self) -> list[Received]:
        return self._wire.received

    # --- the wire ---------------------------------------------------------------------------

    def _route(self, req: Received, ex: Exchange) -> None:
        if self.outage:
            ex.abort()
            return
        if req.header("authorization") != f"Bearer {self.api_key}":
            ex.json(401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided."}})
            return
        url = urlsplit(req.path)
        params = dict(parse_qsl(url.query)) if req.method == "GET" else (req.body or {})
        key = req.header("idempotency-key") if req.method == "POST" else None
        with self._lock:
            if key and (url.path, key) in self._idempotent:
                status, payload = self._idempotent[(url.path, key)]
                ex.json(status, payload, {"idempotent-replayed": "true", "idempotency-key": key})
                return
            try:
                status, payload = 200, self._dispatch(req.method, url.path, params)
            except StripeError as err:
                error = {"type": err.kind, "message": err.message}
                error.update({k: v for k, v in (("code", err.code), ("param", err.param)) if v})
                headers = {} if err.retry is None else {"stripe-should-retry": "true" if err.retry else "false"}
                if err.status < 500 and key:
                    self._idempotent[(url.path, key)] = (err.status, {"error": error})
                ex.json(err.status, {"error": error}, headers)
                return
            if key:
                self._idempotent[(url.path, key)] = (status, payload)
        if self.meter_reply_delay and url.path == "/v1/billing/meter_events":
            ex.wait(self.meter_reply_delay)
        ex.json(status, payload)

    def _dispatch(self, method: str, path: str, p: dict[str, str]) -> Any:
        parts = path.strip("/").split("/")
        match (method, parts):
            case ("POST", ["v1", "customers"]):
                return self._customer(p)
            case ("GET", ["v1", "customers", cid]):
                return self._get(self.customers, cid, "customer")
            case ("POST", ["v1", "checkout", "sessions"]):
                return self._checkout(p)
            case ("GET", ["v1", "checkout", "sessions", sid]):
                return self._get(self.sessions, sid, "checkout.session")
            case ("POST", ["v1", "billing_portal", "sessions"]):
                return self._portal(p)
            case ("GET", ["v1", "subscriptions", sid]):
                return self._get(self.subscriptions, sid, "subscription")
            case ("GET", ["v1", "invoices"]):
                rows = [i for i in self.invoices.values() if i["customer"] == p.get("customer")]
                rows.sort(key=lambda i: -i["created"])
                return {"object": "list", "url": "/v1/invoices", "has_more": False,
                        "data": rows[: int(p.get("limit", 10))]}
            case ("GET", ["v1", "invoices", iid]):
                return self._get(self.invoices, iid, "invoice")
            case ("POST", ["v1", "billing", "meter_events"]):
                return self._meter_event(p)
            case ("GET", ["v1", "billing", "meters", mid, "event_summaries"]):
                return self._summaries(mid, p)
        raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")

    @staticmethod
    def _get(store: dict, oid: str, kind: str) -> dict:
        if oid not in store:
            raise StripeError(404, f"No such {kind}: '{oid}'", code="resource_missing", param="id")
        return store[oid]

    def _customer(self, p: dict[str, str]) -> dict:
        cid = "cus_" + secrets.token_hex(7)
        self.customers[cid] = {"id": cid, "object": "customer", "email": p.get("email"), "name": p.get("name"),
                               "metadata": _nested(p, "metadata"), "created": int(time.time()), "livemode": False}
        return self.customers[cid]

    def _checkout(self, p: dict[str, str]) -> dict:
        if p.get("mode") != "subscription":
            raise StripeError(400, "This test fake only knows subscription mode.", param="mode")
        customer = p.get("customer")
        if customer not in self.customers:
            raise StripeError(400, f"No such customer: '{customer}'", code="resource_missing", param="customer")
        items = []
        for i in range(10):
            price = p.get(f"line_items[{i}][price]")
            if price is None:
                break
            if price not in PRICES:
                raise StripeError(400, f"No such price: '{price}'", code="resource_missing",
                                  param=f"line_items[{i}][price]")
            items.append({"price": price, "quantity": p.get(f"line_items[{i}][quantity]")})
        if not items:
            raise StripeError(400, "Missing required param: line_items.", code="parameter_missing", param="line_items")
        sid = "cs_test_" + secrets.token_hex(12)
        self.sessions[sid] = {
            "id": sid, "object": "checkout.session", "mode": "subscription", "status": "open",
            "payment_status": "unpaid", "customer": customer, "subscription": None,
            "client_reference_id": p.get("client_reference_id"), "metadata": _nested(p, "metadata"),
            "success_url": p.get("success_url"), "cancel_url": p.get("cancel_url"),
            "url": f"{self.base_url}/c/pay/{sid}", "line_items_sent": items, "created": int(time.time()),
            "subscription_metadata": {k[len("subscription_data[metadata]["):-1]: v for k, v in p.items()
                                      if k.startswith("subscription_data[metadata][")},
        }
        return self.sessions[sid]

    def _portal(self, p: dict[str, str]) -> dict:
        customer = p.get("customer")
        if customer not in self.customers:
            raise StripeError(400, f"No such customer: '{customer}'", code="resource_missing", param="customer")
        pid = "bps_" + secrets.token_hex(8)
        self.portal_sessions[pid] = {
            "id": pid, "object": "billing_portal.session", "customer": customer, "return_url": p.get("return_url"),
            "flow": p.get("flow_data[type]"), "url": f"{self.base_url}/p/session/{secrets.token_urlsafe(16)}",
            "created": int(time.time()), "livemode": False,
        }
        return self.portal_sessions[pid]

    def _meter_event(self, p: dict[str, str]) -> dict:
        identifier = p.get("identifier") or "auto_" + secrets.token_hex(8)
        if identifier in self.meter_events:
            self.duplicates_refused += 1
            raise StripeError(400, f"An event already exists with identifier {identifier}.", retry=False)
        if p.get("event_name") != METER_EVENT_NAME:
            raise StripeError(400, f"No active meter found for event_name {p.get('event_name')}.",
                              param="event_name")
        now = int(time.time())
        ts = int(p.get("timestamp", now))
        if ts < now - MAX_EVENT_AGE or ts > now + 300:
            raise StripeError(400, "Timestamp must be within the past 35 calendar days or up to 5 minutes in the "
                              "future.", param="timestamp")
        payload = _nested(p, "payload")
        if payload.get("stripe_customer_id") not in self.customers:
            raise StripeError(400, "No customer found for payload[stripe_customer_id].", param="payload")
        if not payload.get("value", "").lstrip("-").isdigit():
            raise StripeError(400, "payload[value] must be a whole number.", param="payload[value]")
        event = {"object": "billing.meter_event", "event_name": p["event_name"], "identifier": identifier,
                 "payload": payload, "timestamp": ts, "created": now, "livemode": False}
        self.meter_events[identifier] = event
        return event

    def _summaries(self, meter_id: str, p: dict[str, str]) -> dict:
        if meter_id != METER_ID:
            raise StripeError(404, f"No such billing meter: '{meter_id}'", code="resource_missing", param="id")
        start, end = int(p["start_time"]), int(p["end_time"])
        total = sum(int(e["payload"]["value"]) for e in self.meter_events.values()
                    if e["payload"]["stripe_customer_id"] == p.get("customer") and start <= e["timestamp"] < end)
        return {"object": "list", "url": f"/v1/billing/meters/{meter_id}/event_summaries", "has_more": False,
                "data": [{"id": "mtrusg_" + secrets.token_hex(6), "object": "billing.meter_event_summary",
                          "aggregated_value": float(total), "start_time": start, "end_time": end,
                          "meter": meter_id, "livemode": False}]}

    # --- what happens at Stripe's side: each returns the event Stripe would send ---------------

    def event(self, type_: str, obj: dict, *, created: int | None = None) -> dict:
        return {"id": "evt_" + secrets.token_hex(12), "object": "event", "api_version": "2026-10-28.endive",
                "created": created or int(time.time()), "type": type_, "livemode": False,
                "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
                "data": {"object": json.loads(json.dumps(obj))}}

    def complete_checkout(self, session_id: str, *, status: str = "active") -> list[dict]:
        """The customer paid: a subscription on the session's prices and a paid first invoice."""
        with self._lock:
            session = self.sessions[session_id]
            sub_id = "sub_" + secrets.token_hex(10)
            now = int(time.time())
            self.subscriptions[sub_id] = {
                "id": sub_id, "object": "subscription", "customer": session["customer"], "status": status,
                "cancel_at_period_end": False, "created": now, "metadata": session["subscription_metadata"],
                "items": {"object": "list", "data": [
                    {"id": "si_" + secrets.token_hex(6), "object": "subscription_item",
                     "price": {"id": item["price"], "object": "price"}, "current_period_start": now,
                     "current_period_end": now + 30 * 86400} for item in session["line_items_sent"]]},
            }
            session.update(status="complete", payment_status="paid", subscription=sub_id)
            invoice = self._invoice(sub_id, "paid", 2900)
            sub = self.subscriptions[sub_id]
            return [self.event("checkout.session.completed", session),
                    self.event("customer.subscription.created", sub),
                    self.event("invoice.paid", invoice)]

    def _invoice(self, sub_id: str, status: str, amount: int) -> dict:
        sub = self.subscriptions[sub_id]
        iid = "in_" + secrets.token_hex(10)
        now = int(time.time())
        self.invoices[iid] = {
            "id": iid, "object": "invoice", "customer": sub["customer"], "status": status,
            "number": f"FAKE-{len(self.invoices) + 1:04d}", "currency": "usd", "amount_due": amount,
            "amount_paid": amount if status == "paid" else 0, "total": amount, "created": now + len(self.invoices),
            "period_start": now, "period_end": now + 30 * 86400,
            "hosted_invoice_url": f"{self.base_url}/i/{iid}", "invoice_pdf": f"{self.base_url}/i/{iid}/pdf",
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub_id}},
        }
        return self.invoices[iid]

    def fail_payment(self, sub_id: str) -> list[dict]:
        """A renewal's card was declined: an open invoice and the subscription past due."""
        with self._lock:
            invoice = self._invoice(sub_id, "open", 2900)
            self.subscriptions[sub_id]["status"] = "past_due"
            return [self.event("invoice.payment_failed", invoice),
                    self.event("customer.subscription.updated", self.subscriptions[sub_id])]

    def pay_invoice(self, invoice_id: str) -> list[dict]:
        with self._lock:
            invoice = self.invoices[invoice_id]
            invoice.update(status="paid", amount_paid=invoice["amount_due"])
            sub_id = invoice["parent"]["subscription_details"]["subscription"]
            self.subscriptions[sub_id]["status"] = "active"
            return [self.event("invoice.paid", invoice),
                    self.event("customer.subscription.updated", self.subscriptions[sub_id])]

    def change_price(self, sub_id: str, base: str, usage: str | None) -> dict:
        with self._lock:
            sub = self.subscriptions[sub_id]
            now = int(time.time())
            sub["items"]["data"] = [
                {"id": "si_" + secrets.token_hex(6), "object": "subscription_item",
                 "price": {"id": price, "object": "price"}, "current_period_start": now,
                 "current_period_end": now + 30 * 86400} for price in (base, usage) if price]
            return self.event("customer.subscription.updated", sub)

    def cancel(self, sub_id: str) -> dict:
        with self._lock:
            self.subscriptions[sub_id]["status"] = "canceled"
            return self.event("customer.subscription.deleted", self.subscriptions[sub_id])
