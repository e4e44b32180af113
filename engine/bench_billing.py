"""What metered billing adds to a ledger write, and how fast the outbox drains (``--rows``).

Writes ``--rows`` ledger rows the way the generation path's record step does (one transaction,
the plan hook inside it) twice: self-hosted (billing off: no outbox) and on a Pro workspace that
bills usage (one outbox row each). ``extra_us_per_row`` is the difference per write. Then
drains the outbox to the fake Stripe from ``tests/fakes`` (on 127.0.0.1, the real StripeClient)
and checks every row reached its meter exactly once. SQLite on a fresh temporary file;
PostgreSQL on a fresh schema of ``METERBOOK_TEST_POSTGRES_URL`` when it is set.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal


def add_arguments(parser) -> None:
    parser.add_argument("--rows", type=int, default=2000)


def _writes(workspace_id: int, rows: int) -> float:
    from engine import db, guards, usage

    began = time.perf_counter()
    for n in range(rows):
        cost = Decimal(1000 + n) / Decimal(10**7)
        with db.transaction() as s:
            entry = usage.record(s, workspace_id=workspace_id, provider="openai", model="gpt-4o-mini", cost=cost)
            guards.plan.record(s, workspace_id, entry.id, cost, entry.created_at)
    return (time.perf_counter() - began) / rows * 1e6


def _run_on(url: str | None, rows: int) -> dict:
    from engine import accounts, db, migrate
    from engine.billing import limits, meters, stripe_api
    from engine.billing.models import BillingAccount
    from engine.bench import restore_env, scratch_database
    from engine.config import get_settings
    from tests.fakes.stripe_server import METER_ID, SECRET_KEY, FakeStripe

    env = {"METERBOOK_STRIPE_SECRET_KEY": SECRET_KEY, "METERBOOK_STRIPE_PRICE_PRO": "price_pro",
           "METERBOOK_STRIPE_PRICE_PRO_USAGE": "price_pro_usage", "METERBOOK_STRIPE_METER_ID": METER_ID,
           "METERBOOK_STRIPE_MAX_NETWORK_RETRIES": "0"}
    saved = {k: os.environ.get(k) for k in (*env, "METERBOOK_STRIPE_API_BASE")}

    def settings_changed() -> None:
        get_settings.cache_clear()
        stripe_api._client.cache_clear()
        limits.forget()

    with scratch_database(url) as engine, FakeStripe() as fake:
        migrate.upgrade(engine)
        db.use_engine(engine)
        try:
            user, ws = accounts.create_first_owner("bench@meterbook.local", "Bench", "correct horse battery staple",
                                                   "Bench")
            for k in env:
                os.environ.pop(k, None)
            settings_changed()
            _writes(ws.id, 100)  # warm: connections, statement caches
            self_hosted = _writes(ws.id, rows)
            os.environ.update(env, METERBOOK_STRIPE_API_BASE=fake.base_url)
            settings_changed()
            customer = fake._customer({"metadata[workspace_id]": str(ws.id)})["id"]
            with db.transaction() as s:
                s.add(BillingAccount(workspace_id=ws.id, stripe_customer_id=customer, plan="pro", status="active"))
            billed = _writes(ws.id, rows)
            began = time.perf_counter()
            result = meters.drain()
            drain_s = time.perf_counter() - began
            once = result.sent == rows and len(fake.meter_events) == rows and meters.pending_count() == 0
            return {"self_hosted_us": round(self_hosted), "billed_us": round(billed),
                    "extra_us": round(billed - self_hosted), "drain_per_s": round(rows / drain_s), "once": once}
        finally:
            db.use_engine(None)
            restore_env(saved)
            settings_changed()


def run(args) -> dict:
    runs = {"sqlite": _run_on(None, args.rows)}
    postgres = os.environ.get("METERBOOK_TEST_POSTGRES_URL")
    if postgres:
        runs["postgres"] = _run_on(postgres, args.rows)
    out = {"bench": "billing", "rows": args.rows, "billed_exactly_once": all(r["once"] for r in runs.values())}
    for backend, r in runs.items():
        out[f"ledger_write_us_self_hosted_{backend}"] = r["self_hosted_us"]
        out[f"ledger_write_us_billed_{backend}"] = r["billed_us"]
        out[f"extra_us_per_row_{backend}"] = r["extra_us"]
        out[f"drain_events_per_s_{backend}"] = r["drain_per_s"]
    return out
