"""Billing: plans and their limits, Stripe checkout, portal, webhooks, meter events and invoices.

    plans.py       data/plans.yaml and the self-hosted plan (billing off: no Stripe key)
    models.py      billing tables
    stripe_api.py  the one StripeClient, idempotency keys from our own rows
    accounts.py    customers, checkout and portal sessions, invoices (the Billing page's service)
    webhooks.py    handle_webhook(payload, signature): verify, process once, act on current state
    meters.py      the meter-event outbox: enqueue with the ledger row, drain, reconcile
    limits.py      the effective plan of a workspace and every limit check

Importing ``engine.billing.limits`` installs the plan hook into the generation path.
"""
